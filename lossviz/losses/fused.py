r"""Fused-linear sequence losses: DPO (every ``loss_type``), SimPO, CPO, ORPO, KTO, the PPO/GRPO
family and GKD, from the last hidden states and the ``lm_head`` weight, without the full logits.

**One mechanism for every loss.** A sequence-level loss sees the model only through the
log-probability of each label token,

.. math::

    \ell_t = z_{t, y_{t+1}} - \log\sum_v e^{z_{t,v}}, \qquad z_t = W h_t + b,

(position :math:`t` predicts the label at :math:`t+1`, labels ``-100`` are ignored and give
:math:`\ell_t = 0`). With :math:`g_t = \partial\mathcal{L}/\partial\ell_t` from the loss's own
module, the chain rule through the head is

.. math::

    \frac{\partial\mathcal{L}}{\partial z_t} = g_t\,(e_{y_{t+1}} - p_t), \quad
    \frac{\partial\mathcal{L}}{\partial h_t} = \Big(\frac{\partial\mathcal{L}}{\partial z_t}\Big) W, \quad
    \frac{\partial\mathcal{L}}{\partial W} = \sum_t \Big(\frac{\partial\mathcal{L}}{\partial z_t}\Big)^{\!\top} h_t, \quad
    \frac{\partial\mathcal{L}}{\partial b} = \sum_t \frac{\partial\mathcal{L}}{\partial z_t},

with :math:`p_t = \operatorname{softmax}(z_t)`. Only ``chunk`` rows of logits exist at a time. The
classes below compute the per-token log-probabilities this way and hand them to the production
module of the loss (:class:`DPOLoss`, :class:`PolicyLoss`, ...), whatever its options, so the
fused loss *is* that module's loss; only the head is fused.

**Two schedules (``mode``).**

- ``"recompute"`` (two passes): the forward pass keeps per token only :math:`\log\sum e^{z}`; the
  backward pass receives :math:`g` and recomputes each chunk's logits. Chunks are any rows of
  tokens, so memory is ``O(chunk × vocab)`` however long a sequence is, and it works for any loss.
  Cost: four matmuls of the head per token (one forward, three backward) instead of three.
- ``"single"`` (one pass, as Liger-Kernel's chunked losses): chunks are whole sequences (whole
  pairs for DPO-like losses); the module runs on each chunk's sequences, :math:`g` of the chunk
  is known at once, and the head's gradients are accumulated during the forward pass (three
  matmuls). This needs the loss to be a weighted sum of per-chunk losses: a mean over pairs
  (every DPO ``loss_type``, SimPO, CPO, ORPO) or over examples (KTO, whose reference point is a
  detached mean of a separate batch); the chunk's loss is weighted by its share of the batch.
  :class:`FusedLinearPolicyLoss` (chunks of whole sequences) calls :class:`PolicyLoss` on the
  whole batch with the other sequences held constant, since its aggregations use batch-wide counts.
  Memory: a chunk holds at least one whole sequence group (2 × T rows for a pair).
- ``"auto"`` (default): ``"single"`` when the loss allows it and one sequence group fits the
  memory budget, else ``"recompute"``.

**Memory budget and chunk size.** ``chunk_size="auto"`` (default) takes the largest chunk whose
``[rows, vocab]`` temporaries fit the budget: ``rows = budget // (k · vocab · itemsize)`` in the
compute dtype, with ``k`` the number of such temporaries alive at once: 1 for the label
log-probabilities (the logits chunk is exponentiated and turned into its own gradient in place;
1.5 for half inputs, whose half matmul output lives beside the float32 chunk) and
:data:`TOKEN_LOSS_TEMPORARIES` (8) for GKD. An ``int`` gives the rows (recompute) or sequence
groups (single) per chunk.

``memory_budget="auto"`` (default) sizes the chunks with :data:`DEFAULT_MEMORY_BUDGET` (64 MiB:
524 rows at vocabulary 32000 in float32) but lets one chunk grow to the size of the ``lm_head``
weight (``V × H`` entries), whose gradient exists anyway, in two places: the single-pass schedule
is chosen when one sequence group (a pair: ``2T`` rows) has at most ``H`` rows, i.e. its logits
chunk is no larger than the weight; and GKD's chunk temporaries may take the weight's size. The
extra memory is then at most about twice the weight's gradient plus the hidden states' gradient,
and the time is that of the single pass (three head matmuls per token, as the full-logits form)
instead of the recompute's four. An ``int`` budget (bytes) is a hard ceiling for both.

On CPU the head matmuls take nearly all the time and their speed hardly depends on the chunk's
rows (``benchmarks/bench_fused.py``, 1 pair × 1024 tokens per response, hidden 2048,
vocabulary 32000: 262-row chunks ran each full pass of the head in 2.8 s, 2048-row chunks in
3.1 s, under torch.profiler on the shared 2-core machine), so a small recompute chunk costs
little beyond its extra matmul.

The hidden states' gradient (the size of ``hidden``) and the weight's gradient (the size of the
weight) are allocated in full, as with any autograd loss; the reference model's log-probabilities
are computed chunk by chunk under ``torch.no_grad``.

Source: the fused linear cross-entropy and the chunked losses of Liger-Kernel
(docs/references.md#liger), which chunk over whole pairs and compute the gradients during the
forward pass; here both schedules are written in plain torch and run on CPU and CUDA alike.
Measured against Liger on CPU by ``benchmarks/bench_fused.py``.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import IGNORE_INDEX, check_class_labels, check_tensor, compute_dtype
from .chunked import _check_hidden, _linear_backward, _save_linear_grads, shifted_targets

DEFAULT_MEMORY_BUDGET = 64 * 2**20  # bytes of [chunk, vocab] temporaries: 524 rows at vocab 32000 in float32
MODES = ("auto", "single", "recompute")
TOKEN_LOSS_TEMPORARIES = 8  # GKD's chunk: student and teacher log-probabilities, probabilities, log m, and transients


# ----------------------------------------------------------------------------- chunk size


def label_temporaries(dtype: torch.dtype) -> float:
    """``[rows, vocab]`` compute-dtype tensors alive per chunk of label log-probabilities: the logits chunk
    (exponentiated and turned into its gradient in place), plus its half-precision matmul output for half inputs."""
    compute = compute_dtype(torch.empty(0, dtype=dtype))
    if compute == dtype:
        return 1.0
    return 1.0 + torch.finfo(dtype).bits / torch.finfo(compute).bits


def auto_chunk_rows(vocab: int, dtype: torch.dtype, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                    temporaries: Optional[float] = None) -> int:
    """Rows of logits per chunk such that ``temporaries`` ``[rows, vocab]`` compute-dtype tensors fit ``memory_budget``
    bytes (at least 1); ``temporaries`` defaults to :func:`label_temporaries` of ``dtype``."""
    itemsize = torch.finfo(compute_dtype(torch.empty(0, dtype=dtype))).bits // 8
    temporaries = label_temporaries(dtype) if temporaries is None else temporaries
    return max(1, int(int(memory_budget) // (temporaries * vocab * itemsize)))


def _check_options(chunk_size, memory_budget, mode):
    if not (chunk_size == "auto" or (isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size >= 1)):
        raise ValueError(f"chunk_size must be a positive int or 'auto', got {chunk_size!r}")
    if memory_budget != "auto" and (isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget < 1):
        raise ValueError(f"memory_budget must be a positive int (bytes) or 'auto', got {memory_budget!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return chunk_size, memory_budget, mode


# ----------------------------------------------------------------------------- label log-probabilities


def _chunk_logps(z: torch.Tensor, y: torch.Tensor, keep: torch.Tensor):
    r"""(log-probability of the label, logsumexp) per row of one logits chunk; 0 at ignored rows.

    Computed in place: afterwards ``z`` holds :math:`e^{z - \max z}`, which is not used further
    (the callers recompute or rescale it), so no second ``[rows, vocab]`` tensor is made.
    """
    safe_y = torch.where(keep, y, 0)
    picked = z.gather(1, safe_y.unsqueeze(1)).squeeze(1)
    top = z.amax(dim=-1)
    lse = z.sub_(top.unsqueeze(1)).exp_().sum(dim=-1).log_().add_(top)
    return torch.where(keep, picked - lse, 0.0), lse


def _head_grads_of_chunk(z, lse, y, keep, g, h, weight, grad_h, grad_w, grad_b, start, end, scale=None):
    r"""Turn ``z`` into ∂L/∂z = g (e_y - p) in place and accumulate the head's gradients of the chunk.

    ``z`` holds the logits, or (``scale`` given) :math:`e^{z - \max z}` left by :func:`_chunk_logps`,
    with ``scale`` = :math:`e^{\max z - \mathrm{lse}}` per row.
    """
    g = torch.where(keep, g, 0.0)
    if scale is None:
        dz = z.sub_(lse.unsqueeze(1)).exp_().mul_(-g.unsqueeze(1))  # -g p
    else:
        dz = z.mul_((-g * scale).unsqueeze(1))  # -g p
    dz.scatter_add_(1, torch.where(keep, y, 0).unsqueeze(1), g.unsqueeze(1))  # + g e_y
    if grad_h is not None:
        grad_h[start:end] = (dz.to(weight.dtype) @ weight).to(grad_h.dtype)
    if grad_w is not None:
        grad_w.addmm_(dz.t(), h.to(grad_w.dtype))
    if grad_b is not None:
        grad_b.add_(dz.sum(dim=0))


class _LabelLogps(torch.autograd.Function):
    """Per-row log-probability of the target under ``hidden2d @ weight.T + bias``; two passes, token chunks."""

    @staticmethod
    def forward(ctx, hidden2d, weight, bias, targets, rows):
        dtype = compute_dtype(hidden2d)
        keep = targets != IGNORE_INDEX
        out = torch.zeros(hidden2d.shape[0], dtype=dtype, device=hidden2d.device)
        lse = torch.zeros_like(out)
        for start in range(0, hidden2d.shape[0], rows):
            end = start + rows
            z = F.linear(hidden2d[start:end], weight, bias).to(dtype)
            out[start:end], lse[start:end] = _chunk_logps(z, targets[start:end], keep[start:end])
            del z  # before the next chunk is allocated: one chunk alive at a time
        ctx.save_for_backward(hidden2d, weight, bias, targets, lse)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden2d, weight, bias, targets, lse = ctx.saved_tensors
        dtype = lse.dtype
        keep = targets != IGNORE_INDEX
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        want_b = bias is not None and ctx.needs_input_grad[2]
        grad_h = torch.empty_like(hidden2d) if want_h else None
        grad_w = torch.zeros_like(weight, dtype=dtype) if want_w else None
        grad_b = torch.zeros_like(bias, dtype=dtype) if want_b else None
        grad_out = grad_out.to(dtype)
        for start in range(0, hidden2d.shape[0], ctx.rows):
            end = start + ctx.rows
            if not bool(keep[start:end].any()):  # an all-ignored chunk: no gradient, no matmul
                if grad_h is not None:
                    grad_h[start:end] = 0
                continue
            h = hidden2d[start:end]
            z = F.linear(h, weight, bias).to(dtype)
            _head_grads_of_chunk(z, lse[start:end], targets[start:end], keep[start:end], grad_out[start:end],
                                 h, weight, grad_h, grad_w, grad_b, start, end)
            del z
        return (grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                None if grad_b is None else grad_b.to(bias.dtype), None, None)


class _SinglePass(torch.autograd.Function):
    """Σ_k chunk_loss(k, ℓ_k) over chunks of whole sequences; the head's gradients are made during forward.

    ``bounds[k]`` lists the row ranges ``(start, end)`` of chunk ``k`` (e.g. the chosen and the
    rejected rows of a run of pairs); their rows are gathered into one chunk.
    """

    @staticmethod
    def forward(ctx, hidden2d, weight, bias, targets, bounds, chunk_loss):
        dtype = compute_dtype(hidden2d)
        keep_all = targets != IGNORE_INDEX
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        want_b = bias is not None and ctx.needs_input_grad[2]
        grad_h = torch.zeros_like(hidden2d) if want_h else None
        grad_w = torch.zeros_like(weight, dtype=dtype) if want_w else None
        grad_b = torch.zeros_like(bias, dtype=dtype) if want_b else None
        want_any = want_h or want_w or want_b
        total = torch.zeros((), dtype=dtype, device=hidden2d.device)
        for k, ranges in enumerate(bounds):
            gather = (lambda x: x[ranges[0][0]:ranges[0][1]]) if len(ranges) == 1 else (lambda x: torch.cat([x[s:e] for s, e in ranges]))
            h, y, keep = gather(hidden2d), gather(targets), gather(keep_all)
            z = F.linear(h, weight, bias).to(dtype)
            top = z.amax(dim=-1)
            logps, lse = _chunk_logps(z, y, keep)  # z now holds exp(z - top)
            logps.requires_grad_(want_any)
            with torch.enable_grad():
                value = chunk_loss(k, logps)
            if want_any:
                g = torch.autograd.grad(value, logps)[0] if value.requires_grad else torch.zeros_like(logps)
                gh = None if grad_h is None else torch.empty_like(h)
                _head_grads_of_chunk(z, lse, y, keep, g.detach(), h, weight, gh, grad_w, grad_b, 0, h.shape[0],
                                     scale=(top - lse).exp_())
                if grad_h is not None:
                    offset = 0
                    for s, e in ranges:
                        grad_h[s:e] = gh[offset:offset + e - s]
                        offset += e - s
            total += value.detach().to(dtype)
            del z
        _save_linear_grads(ctx, grad_h, grad_w, grad_b, weight, bias)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        return (*_linear_backward(ctx, grad_output), None, None, None)


@torch.no_grad()
def _frozen_logps(hidden2d, weight, bias, targets, rows):
    """Label log-probabilities of a frozen model (the reference), chunk by chunk, no graph."""
    dtype = compute_dtype(hidden2d)
    keep = targets != IGNORE_INDEX
    out = torch.zeros(hidden2d.shape[0], dtype=dtype, device=hidden2d.device)
    for start in range(0, hidden2d.shape[0], rows):
        end = start + rows
        z = F.linear(hidden2d[start:end], weight, bias).to(dtype)
        out[start:end] = _chunk_logps(z, targets[start:end], keep[start:end])[0]
        del z
    return out


def _itemsize(dtype) -> int:
    """Bytes of one element in the compute dtype of ``dtype`` (half inputs are computed in float32)."""
    return torch.finfo(compute_dtype(torch.empty(0, dtype=dtype))).bits // 8


def _check_inputs(hidden, weight, bias, labels, names=("hidden", "weight", "bias", "labels")):
    _check_hidden(hidden, weight, bias, names[:3])
    check_tensor(names[3], labels, floating=False)
    if hidden.dim() != 3 or labels.shape != hidden.shape[:-1]:
        raise ValueError(f"{names[0]} must be (B, T, H) and {names[3]} (B, T); got {tuple(hidden.shape)} and {tuple(labels.shape)}")
    check_class_labels(names[3], labels, weight.shape[0])


def _budget(memory_budget) -> int:
    """The budget that sizes chunks: ``"auto"`` sizes them with :data:`DEFAULT_MEMORY_BUDGET`."""
    return DEFAULT_MEMORY_BUDGET if memory_budget == "auto" else memory_budget


def _rows(chunk_size, memory_budget, vocab, dtype):
    return chunk_size if isinstance(chunk_size, int) else auto_chunk_rows(vocab, dtype, _budget(memory_budget))


def token_logps(hidden, weight, labels, bias=None, *, chunk_size="auto", memory_budget=DEFAULT_MEMORY_BUDGET):
    """Per-token label log-probabilities ``[B, T]`` of ``hidden @ weight.T + bias`` (two-pass, exact gradients).

    Position ``t`` holds ``log p(labels[:, t+1])``; positions whose next label is ``-100`` (and the
    last one) hold 0. The full ``[B·T, V]`` logits never exist.
    """
    _check_options(chunk_size, memory_budget, "recompute")
    _check_inputs(hidden, weight, bias, labels)
    rows = _rows(chunk_size, memory_budget, weight.shape[0], hidden.dtype)
    flat = _LabelLogps.apply(hidden.reshape(-1, hidden.shape[-1]), weight, bias, shifted_targets(labels), rows)
    return flat.view(labels.shape)


def sequence_logps(hidden, weight, labels, bias=None, *, chunk_size="auto", memory_budget=DEFAULT_MEMORY_BUDGET):
    """(summed label log-probability ``[B]``, number of label tokens ``[B]``) of each sequence, memory-lean."""
    per_token = token_logps(hidden, weight, labels, bias, chunk_size=chunk_size, memory_budget=memory_budget)
    return per_token.sum(dim=-1), (labels[:, 1:] != IGNORE_INDEX).sum(dim=-1)


# ----------------------------------------------------------------------------- the engine shared by the classes


class _FusedBase(nn.Module):
    """Common options; subclasses say how the loss groups sequences and how it is weighted per chunk."""

    def __init__(self, chunk_size="auto", memory_budget="auto", mode="auto"):
        super().__init__()
        self.chunk_size, self.memory_budget, self.mode = _check_options(chunk_size, memory_budget, mode)
        self.IGNORE_INDEX = IGNORE_INDEX
        self.last_schedule: Optional[Tuple[str, int]] = None  # (mode, rows or groups per chunk) of the last call

    def _separable(self) -> bool:  # may the loss be summed over chunks of whole groups?
        return True

    def _schedule(self, n_groups: int, group_rows: int, vocab: int, dtype, hidden_size: int) -> Tuple[str, int]:
        """("single", groups per chunk) or ("recompute", rows per chunk)."""
        mode = self.mode
        if mode == "single" and not self._separable():
            raise ValueError(f"mode='single' needs a loss that is a sum over chunks of sequences; {self._why_not_separable()}")
        budget_rows = auto_chunk_rows(vocab, dtype, _budget(self.memory_budget))
        if mode == "auto":
            admit_rows = budget_rows
            if self.memory_budget == "auto":  # one group's logits chunk may be as large as the weight (its gradient exists anyway)
                admit_rows = max(budget_rows, auto_chunk_rows(vocab, dtype, hidden_size * vocab * _itemsize(dtype)))
            mode = "single" if self._separable() and group_rows <= admit_rows else "recompute"
        if mode == "single":
            groups = self.chunk_size if isinstance(self.chunk_size, int) else max(1, budget_rows // max(group_rows, 1))
            return "single", min(groups, n_groups)
        return "recompute", self.chunk_size if isinstance(self.chunk_size, int) else budget_rows

    def _why_not_separable(self) -> str:
        return "this loss couples its sequences"

    def _run(self, hidden, weight, bias, labels, n_groups: int, group_rows: int, seq_ranges: Callable,
             loss_of: Callable, chunk_weight: Callable):
        """The recompute schedule: ``loss_of(all per-token log-probs [B, T], arange(B))``; the single-pass one:
        Σ over chunks of groups ``chunk_weight(seqs) · loss_of(their per-token log-probs, seqs)``.

        ``seq_ranges(g0, g1)`` lists the (first, end) sequence ranges of groups ``g0..g1-1``;
        ``loss_of`` returns (loss, extras). Returns (loss, extras) or (loss, [extras per chunk], [seqs per chunk]).
        """
        B, T, H = hidden.shape
        schedule = self._schedule(n_groups, group_rows, weight.shape[0], hidden.dtype, weight.shape[1])
        self.last_schedule = schedule
        targets = shifted_targets(labels)
        if schedule[0] == "recompute":
            per_token = _LabelLogps.apply(hidden.reshape(-1, H), weight, bias, targets, schedule[1]).view(B, T)
            return loss_of(per_token, torch.arange(B, device=hidden.device))
        bounds, seq_sets = [], []
        for g0 in range(0, n_groups, schedule[1]):
            ranges = seq_ranges(g0, min(g0 + schedule[1], n_groups))
            bounds.append([(a * T, b * T) for a, b in ranges])
            seq_sets.append(torch.cat([torch.arange(a, b, device=hidden.device) for a, b in ranges]))
        extras: List = [None] * len(bounds)

        def chunk_loss(k, logps):
            loss, extra = loss_of(logps.view(-1, T), seq_sets[k])
            extras[k] = extra
            return loss * chunk_weight(seq_sets[k])

        total = _SinglePass.apply(hidden.reshape(-1, H), weight, bias, targets, bounds, chunk_loss)
        return total, extras, seq_sets


def _check_pairs(hidden, labels, ref_hidden, name="hidden"):
    if hidden.shape[0] % 2:
        raise ValueError(f"{name} must hold the chosen sequences then the rejected ones (an even batch), got {hidden.shape[0]} rows")
    if ref_hidden is not None and ref_hidden.shape[:-1] != hidden.shape[:-1]:
        raise ValueError(f"ref_hidden must match hidden's (B, T) {tuple(hidden.shape[:-1])}, got {tuple(ref_hidden.shape[:-1])}")


# ----------------------------------------------------------------------------- pairwise preference losses


class _FusedPairwise(_FusedBase):
    """Common forward of DPO, SimPO, CPO and ORPO: ``hidden`` is ``[2B, T, H]``, chosen rows first."""

    uses_reference = False
    loss_cls = None

    def __init__(self, *args, chunk_size="auto", memory_budget="auto", mode="auto", **kwargs):
        super().__init__(chunk_size, memory_budget, mode)
        self.loss = self.loss_cls(*args, **kwargs)

    def _call(self, pc, pr, rc, rr, lc, lr):  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def _pairwise(self, hidden, weight, labels, bias, ref_logps):
        n = hidden.shape[0] // 2
        lengths = (labels[:, 1:] != IGNORE_INDEX).sum(dim=-1).to(compute_dtype(hidden))

        def loss_of(per_token, seqs):  # seqs: chosen ones then their rejected partners (by pair order)
            seq = per_token.sum(dim=-1)
            idx = seqs.to(hidden.device)
            half = seq.shape[0] // 2
            pair_ids = idx[:half]
            refs = (None, None) if ref_logps is None else (ref_logps[pair_ids], ref_logps[pair_ids + n])
            out = self._call(seq[:half], seq[half:], *refs, lengths[pair_ids], lengths[pair_ids + n])
            return out[0], tuple(x for x in out[1:])

        T = labels.shape[1]
        result = self._run(hidden, weight, bias, labels, n, 2 * T, lambda g0, g1: [(g0, g1), (n + g0, n + g1)],
                           loss_of, lambda seqs: seqs.shape[0] / (2.0 * n))
        if len(result) == 2:
            loss, extra = result
            return (loss, *extra)
        total, extras, _ = result  # chunks are runs of pairs in batch order
        return (total, *(torch.cat([e[j] for e in extras]) for j in range(len(extras[0]))))

    def _reference(self, ref_hidden, ref_weight, ref_bias, labels, n_groups, group_rows):
        """Summed label log-probabilities of the frozen reference, in chunks of the policy's rows (no graph)."""
        _check_hidden(ref_hidden, ref_weight, ref_bias, ("ref_hidden", "ref_weight", "ref_bias"))
        check_class_labels("labels", labels, ref_weight.shape[0])
        kind, size = self._schedule(n_groups, group_rows, ref_weight.shape[0], ref_hidden.dtype, ref_weight.shape[1])
        rows = size * group_rows if kind == "single" else size
        flat = _frozen_logps(ref_hidden.detach().reshape(-1, ref_hidden.shape[-1]), ref_weight.detach(),
                             None if ref_bias is None else ref_bias.detach(), shifted_targets(labels), rows)
        return flat.view(labels.shape).sum(dim=-1)


class FusedLinearDPOLoss(_FusedPairwise):
    r""":class:`DPOLoss` of ``hidden @ weight.T (+ bias)`` against a frozen reference head, without the full logits.

    ``FusedLinearDPOLoss(*dpo_args, chunk_size="auto", memory_budget="auto", mode="auto", **dpo_kwargs)``
    builds ``DPOLoss(*dpo_args, **dpo_kwargs)`` (every ``loss_type``, label smoothing, RPO's
    ``nll_loss_coef``).

    ``forward(hidden[2B, T, H], weight[V, H], labels[2B, T], ref_hidden[2B, T, H'], ref_weight[V, H'],
    bias=None, ref_bias=None)``: rows ``0..B-1`` are the chosen responses, ``B..2B-1`` the rejected
    ones (as concatenated by OpenRLHF and Liger); labels are the token ids with ``-100`` on the
    prompt and padding, position ``t`` predicting ``labels[:, t+1]``. Returns what ``DPOLoss``
    returns for the summed log-probabilities (and the response lengths, for the length-normalised
    types).
    """

    uses_reference = True

    @property
    def loss_cls(self):
        from .preference import DPOLoss

        return DPOLoss

    def _call(self, pc, pr, rc, rr, lc, lr):
        loss = self.loss
        types = getattr(loss, "loss_types", ())
        needs_lengths = (getattr(loss, "length_normalized", False) or getattr(loss, "nll_loss_coef", 0.0) > 0
                         or "sigmoid_norm" in types or "sft" in types)
        if needs_lengths:  # only then: a response without label tokens has no length to divide by
            return loss(pc, pr, rc, rr, chosen_lengths=lc, rejected_lengths=lr)
        return loss(pc, pr, rc, rr)

    def forward(self, hidden, weight, labels, ref_hidden, ref_weight, bias=None, ref_bias=None):
        _check_inputs(hidden, weight, bias, labels)
        _check_pairs(hidden, labels, ref_hidden)
        ref = self._reference(ref_hidden, ref_weight, ref_bias, labels, hidden.shape[0] // 2, 2 * labels.shape[1])
        return self._pairwise(hidden, weight, labels, bias, ref)


class _FusedReferenceFree(_FusedPairwise):
    """``forward(hidden[2B, T, H], weight[V, H], labels[2B, T], bias=None)``: chosen rows first."""

    def forward(self, hidden, weight, labels, bias=None):
        _check_inputs(hidden, weight, bias, labels)
        _check_pairs(hidden, labels, None)
        return self._pairwise(hidden, weight, labels, bias, None)


class FusedLinearSimPOLoss(_FusedReferenceFree):
    """:class:`SimPOLoss` (summed log-probabilities and lengths) of ``hidden @ weight.T (+ bias)``; no reference."""

    @property
    def loss_cls(self):
        from . import SimPOLoss

        return SimPOLoss

    def _call(self, pc, pr, rc, rr, lc, lr):
        return self.loss(pc, pr, lc, lr)


class FusedLinearCPOLoss(_FusedReferenceFree):
    """:class:`CPOLoss` of ``hidden @ weight.T (+ bias)``; no reference."""

    @property
    def loss_cls(self):
        from . import CPOLoss

        return CPOLoss

    def _call(self, pc, pr, rc, rr, lc, lr):
        return self.loss(pc, pr, chosen_lengths=lc)


class FusedLinearORPOLoss(_FusedReferenceFree):
    """:class:`ORPOLoss` of ``hidden @ weight.T (+ bias)``; no reference."""

    @property
    def loss_cls(self):
        from . import ORPOLoss

        return ORPOLoss

    def _call(self, pc, pr, rc, rr, lc, lr):
        return self.loss(pc, pr, lc, lr)


# ----------------------------------------------------------------------------- KTO


class FusedLinearKTOLoss(_FusedBase):
    r""":class:`KTOLoss` of ``hidden @ weight.T (+ bias)`` against a frozen reference head.

    ``FusedLinearKTOLoss(*kto_args, chunk_size=..., memory_budget=..., mode=..., **kto_kwargs)``.
    ``forward(hidden[B, T, H], weight, labels[B, T], desirable[B] (bool), ref_hidden, ref_weight,
    policy_KL_logps, reference_KL_logps, bias=None, ref_bias=None)``: ``desirable`` marks the
    desirable examples; either side may be empty. The KL batch enters KTO only through a detached
    mean, so its summed log-probabilities are given as tensors (e.g. from :func:`sequence_logps`
    under ``torch.no_grad``); ``loss_type="apo_zero_unpaired"`` needs none. Returns ``KTOLoss``'s outputs, rewards in the order of the batch.
    """

    def __init__(self, *args, chunk_size="auto", memory_budget="auto", mode="auto", **kwargs):
        super().__init__(chunk_size, memory_budget, mode)
        from .preference import KTOLoss

        self.loss = KTOLoss(*args, **kwargs)

    def forward(self, hidden, weight, labels, desirable, ref_hidden, ref_weight, policy_KL_logps=None, reference_KL_logps=None,
                bias=None, ref_bias=None):
        _check_inputs(hidden, weight, bias, labels)
        check_tensor("desirable", desirable, floating=False)
        if desirable.dtype != torch.bool or desirable.shape != hidden.shape[:1]:
            raise ValueError(f"desirable must be a bool tensor of shape ({hidden.shape[0]},), got {desirable.dtype} {tuple(desirable.shape)}")
        ref = _FusedPairwise._reference(self, ref_hidden, ref_weight, ref_bias, labels, hidden.shape[0], labels.shape[1])
        B = hidden.shape[0]
        pkl = None if policy_KL_logps is None else policy_KL_logps.detach()
        rkl = None if reference_KL_logps is None else reference_KL_logps.detach()

        def loss_of(per_token, seqs):
            seq = per_token.sum(dim=-1)
            d = desirable[seqs]
            out = self.loss(seq[d], seq[~d], pkl, ref[seqs][d], ref[seqs][~d], rkl)
            return out[0], (out[1], out[2], out[3])

        result = self._run(hidden, weight, bias, labels, B, labels.shape[1], lambda g0, g1: [(g0, g1)],
                           loss_of, lambda seqs: seqs.shape[0] / float(B))
        if len(result) == 2:
            loss, (cr, rr, kl) = result
            return loss, cr, rr, kl
        total, extras, _ = result  # chunks are runs of the batch in order: concatenation keeps it
        return total, torch.cat([e[0] for e in extras]), torch.cat([e[1] for e in extras]), extras[0][2]


# ----------------------------------------------------------------------------- PPO / GRPO family


class FusedLinearPolicyLoss(_FusedBase):
    r""":class:`PolicyLoss` (any ``policy_loss_type`` and ``loss_agg_mode``) of ``hidden @ weight.T (+ bias)``.

    ``FusedLinearPolicyLoss(*policy_args, kl_coef=0.0, kl_estimator="k3", chunk_size=..., memory_budget=...,
    mode=..., **policy_kwargs)``.
    ``forward(hidden[B, T, H], weight, labels[B, T], old_log_probs[B, T], advantages, bias=None, *,
    ref_hidden=None, ref_weight=None, ref_bias=None, return_metrics=False)``: ``old_log_probs`` and
    ``advantages`` are aligned with the log-probabilities, i.e. position ``t`` belongs to the token
    ``labels[:, t+1]`` (the last column is unused); the action mask is ``labels[:, 1:] != -100``.
    Returns ``PolicyLoss``'s output. Note that ``loss_scale_factor``'s default (the padded length)
    is then ``T``, the length of ``labels``.

    With ``kl_coef = β > 0`` and a frozen reference head (GRPO's KL term), the loss adds
    :math:`\beta\,\mathrm{agg}(k(\ell - \ell^{\mathrm{ref}}))` with the estimator ``kl_estimator``
    of :func:`compute_approx_kl`, aggregated like the policy term (every aggregation is a
    weighted sum over tokens, so this equals adding β·k per token before aggregating, as GRPO
    does); the reference's log-probabilities are computed without a graph.

    Every aggregation mode is a sum over sequences of terms that depend on that sequence's
    log-probabilities only (the batch-wide counts come from the mask), so the single-pass schedule
    applies too: a chunk of whole sequences gets the gradient of the full ``PolicyLoss`` call with
    the other sequences' log-probabilities held at ``old_log_probs`` (constants), and the value
    and metrics come from one last call on all the log-probabilities, without a graph.
    """

    def __init__(self, *args, kl_coef: float = 0.0, kl_estimator: str = "k3", chunk_size="auto",
                 memory_budget="auto", mode="auto", **kwargs):
        super().__init__(chunk_size, memory_budget, mode)
        from ._checks import check_real
        from .kl import KL_ESTIMATORS
        from .rl import PolicyLoss

        self.loss = PolicyLoss(*args, **kwargs)
        self.kl_coef = check_real("kl_coef", kl_coef, low=0.0)
        if kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, got {kl_estimator!r}")
        self.kl_estimator = kl_estimator

    def forward(self, hidden, weight, labels, old_log_probs, advantages, bias=None, *, ref_hidden=None, ref_weight=None,
                ref_bias=None, **loss_kwargs):
        _check_inputs(hidden, weight, bias, labels)
        if self.kl_coef > 0 and (ref_hidden is None or ref_weight is None):
            raise ValueError("ref_hidden and ref_weight are required when kl_coef > 0 (the KL is to the reference model)")
        mask = torch.cat((labels[:, 1:] != IGNORE_INDEX, torch.zeros_like(labels[:, :1], dtype=torch.bool)), dim=1)
        B, T = labels.shape
        ref = None
        if self.kl_coef > 0:
            _check_hidden(ref_hidden, ref_weight, ref_bias, ("ref_hidden", "ref_weight", "ref_bias"))
            rows = _rows(self.chunk_size, self.memory_budget, ref_weight.shape[0], ref_hidden.dtype)
            ref = _frozen_logps(ref_hidden.detach().reshape(-1, ref_hidden.shape[-1]), ref_weight.detach(),
                                None if ref_bias is None else ref_bias.detach(), shifted_targets(labels), rows).view(B, T)

        def full_loss(per_token):
            out = self.loss(per_token, old_log_probs, advantages, mask, **loss_kwargs)
            if ref is None:
                return out
            from ._reduce import agg_loss
            from .kl import compute_approx_kl

            mode = self.loss.loss_agg_mode or ("token-mean" if self.loss.token_level_loss else "seq-mean-token-mean")
            kl = agg_loss(compute_approx_kl(per_token, ref.to(per_token.dtype), self.kl_estimator), mask, mode,
                          loss_scale_factor=self.loss.loss_scale_factor)
            if isinstance(out, tuple):
                return (out[0] + self.kl_coef * kl, *out[1:])
            return out + self.kl_coef * kl

        # the single pass: every aggregation is a sum over sequences of terms that depend on that sequence's
        # log-probabilities only (the counts come from the mask), so a chunk's gradient is that of the whole
        # loss with the other sequences held at any constant (old_log_probs); the value comes from one last call
        held = old_log_probs.detach().to(compute_dtype(hidden))
        pieces = {}

        def loss_of(per_token, seqs):
            if self.last_schedule[0] == "recompute":  # one call on the whole batch
                return full_loss(per_token), ()
            pieces[seqs] = per_token.detach()
            out = full_loss(held.index_put((seqs,), per_token))
            return (out[0] if isinstance(out, tuple) else out), ()

        result = self._run(hidden, weight, bias, labels, B, T, lambda g0, g1: [(g0, g1)], loss_of, lambda seqs: 1.0)
        if len(result) == 2:
            return result[0]
        surrogate = result[0]  # right gradient, value of no meaning
        per_token = held.clone()
        for seqs, part in pieces.items():
            per_token[seqs] = part
        with torch.no_grad():
            out = full_loss(per_token)
        value = out[0] if isinstance(out, tuple) else out
        loss = surrogate + (value - surrogate).detach()
        return (loss, *out[1:]) if isinstance(out, tuple) else loss


# ----------------------------------------------------------------------------- token-level distillation (GKD / JSD)


class _TokenLoss(torch.autograd.Function):
    """Σ_t keep_t f(z_t, t_t) / Σ keep over token chunks, one pass; f is the closed-form JSD (``per_token`` =
    (beta, temperature)) or a function differentiated by autograd per chunk."""

    @staticmethod
    def forward(ctx, hidden2d, weight, bias, teacher2d, teacher_weight, teacher_bias, keep, rows, per_token):
        dtype = compute_dtype(hidden2d)
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        want_b = bias is not None and ctx.needs_input_grad[2]
        grad_h = torch.empty_like(hidden2d) if want_h else None
        grad_w = torch.zeros_like(weight, dtype=dtype) if want_w else None
        grad_b = torch.zeros_like(bias, dtype=dtype) if want_b else None
        denom = keep.sum().clamp(min=1).to(dtype)
        total = torch.zeros((), dtype=dtype, device=hidden2d.device)
        for start in range(0, hidden2d.shape[0], rows):
            end = start + rows
            k = keep[start:end]
            if not bool(k.any()):
                if grad_h is not None:
                    grad_h[start:end] = 0
                continue
            h = hidden2d[start:end]
            z = F.linear(h, weight, bias).to(dtype)
            t = F.linear(teacher2d[start:end], teacher_weight, teacher_bias).to(dtype)
            want_any = grad_h is not None or grad_w is not None or grad_b is not None
            if not bool(k.all()):
                z = torch.where(k.unsqueeze(1), z, 0.0)
                t = torch.where(k.unsqueeze(1), t, 0.0)
            if isinstance(per_token, tuple):  # (beta, temperature): the closed-form gradient of the generalised JSD
                rows_value, dz = _jsd_chunk(z, t, *per_token, want_any)
                del z, t
                value = torch.where(k, rows_value, 0.0).sum() / denom
                if dz is not None:
                    dz.mul_((k.to(dtype) / denom).unsqueeze(1))
            else:  # a custom per-token loss: autograd within the chunk
                z.requires_grad_(want_any)
                with torch.enable_grad():
                    value = torch.where(k, per_token(z, t), 0.0).sum() / denom
                dz = torch.autograd.grad(value, z)[0] if want_any else None
            if dz is not None:
                if grad_h is not None:
                    grad_h[start:end] = (dz.to(weight.dtype) @ weight).to(grad_h.dtype)
                if grad_w is not None:
                    grad_w.addmm_(dz.t(), h.to(dtype))
                if grad_b is not None:
                    grad_b.add_(dz.sum(dim=0))
            total += value.detach()
            z = t = dz = None  # before the next chunk is allocated
        _save_linear_grads(ctx, grad_h, grad_w, grad_b, weight, bias)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        return (*_linear_backward(ctx, grad_output), None, None, None, None, None, None)


def _jsd_chunk(z, t, beta: float, temperature: float, want_grad: bool):
    r"""Per-row generalised JSD of student logits ``z`` and teacher logits ``t`` (as :func:`gkd_per_token`) and its
    gradient in ``z``, in closed form (no autograd); ``z`` and ``t`` are overwritten.

    With :math:`p = \operatorname{softmax}(z/\tau)`, :math:`q = \operatorname{softmax}(t/\tau)`,
    :math:`m = \beta q + (1-\beta) p`: :math:`J = \beta\sum q\log q + (1-\beta)\sum p\log p - \sum m\log m`,
    so :math:`\partial J/\partial p_k = (1-\beta)(\log p_k - \log m_k) =: a_k` and, through the softmax,
    :math:`\partial J/\partial z_k = p_k (a_k - \sum_j p_j a_j)/\tau`. At β = 0 (forward KL) this is
    :math:`(p - q)/\tau`; at β = 1 (reverse KL) :math:`a = \log p - \log q`. Log-probabilities are clamped
    at the dtype's lowest finite value, as in :func:`gkd_per_token`.
    """
    low = torch.finfo(z.dtype).min
    if temperature != 1.0:
        z.div_(temperature)
        t.div_(temperature)
    log_p = torch.log_softmax(z, dim=-1).clamp_(min=low)
    log_q = torch.log_softmax(t, dim=-1).clamp_(min=low)
    del z, t
    p = log_p.exp()
    q = log_q.exp()
    if beta == 0.0:  # KL(q || p)
        value = torch.where(q > 0, q * (log_q - log_p), 0.0).sum(dim=-1)
        return value, (p.sub_(q).div_(temperature) if want_grad else None)
    if beta == 1.0:  # KL(p || q)
        a = log_p.sub_(log_q)
        del log_q
    else:
        log_m = torch.logaddexp(log_p + math.log1p(-beta), log_q + math.log(beta))
        teacher_part = torch.where(q > 0, q * (log_q - log_m), 0.0).sum(dim=-1)
        del log_q
        a = log_p.sub_(log_m).mul_(1.0 - beta)  # (1-β)(log p - log m)
        del log_m
    pa = torch.where(p > 0, p * a, 0.0).sum(dim=-1)  # Σ p a: the student's part of J
    value = pa if beta == 1.0 else beta * teacher_part + pa
    if not want_grad:
        return value, None
    return value, a.sub_(pa.unsqueeze(1)).mul_(p).div_(temperature)


def _gkd_per_token_from(loss):
    """``(beta, temperature)`` for the closed form of a :class:`GKDLoss`, or a custom ``per_token`` function."""
    fn = getattr(loss, "per_token", None)
    if fn is not None:
        return fn
    return (float(loss.beta), float(loss.temperature))


class FusedLinearGKDLoss(_FusedBase):
    r""":class:`GKDLoss` (generalised JSD, forward and reverse KL at β = 0, 1) of a student head against a frozen teacher head.

    ``FusedLinearGKDLoss(*gkd_args, chunk_size="auto", memory_budget=..., **gkd_kwargs)``.
    ``forward(hidden[B, T, H], weight[V, H], teacher_hidden[B, T, H'], teacher_weight[V, H'],
    label[B, T], bias=None, teacher_bias=None)``: labels unshifted, as in :class:`KDLoss` (a row
    whose label is ``-100`` is ignored). The loss is token-level, so it runs one pass over token
    chunks; each chunk's value and gradient in the student logits are computed in closed form
    (:func:`_jsd_chunk`, no autograd), equal to :func:`gkd_per_token` and its autograd gradient.
    """

    def __init__(self, *args, chunk_size="auto", memory_budget="auto", **kwargs):
        super().__init__(chunk_size, memory_budget, "auto")
        from . import GKDLoss

        self.loss = GKDLoss(*args, **kwargs)

    def forward(self, hidden, weight, teacher_hidden, teacher_weight, label, bias=None, teacher_bias=None):
        _check_inputs(hidden, weight, bias, label, ("hidden", "weight", "bias", "label"))
        _check_hidden(teacher_hidden, teacher_weight, teacher_bias, ("teacher_hidden", "teacher_weight", "teacher_bias"))
        if teacher_weight.shape[0] != weight.shape[0]:
            raise ValueError(f"teacher_weight must have the student's vocabulary size {weight.shape[0]}, got {teacher_weight.shape[0]}")
        if teacher_hidden.shape[:-1] != hidden.shape[:-1]:
            raise ValueError(f"teacher_hidden must match hidden's token axes {tuple(hidden.shape[:-1])}, got {tuple(teacher_hidden.shape[:-1])}")
        budget = _budget(self.memory_budget)
        if self.memory_budget == "auto":  # the chunk's temporaries may take as much as the weight's gradient
            budget = max(budget, weight.numel() * _itemsize(hidden.dtype))
        rows = self.chunk_size if isinstance(self.chunk_size, int) else auto_chunk_rows(
            weight.shape[0], hidden.dtype, budget, TOKEN_LOSS_TEMPORARIES)
        self.last_schedule = ("token", rows)
        keep = (label != IGNORE_INDEX).reshape(-1)
        return _TokenLoss.apply(
            hidden.reshape(-1, hidden.shape[-1]), weight, bias,
            teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1]), teacher_weight.detach(),
            None if teacher_bias is None else teacher_bias.detach(), keep, rows, _gkd_per_token_from(self.loss),
        )
