r"""Supervised fine-tuning losses: next-token cross-entropy and knowledge distillation.

**GPTLMLoss** (shifted next-token cross-entropy). With logits :math:`z_t \in \mathbb{R}^V`
at position :math:`t` and the label :math:`y_{t+1}` of the next position, over the set
:math:`\mathcal{T}` of positions whose label is not ``-100``:

.. math::

    \mathcal{L} = \frac{1}{|\mathcal{T}|} \sum_{t \in \mathcal{T}}
        \Big(\log \sum_k e^{z_{t,k}} - z_{t, y_{t+1}}\Big),
    \qquad
    \frac{\partial \mathcal{L}}{\partial z_{t,k}} = \frac{p_{t,k} - \mathbb{1}[k = y_{t+1}]}{|\mathcal{T}|},
    \quad p_t = \operatorname{softmax}(z_t).

**KDLoss** (cross-entropy to the teacher's soft labels, on *unshifted* labels). With
:math:`q_t = \operatorname{softmax}(z^T_t)` the teacher's distribution:

.. math::

    \mathcal{L} = -\frac{1}{|\mathcal{T}|} \sum_{t \in \mathcal{T}} \sum_k q_{t,k} \log p_{t,k},
    \qquad
    \frac{\partial \mathcal{L}}{\partial z_{t,k}} = \frac{p_{t,k} - q_{t,k}}{|\mathcal{T}|}.

Since :math:`\mathrm{KL}(q \,\|\, p) = -\sum_k q_k \log p_k - H(q)` and the teacher entropy
:math:`H(q)` does not depend on the student, minimising this cross-entropy minimises the KL.
Vocabulary entries where the student logit is infinite (masked-out tokens) are excluded from
the sum, as in OpenRLHF v0.5.3.

lossviz hardening: when every label is ``-100`` both losses return a zero that stays
attached to the graph (zero gradient) instead of NaN; half-precision inputs are computed in
float32 and float64 inputs stay in float64 (the result has that compute dtype); student and
teacher may differ in dtype (the loss is computed in the wider one, each gradient comes back
in its input's dtype). In ``KDLoss`` a row whose label is ``-100`` may hold NaN or inf
(padding): it is replaced by zeros before the softmaxes, so the loss ignores it and its
gradient is 0, where OpenRLHF v0.5.3 returns a NaN loss (``NaN * 0`` in the masked sum).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from typing import Optional

from ._checks import IGNORE_INDEX, check_class_labels, check_real, check_tensor, compute_dtype
from .chunked import (ChunkedCrossEntropy, ChunkedDistillation, _in_place_view, check_chunk_size, check_not_overwritten,
                      shifted_targets)


def _check_in_place(in_place, chunk_size) -> bool:
    if not isinstance(in_place, bool):
        raise TypeError(f"in_place must be a bool, got {type(in_place).__name__}")
    if in_place and chunk_size is None:
        raise ValueError("in_place=True needs chunk_size (the gradient is written chunk by chunk into the logits)")
    return in_place


def _check_logits_and_labels(logits: torch.Tensor, labels: torch.Tensor, labels_name: str) -> None:
    check_tensor("logits", logits)
    check_tensor(labels_name, labels, floating=False)
    if logits.dim() < 2:
        raise ValueError(f"logits must have shape (..., T, V), got {tuple(logits.shape)}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"{labels_name} must have the shape of logits without its vocabulary axis "
            f"{tuple(logits.shape[:-1])}, got {tuple(labels.shape)}"
        )


class GPTLMLoss(nn.Module):
    """Next-token cross-entropy for pre-training and SFT; labels ``-100`` are ignored.

    ``chunk_size=N`` (keyword-only) processes N tokens at a time with a hand-written backward
    (:mod:`.chunked`): the same value and gradient, with peak memory of the logits gradient
    plus ``O(N × vocab)`` instead of several full ``[tokens, vocab]`` tensors.

    ``in_place=True`` (keyword-only, opt-in; needs ``chunk_size``, else a ``ValueError``) writes
    that gradient into the logits' own storage instead (as Liger-Kernel's cross-entropy does):
    the extra memory is about one chunk. The logits then hold the gradient: they must be
    contiguous, and passing them to a lossviz loss again raises a ``RuntimeError``, as does
    modifying them before ``backward`` (see :mod:`.chunked`).
    """

    def __init__(self, *, chunk_size: Optional[int] = None, in_place: bool = False) -> None:
        super().__init__()
        self.IGNORE_INDEX = IGNORE_INDEX
        self.chunk_size = check_chunk_size(chunk_size)
        self.in_place = _check_in_place(in_place, self.chunk_size)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_logits_and_labels(logits, labels, "labels")
        check_not_overwritten("logits", logits)
        vocab = logits.shape[-1]
        check_class_labels("labels", labels, vocab)
        if self.chunk_size:
            flat = _in_place_view("logits", logits) if self.in_place else logits.reshape(-1, vocab)
            return ChunkedCrossEntropy.apply(flat, shifted_targets(labels), self.chunk_size, self.in_place)
        # position t predicts the token at t + 1
        shift_logits = logits[..., :-1, :].reshape(-1, vocab).to(compute_dtype(logits))  # (N, V)
        shift_labels = labels[..., 1:].reshape(-1)  # (N,)
        nll_sum = F.cross_entropy(shift_logits, shift_labels, ignore_index=self.IGNORE_INDEX, reduction="sum")
        count = (shift_labels != self.IGNORE_INDEX).sum().clamp(min=1)
        return nll_sum / count


class KDLoss(nn.Module):
    r"""Knowledge distillation: cross-entropy of the student to the teacher's soft labels.

    ``chunk_size=N`` (keyword-only): chunked, with a hand-written backward (see :class:`GPTLMLoss`).
    ``in_place=True`` (keyword-only, needs ``chunk_size``): the student's gradient is written into
    the student logits' storage, as in :class:`GPTLMLoss`; the teacher's logits are never
    overwritten. With τ ≠ 1 the gradient goes into the divided copy ``logits / τ`` instead.

    ``temperature=τ`` (keyword-only; Hinton et al. 2015, §2, docs/references.md#hinton2015) softens both distributions,
    :math:`q^\tau = \operatorname{softmax}(z^T/\tau)`, :math:`p^\tau = \operatorname{softmax}(z/\tau)`,
    and multiplies by :math:`\tau^2`:

    .. math::

        \mathcal{L}_\tau = -\frac{\tau^2}{|\mathcal{T}|}\sum_{t\in\mathcal{T}}\sum_k q^\tau_{t,k}\log p^\tau_{t,k},
        \qquad
        \frac{\partial \mathcal{L}_\tau}{\partial z_{t,k}} = \frac{\tau\,(p^\tau_{t,k} - q^\tau_{t,k})}{|\mathcal{T}|},

    Without the factor the gradient would be :math:`(p^\tau - q^\tau)/(\tau|\mathcal{T}|)`, which
    for large τ and zero-mean logits shrinks as :math:`1/\tau^2` (Hinton et al., §2); the
    :math:`\tau^2` keeps its scale comparable across temperatures. ``temperature=1.0`` (the default) is v0.5.3 exactly. With
    ``chunk_size`` and τ ≠ 1 the logits are divided by τ before chunking (one extra
    ``[tokens, vocab]`` tensor).
    """

    def __init__(self, *, chunk_size: Optional[int] = None, temperature: float = 1.0, in_place: bool = False) -> None:
        super().__init__()
        self.IGNORE_INDEX = IGNORE_INDEX
        self.chunk_size = check_chunk_size(chunk_size)
        self.temperature = check_real("temperature", temperature, low=0.0, low_open=True)
        self.in_place = _check_in_place(in_place, self.chunk_size)

    def forward(self, logits: torch.Tensor, teacher_logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        _check_logits_and_labels(logits, label, "label")
        check_tensor("teacher_logits", teacher_logits)
        check_not_overwritten("logits", logits)
        check_not_overwritten("teacher_logits", teacher_logits)
        if teacher_logits.shape != logits.shape:
            raise ValueError(
                f"teacher_logits must have the shape of logits {tuple(logits.shape)}, "
                f"got {tuple(teacher_logits.shape)}"
            )
        if self.temperature != 1.0:
            tau = self.temperature
            return tau * tau * self._kd(logits / tau, teacher_logits / tau, label)
        return self._kd(logits, teacher_logits, label)

    def _kd(self, logits: torch.Tensor, teacher_logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.chunk_size:
            vocab = logits.shape[-1]
            keep = (label != self.IGNORE_INDEX).reshape(-1)
            flat = _in_place_view("logits", logits) if self.in_place else logits.reshape(-1, vocab)
            return ChunkedDistillation.apply(flat, teacher_logits.reshape(-1, vocab), keep, self.chunk_size, self.in_place)
        dtype = torch.promote_types(compute_dtype(logits), compute_dtype(teacher_logits))
        keep_rows = (label != self.IGNORE_INDEX).unsqueeze(-1)  # (..., 1)
        # ignored rows are replaced by zeros before the softmaxes: a NaN or inf there (padding) would
        # otherwise turn that row's gradient into NaN (0 * NaN in the softmax backward)
        teacher_probs = F.softmax(torch.where(keep_rows, teacher_logits.to(dtype), 0.0), dim=-1)  # (..., V)  q
        student_logprobs = F.log_softmax(torch.where(keep_rows, logits.to(dtype), 0.0), dim=-1)  # (..., V)  log p
        # entries where the student logit is ±inf are excluded from the sum; zeroing log p there
        # (not only the product) also keeps the teacher's gradient finite (-inf * 0 would be NaN)
        student_logprobs = torch.where(torch.isinf(logits) & keep_rows, 0.0, student_logprobs)
        per_token = (teacher_probs * student_logprobs).sum(dim=-1).reshape(-1)  # (N,)  sum_k q_k log p_k
        keep = (label != self.IGNORE_INDEX).reshape(-1)  # (N,)
        total = torch.where(keep, per_token, 0.0).sum()
        return -total / keep.sum().clamp(min=1)
