"""The toy policies: small enough for exact quantities, shaped like the real thing where it matters.

- :class:`TabularSoftmax`: one logit per (prompt, response). KL and expectations are exact sums.
- :class:`LogLinear`: ``π(y|x) ∝ exp(θ·φ(x, y))``: responses share the parameters through their
  features, so a step for one response moves every response with similar features.
- :class:`TinyAutoregressive`: next-token logits from a table indexed by (position, previous
  token), a stop token, sequences of different lengths with per-token log-probs and masks.

All run in float64 on the CPU: the simulations compare against closed forms.
"""

from __future__ import annotations

import torch
from torch import nn

DTYPE = torch.float64


class TabularSoftmax(nn.Module):
    """``π(y|x) = softmax(θ_x)_y`` with ``θ`` of shape (prompts, responses), started at the reference."""

    def __init__(self, reference_logits: torch.Tensor):
        super().__init__()
        self.reference_logits = reference_logits.detach().to(DTYPE)
        self.logits = nn.Parameter(self.reference_logits.clone())

    def log_probs(self) -> torch.Tensor:  # (P, K)
        return torch.log_softmax(self.logits, dim=-1)

    def reference_log_probs(self) -> torch.Tensor:
        return torch.log_softmax(self.reference_logits, dim=-1)

    def kl(self) -> float:
        """Exact mean over prompts of KL(π(·|x) ‖ π_ref(·|x))."""
        return exact_kl(self.log_probs(), self.reference_log_probs())


class LogLinear(nn.Module):
    """``π(y|x) ∝ exp(θ·φ(x, y))`` with features φ of shape (prompts, responses, d); θ starts at ``theta_ref``."""

    def __init__(self, features: torch.Tensor, theta_ref: torch.Tensor):
        super().__init__()
        self.features = features.detach().to(DTYPE)
        self.theta_ref = theta_ref.detach().to(DTYPE)
        self.theta = nn.Parameter(self.theta_ref.clone())

    def log_probs(self) -> torch.Tensor:  # (P, K)
        return torch.log_softmax(self.features @ self.theta, dim=-1)

    def reference_log_probs(self) -> torch.Tensor:
        return torch.log_softmax(self.features @ self.theta_ref, dim=-1)

    def mean_features(self) -> torch.Tensor:
        """φ̄(x) = E_π[φ(x, y)], shape (P, d)."""
        return (self.log_probs().exp().unsqueeze(-1) * self.features).sum(dim=1)

    def kl(self) -> float:
        return exact_kl(self.log_probs(), self.reference_log_probs())


def exact_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> float:
    """Σ_y p (log p − log q), averaged over the leading (prompt) axis."""
    with torch.no_grad():
        return float((log_p.exp() * (log_p - log_q)).sum(dim=-1).mean())


class TinyAutoregressive(nn.Module):
    """Token 0 is the stop token; a sequence ends at it or after ``max_len`` tokens.

    The logits of token t come from ``table[t, previous token]`` (index ``vocab`` is the start).
    """

    def __init__(self, vocab: int, max_len: int, generator: torch.Generator, scale: float = 1.0):
        super().__init__()
        self.vocab, self.max_len = vocab, max_len
        table = scale * torch.randn(max_len, vocab + 1, vocab, generator=generator, dtype=DTYPE)
        self.table = nn.Parameter(table)

    @torch.no_grad()
    def sample(self, batch: int, generator: torch.Generator):
        """(tokens, mask): tokens (B, T) with 0 after the stop; mask 1 on generated tokens, the stop included."""
        tokens = torch.zeros(batch, self.max_len, dtype=torch.long)
        mask = torch.zeros(batch, self.max_len, dtype=DTYPE)
        previous = torch.full((batch,), self.vocab, dtype=torch.long)
        alive = torch.ones(batch, dtype=torch.bool)
        for t in range(self.max_len):
            probs = torch.softmax(self.table[t, previous], dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            tokens[:, t] = torch.where(alive, token, torch.zeros_like(token))
            mask[:, t] = alive.to(DTYPE)
            alive = alive & (token != 0)
            previous = token
        return tokens, mask

    def states(self, tokens: torch.Tensor):
        """(position, previous token) index of every position, shape (B, T) each."""
        batch = tokens.shape[0]
        previous = torch.cat([torch.full((batch, 1), self.vocab, dtype=torch.long), tokens[:, :-1]], dim=1)
        positions = torch.arange(self.max_len).expand(batch, -1)
        return positions, previous

    def state_log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """log π(·|state) at every position, shape (B, T, V)."""
        positions, previous = self.states(tokens)
        return torch.log_softmax(self.table[positions, previous], dim=-1)

    def token_log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """log π(token_t | state_t), shape (B, T) (padding positions hold finite values; mask them)."""
        return self.state_log_probs(tokens).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
