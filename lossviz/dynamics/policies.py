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
    With ``positional=False`` every position shares one table (a bigram model: the logits depend on
    the previous token only), so a token's log-prob moves the same way wherever it sits.
    """

    def __init__(self, vocab: int, max_len: int, generator: torch.Generator, scale: float = 1.0, positional: bool = True):
        super().__init__()
        self.vocab, self.max_len, self.positional = vocab, max_len, positional
        table = scale * torch.randn(max_len if positional else 1, vocab + 1, vocab, generator=generator, dtype=DTYPE)
        self.table = nn.Parameter(table)

    @torch.no_grad()
    def sample(self, batch: int, generator: torch.Generator):
        """(tokens, mask): tokens (B, T) with 0 after the stop; mask 1 on generated tokens, the stop included."""
        tokens = torch.zeros(batch, self.max_len, dtype=torch.long)
        mask = torch.zeros(batch, self.max_len, dtype=DTYPE)
        previous = torch.full((batch,), self.vocab, dtype=torch.long)
        alive = torch.ones(batch, dtype=torch.bool)
        for t in range(self.max_len):
            probs = torch.softmax(self.table[t if self.positional else 0, previous], dim=-1)
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
        if not self.positional:
            positions = torch.zeros_like(positions)
        return positions, previous

    def state_log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """log π(·|state) at every position, shape (B, T, V)."""
        positions, previous = self.states(tokens)
        return torch.log_softmax(self.table[positions, previous], dim=-1)

    def token_log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """log π(token_t | state_t), shape (B, T) (padding positions hold finite values; mask them)."""
        return self.state_log_probs(tokens).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


class AnswerLengthPolicy(nn.Module):
    """A tiny autoregressive policy whose answer and whose length are separate parameters.

    Tokens: 0 stops, 1 is the correct answer, 2 a wrong answer, 3 a filler token (the "reasoning").
    Position 0 holds the answer, drawn from ``softmax(answer_logits)`` (a buffer: the policy cannot
    learn to answer better, so only the lengths move). At positions 1 … T−1 an answer of type a
    (0 correct, 1 wrong) continues with a filler token with probability ``σ(length_logits[a])`` and
    stops otherwise; a sequence that has not stopped ends after T tokens. The length L counts every
    generated token (the answer, the fillers and the stop), so L ∈ {2, …, T}.
    """

    STOP, CORRECT, WRONG, FILLER = 0, 1, 2, 3

    def __init__(self, p_correct: float, length_logit: float, max_len: int):
        super().__init__()
        p = torch.tensor([p_correct, 1.0 - p_correct], dtype=DTYPE)
        self.register_buffer("answer_logits", p.log())
        self.length_logits = nn.Parameter(torch.full((2,), float(length_logit), dtype=DTYPE))
        self.max_len = int(max_len)

    @torch.no_grad()
    def sample(self, batch: int, generator: torch.Generator):
        """(tokens, mask, wrong): tokens (B, T), mask 1 on generated tokens, ``wrong`` (B,) bool."""
        T = self.max_len
        wrong = torch.multinomial(self.answer_logits.exp(), batch, replacement=True, generator=generator) == 1
        go_on = torch.sigmoid(self.length_logits)[wrong.long()]  # (B,)
        draws = torch.rand(batch, T - 1, generator=generator, dtype=DTYPE) < go_on.unsqueeze(1)  # True: a filler
        # the first stop: the first False; a sequence with none runs to T tokens
        alive = torch.cumprod(torch.cat([torch.ones(batch, 1, dtype=torch.bool), draws], dim=1).to(torch.int64), dim=1).bool()
        mask = torch.cat([torch.ones(batch, 1, dtype=torch.bool), alive[:, :-1]], dim=1)  # the stop token counts
        tokens = torch.where(alive, torch.full_like(alive, self.FILLER, dtype=torch.long), torch.zeros(batch, T, dtype=torch.long))
        tokens[:, 0] = torch.where(wrong, self.WRONG, self.CORRECT)
        tokens = tokens * mask
        return tokens, mask.to(DTYPE), wrong

    def token_log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """log π(token_t | prefix), shape (B, T); 0 at positions after the end (mask them)."""
        wrong = (tokens[:, 0] == self.WRONG).long()
        # kind of each later position: 0 a filler, 1 the stop, 2 after the end
        later = tokens[:, 1:]
        ended = torch.cumsum((tokens == self.STOP).to(torch.int64), dim=1)[:, :-1] > 0  # a stop before this position
        kind = torch.where(ended, 2, torch.where(later == self.FILLER, 0, 1))
        ell = self.length_logits
        table = torch.stack([nn.functional.logsigmoid(ell), nn.functional.logsigmoid(-ell), torch.zeros_like(ell)], dim=1)
        first = torch.log_softmax(self.answer_logits, dim=-1)[wrong].unsqueeze(1)
        return torch.cat([first, table[wrong.unsqueeze(1), kind]], dim=1)

    def length_outcomes(self, answer: int):
        """Every way an answer of type ``answer`` can end: (lengths L, log p(L-outcome | answer), ∂ log p/∂ℓ_answer).

        Outcome t = 1 … T−1: the stop at position t (L = t + 1, t − 1 fillers); outcome T: no stop (L = T,
        T − 1 fillers). Both of the last two have length T. Float64 tensors of size T each.
        """
        T = self.max_len
        ell = self.length_logits[answer].detach()
        go_on = torch.sigmoid(ell)
        fillers = torch.cat([torch.arange(T - 1, dtype=DTYPE), torch.tensor([T - 1.0], dtype=DTYPE)])
        stops = torch.cat([torch.ones(T - 1, dtype=DTYPE), torch.zeros(1, dtype=DTYPE)])
        log_p = fillers * nn.functional.logsigmoid(ell) + stops * nn.functional.logsigmoid(-ell)
        score = fillers * (1 - go_on) - stops * go_on  # ∂/∂ℓ of log σ(ℓ) is 1 − σ(ℓ), of log σ(−ℓ) is −σ(ℓ)
        lengths = torch.cat([torch.arange(2, T + 1, dtype=DTYPE), torch.tensor([float(T)], dtype=DTYPE)])
        return lengths, log_p, score
