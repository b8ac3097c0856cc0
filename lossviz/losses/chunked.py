r"""Memory-lean cross-entropy and distillation: tokens in chunks, hand-written backward.

The plain losses keep several ``[tokens, vocab]`` tensors alive for backward (softmax,
log-softmax, their product, and the same again while differentiating). Here the forward
pass walks the tokens ``chunk_size`` rows at a time and computes, per chunk, the loss *and*
its gradient in closed form:

.. math::

    \text{CE:}\ \frac{\partial \mathcal{L}}{\partial z_{t}} = \frac{p_t - e_{y_t}}{N},
    \qquad
    \text{KD:}\ \frac{\partial \mathcal{L}}{\partial z_{t}} = \frac{S_t\,p_t - q_t \odot f_t}{N},
    \quad S_t = \textstyle\sum_v q_{t,v} f_{t,v},

(:math:`f` marks finite student logits; :math:`S_t = 1` without infinite ones) and for a
teacher that requires a gradient :math:`\partial\mathcal{L}/\partial t_{t} = -q_t \odot (\log p_t \odot f_t - x_t)/N`
with :math:`x_t = \sum_v q_{t,v} f_{t,v} \log p_{t,v}`.

Only the gradient (the size of the logits, in their dtype) outlives the forward pass, and
backward scales it in place. Peak memory is therefore the logits gradient plus
``O(chunk_size × vocab)`` of temporaries.

The fused-linear forms go further. They take the last hidden states and the ``lm_head``
weight, and they form the logits one chunk at a time: ``z_c = h_c W^T``. The gradients are
``∂L/∂h_c = g_c W`` and ``∂L/∂W = Σ_c g_c^T h_c``. The full logits never exist. This is the
approach of Liger-Kernel's fused linear losses, written here in plain torch, so it also runs
on CPU.

**In-place backward** (``in_place=True`` of :func:`chunked_gptlm_loss` and
:func:`chunked_kd_loss`, opt-in): the gradient is written into the logits' own storage, chunk by
chunk, as Liger-Kernel's cross-entropy does, so the extra memory is about one chunk of
temporaries instead of a logits-sized gradient. The logits then hold the gradient and may not be
used again: every lossviz chunked loss refuses them with a clear error (checked with the tensor's
version counter), torch refuses a backward through any other graph node that saved them, and
the backward of the loss itself refuses if they were modified after the forward pass. Any other
reading of them (``logits.argmax()``) cannot be intercepted: read what you need first.

The backward of these functions runs once; a second backward through the same graph
(``retain_graph=True``) raises a clear error, because the stored gradient has already been
scaled in place.
"""

from __future__ import annotations

import weakref
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import IGNORE_INDEX, check_class_labels, check_tensor, compute_dtype

DEFAULT_CHUNK = 256  # tokens per chunk: 256 x 32000 float32 temporaries are 33 MB each


def check_chunk_size(chunk_size) -> Optional[int]:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return chunk_size


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """Targets aligned with every logits position: ``labels[..., t + 1]``, and -100 at the last position."""
    pad = torch.full_like(labels[..., :1], IGNORE_INDEX)
    return torch.cat((labels[..., 1:], pad), dim=-1).reshape(-1)


def _ce_chunk(z: torch.Tensor, y: torch.Tensor, keep: torch.Tensor, denom: torch.Tensor, out: Optional[torch.Tensor]):
    """Sum of the NLL over kept rows of one chunk; its gradient / denom is written into ``out``."""
    lse = torch.logsumexp(z, dim=-1)  # (c,)
    safe_y = torch.where(keep, y, 0)
    picked = z.gather(1, safe_y.unsqueeze(1)).squeeze(1)
    nll = torch.where(keep, lse - picked, 0.0).sum()
    if out is not None:
        # straight into out when the dtypes agree (no temporary); half inputs get a float32 temporary
        grad = torch.sub(z, lse.unsqueeze(1), out=out if out.dtype == z.dtype else None)
        grad.exp_()  # softmax p, computed in place
        grad.scatter_add_(1, safe_y.unsqueeze(1), torch.full_like(picked, -1.0).unsqueeze(1))  # p - onehot
        grad.mul_((keep.to(grad.dtype) / denom).unsqueeze(1))  # ignored rows get zero
        _copy_back(out, grad)
    return nll


def _kd_chunk(z, t, keep, denom, out_z: Optional[torch.Tensor], out_t: Optional[torch.Tensor]):
    """Sum over kept rows of x = Σ_v q_v f_v log p_v; gradients of -Σ x / denom written into the outs."""
    if not bool(keep.all()):  # ignored rows become zeros: NaN or inf padding there must not reach the gradient
        z = torch.where(keep.unsqueeze(1), z, 0.0)
        t = torch.where(keep.unsqueeze(1), t, 0.0)
    q = torch.softmax(t, dim=-1)  # (c, V)
    logp = torch.log_softmax(z, dim=-1)
    infinite = torch.isinf(z)
    p = logp.exp() if out_z is not None else None  # before masking: p = 0 at infinite logits
    logp.masked_fill_(infinite, 0.0)  # infinite student logits drop out of the sum
    x = (q * logp).sum(dim=-1)  # (c,)
    total = torch.where(keep, x, 0.0).sum()
    scale = (keep.to(z.dtype) / denom).unsqueeze(1)
    if out_z is not None:
        finite_q = q.masked_fill(infinite, 0.0)
        weight = finite_q.sum(dim=-1, keepdim=True)  # S = Σ_v q_v f_v (1 without infinite logits)
        grad = p.mul_(weight).sub_(finite_q).mul_(scale)  # (S p - q f) / N, in place
        del finite_q
        _copy_back(out_z, grad)
    if out_t is not None:
        grad = q.mul_(logp.neg_().add_(x.unsqueeze(1))).mul_(scale)  # q (x - log p f) / N, in place
        _copy_back(out_t, grad)
    return total


def _copy_back(out: torch.Tensor, grad: torch.Tensor) -> None:
    if grad.data_ptr() != out.data_ptr():
        out.copy_(grad)


class _Consumed:
    """Backward of these functions scales the stored gradient in place: it may run once."""

    @staticmethod
    def check(ctx):
        if getattr(ctx, "consumed", False):
            raise RuntimeError(
                "lossviz chunked/fused loss: backward ran twice through the same graph; "
                "the stored gradient is scaled in place, so recompute the loss instead of retain_graph=True"
            )
        ctx.consumed = True


def _scale(grad: Optional[torch.Tensor], grad_output: torch.Tensor) -> Optional[torch.Tensor]:
    if grad is None:
        return None
    if grad_output.numel() == 1 and float(grad_output) == 1.0:
        return grad
    return grad.mul_(grad_output.to(grad.dtype))


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean NLL over rows of ``logits2d`` (N, V) whose target is not -100."""

    @staticmethod
    def forward(ctx, logits2d: torch.Tensor, targets: torch.Tensor, chunk_size: int, in_place: bool = False):
        dtype = compute_dtype(logits2d)
        keep_all = targets != IGNORE_INDEX
        denom = keep_all.sum().clamp(min=1).to(dtype)
        want_grad = ctx.needs_input_grad[0]
        grad = (logits2d if in_place else torch.empty_like(logits2d)) if want_grad else None
        total = torch.zeros((), dtype=dtype, device=logits2d.device)
        for start in range(0, logits2d.shape[0], chunk_size):
            end = start + chunk_size
            out = grad[start:end] if want_grad else None
            total += _ce_chunk(logits2d[start:end].to(dtype), targets[start:end], keep_all[start:end], denom, out)
        _remember_in_place(ctx, logits2d, in_place and want_grad)
        ctx.save_for_backward(None if ctx.in_place else grad)
        return total / denom

    @staticmethod
    def backward(ctx, grad_output):
        _Consumed.check(ctx)
        (grad,) = ctx.saved_tensors
        if ctx.in_place:
            grad = _in_place_gradient(ctx)
        return _scale(grad, grad_output), None, None, None


class ChunkedDistillation(torch.autograd.Function):
    """``-Σ_t keep_t Σ_v q log p / Σ keep`` over rows of (N, V) student and teacher logits."""

    @staticmethod
    def forward(ctx, logits2d: torch.Tensor, teacher2d: torch.Tensor, keep: torch.Tensor, chunk_size: int, in_place: bool = False):
        dtype = torch.promote_types(compute_dtype(logits2d), compute_dtype(teacher2d))
        denom = keep.sum().clamp(min=1).to(dtype)
        want_z, want_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_z = (logits2d if in_place else torch.empty_like(logits2d)) if want_z else None
        grad_t = torch.empty_like(teacher2d) if want_t else None
        total = torch.zeros((), dtype=dtype, device=logits2d.device)
        for start in range(0, logits2d.shape[0], chunk_size):
            end = start + chunk_size
            total += _kd_chunk(logits2d[start:end].to(dtype), teacher2d[start:end].to(dtype), keep[start:end], denom,
                               grad_z[start:end] if want_z else None, grad_t[start:end] if want_t else None)
        _remember_in_place(ctx, logits2d, in_place and want_z)
        ctx.save_for_backward(None if ctx.in_place else grad_z, grad_t)
        return -total / denom

    @staticmethod
    def backward(ctx, grad_output):
        _Consumed.check(ctx)
        grad_z, grad_t = ctx.saved_tensors
        if ctx.in_place:
            grad_z = _in_place_gradient(ctx)
        return _scale(grad_z, grad_output), _scale(grad_t, grad_output), None, None, None


# storage address -> (weak reference to the overwritten logits, their version right after the loss wrote them)
_OVERWRITTEN: dict = {}


def _remember_in_place(ctx, logits2d: torch.Tensor, in_place: bool) -> None:
    ctx.in_place = in_place
    if in_place:
        ctx.logits = logits2d  # not through save_for_backward: its version has moved on on purpose
        ctx.version = logits2d._version
        for key in [k for k, (r, _) in _OVERWRITTEN.items() if r() is None]:
            del _OVERWRITTEN[key]
        base = logits2d._base if logits2d._base is not None else logits2d  # lives as long as any view of it
        _OVERWRITTEN[logits2d.untyped_storage().data_ptr()] = (weakref.ref(base), logits2d._version)


def _in_place_gradient(ctx) -> torch.Tensor:
    logits2d = ctx.logits
    if logits2d._version != ctx.version:
        raise RuntimeError(
            "logits: modified after the in-place chunked loss wrote its gradient into them (in_place=True); "
            "the gradient is lost. Leave the logits untouched until backward, or use in_place=False"
        )
    del ctx.logits
    return logits2d


def check_not_overwritten(name: str, x: torch.Tensor) -> None:
    """Refuse a tensor whose storage an in-place chunked loss has overwritten with its gradient."""
    entry = _OVERWRITTEN.get(x.untyped_storage().data_ptr()) if x.device.type != "meta" else None
    if entry is None:
        return
    ref, version = entry
    alive = ref()
    if alive is None or alive.untyped_storage().data_ptr() != x.untyped_storage().data_ptr():
        return
    if x._version >= version:
        raise RuntimeError(
            f"{name}: these logits were overwritten by an in-place chunked loss (in_place=True) and now hold "
            "its gradient; compute the logits again, or call that loss with in_place=False"
        )


def _in_place_view(name: str, logits: torch.Tensor) -> torch.Tensor:
    if not logits.is_contiguous():
        raise ValueError(f"{name} must be contiguous for in_place=True (the gradient is written into its storage)")
    return logits.view(-1, logits.shape[-1])


def chunked_gptlm_loss(logits: torch.Tensor, labels: torch.Tensor, chunk_size: int = DEFAULT_CHUNK, *,
                       in_place: bool = False) -> torch.Tensor:
    """``GPTLMLoss(chunk_size=chunk_size)(logits, labels)``; ``in_place=True`` writes the gradient into ``logits``.

    Extra memory with ``in_place=True``: about one chunk of ``[chunk_size, vocab]`` temporaries
    (none logits-sized). The logits hold the gradient afterwards and may not be used again.
    """
    from .sft import _check_logits_and_labels

    check_chunk_size(chunk_size)
    if not isinstance(in_place, bool):
        raise TypeError(f"in_place must be a bool, got {type(in_place).__name__}")
    _check_logits_and_labels(logits, labels, "labels")
    check_not_overwritten("logits", logits)
    check_class_labels("labels", labels, logits.shape[-1])
    flat = _in_place_view("logits", logits) if in_place else logits.reshape(-1, logits.shape[-1])
    return ChunkedCrossEntropy.apply(flat, shifted_targets(labels), chunk_size or DEFAULT_CHUNK, in_place)


def chunked_kd_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, label: torch.Tensor,
                    chunk_size: int = DEFAULT_CHUNK, *, in_place: bool = False) -> torch.Tensor:
    """``KDLoss(chunk_size=chunk_size)(logits, teacher_logits, label)``; ``in_place=True`` writes the student's gradient into ``logits``.

    The teacher's logits are never overwritten (a teacher that requires a gradient gets a
    separate buffer, as without ``in_place``).
    """
    from .sft import _check_logits_and_labels

    check_chunk_size(chunk_size)
    if not isinstance(in_place, bool):
        raise TypeError(f"in_place must be a bool, got {type(in_place).__name__}")
    _check_logits_and_labels(logits, label, "label")
    check_tensor("teacher_logits", teacher_logits)
    if teacher_logits.shape != logits.shape:
        raise ValueError(f"teacher_logits must have the shape of logits {tuple(logits.shape)}, got {tuple(teacher_logits.shape)}")
    check_not_overwritten("logits", logits)
    check_not_overwritten("teacher_logits", teacher_logits)
    vocab = logits.shape[-1]
    flat = _in_place_view("logits", logits) if in_place else logits.reshape(-1, vocab)
    keep = (label != IGNORE_INDEX).reshape(-1)
    return ChunkedDistillation.apply(flat, teacher_logits.reshape(-1, vocab), keep, chunk_size or DEFAULT_CHUNK, in_place)


class FusedLinearCrossEntropy(torch.autograd.Function):
    """Mean NLL of ``hidden2d @ weight.T (+ bias)`` without materialising the (N, V) logits."""

    @staticmethod
    def forward(ctx, hidden2d, weight, bias, targets, chunk_size):
        dtype = compute_dtype(hidden2d)
        keep_all = targets != IGNORE_INDEX
        denom = keep_all.sum().clamp(min=1).to(dtype)
        grad_h, grad_w, grad_b = _linear_grad_buffers(ctx, hidden2d, weight, bias, dtype)
        want_any = any(g is not None for g in (grad_h, grad_w, grad_b))
        total = torch.zeros((), dtype=dtype, device=hidden2d.device)
        for start in range(0, hidden2d.shape[0], chunk_size):
            end = start + chunk_size
            h = hidden2d[start:end]
            z = F.linear(h, weight, bias).to(dtype)  # (c, V): the only logits that ever exist
            total += _ce_chunk(z, targets[start:end], keep_all[start:end], denom, z if want_any else None)  # gradient over z
            if want_any:
                _accumulate_linear_grads(z, h, weight, grad_h, grad_w, grad_b, start, end)
            del z  # before the next chunk is allocated: one chunk alive at a time
        _save_linear_grads(ctx, grad_h, grad_w, grad_b, weight, bias)
        return total / denom

    @staticmethod
    def backward(ctx, grad_output):
        return (*_linear_backward(ctx, grad_output), None, None)


class FusedLinearDistillation(torch.autograd.Function):
    """KD of the student ``hidden2d @ weight.T`` to a frozen teacher head, chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden2d, weight, bias, teacher_hidden2d, teacher_weight, teacher_bias, keep, chunk_size):
        dtype = compute_dtype(hidden2d)
        denom = keep.sum().clamp(min=1).to(dtype)
        grad_h, grad_w, grad_b = _linear_grad_buffers(ctx, hidden2d, weight, bias, dtype)
        want_any = any(g is not None for g in (grad_h, grad_w, grad_b))
        total = torch.zeros((), dtype=dtype, device=hidden2d.device)
        for start in range(0, hidden2d.shape[0], chunk_size):
            end = start + chunk_size
            h = hidden2d[start:end]
            z = F.linear(h, weight, bias).to(dtype)
            t = F.linear(teacher_hidden2d[start:end], teacher_weight, teacher_bias).to(dtype)
            total += _kd_chunk(z, t, keep[start:end], denom, z if want_any else None, None)  # gradient over z
            if want_any:
                _accumulate_linear_grads(z, h, weight, grad_h, grad_w, grad_b, start, end)
            del z, t
        _save_linear_grads(ctx, grad_h, grad_w, grad_b, weight, bias)
        return -total / denom

    @staticmethod
    def backward(ctx, grad_output):
        return (*_linear_backward(ctx, grad_output), None, None, None, None, None)


def _linear_grad_buffers(ctx, hidden2d, weight, bias, dtype):
    """Gradient buffers for the inputs that need one: hidden (filled per chunk), weight and bias (accumulated)."""
    want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    want_b = bias is not None and ctx.needs_input_grad[2]
    return (torch.empty_like(hidden2d) if want_h else None,
            torch.zeros_like(weight, dtype=dtype) if want_w else None,
            torch.zeros_like(bias, dtype=dtype) if want_b else None)


def _save_linear_grads(ctx, grad_h, grad_w, grad_b, weight, bias):
    ctx.save_for_backward(grad_h, grad_w, grad_b)
    ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)


def _linear_backward(ctx, grad_output):
    """(∂hidden, ∂weight, ∂bias) scaled by the upstream gradient, in the parameters' dtypes."""
    _Consumed.check(ctx)
    grad_h, grad_w, grad_b = ctx.saved_tensors
    w_dtype, b_dtype = ctx.dtypes
    grad_w = None if grad_w is None else grad_w.to(w_dtype)
    grad_b = None if grad_b is None else grad_b.to(b_dtype)
    return _scale(grad_h, grad_output), _scale(grad_w, grad_output), _scale(grad_b, grad_output)


def _accumulate_linear_grads(g, h, weight, grad_h, grad_w, grad_b, start, end):
    """Chain rule through z = h W^T + b for one chunk: ∂h = g W, ∂W += g^T h, ∂b += Σ g."""
    if grad_h is not None:
        grad_h[start:end] = (g.to(weight.dtype) @ weight).to(grad_h.dtype)
    if grad_w is not None:
        grad_w.addmm_(g.t(), h.to(grad_w.dtype))
    if grad_b is not None:
        grad_b.add_(g.sum(dim=0))


def _check_hidden(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], names=("hidden", "weight", "bias")):
    check_tensor(names[0], hidden)
    check_tensor(names[1], weight)
    if weight.dim() != 2:
        raise ValueError(f"{names[1]} must be the lm_head weight of shape (V, H), got {tuple(weight.shape)}")
    if hidden.dim() < 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"{names[0]} must have shape (..., T, H) with H = {weight.shape[1]} (the weight's second axis), got {tuple(hidden.shape)}")
    if bias is not None:
        check_tensor(names[2], bias)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"{names[2]} must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")


class FusedLinearGPTLMLoss(nn.Module):
    """``GPTLMLoss`` of ``hidden @ weight.T (+ bias)``, computed without the full logits.

    ``forward(hidden[B, T, H], weight[V, H], labels[B, T], bias=None)``: the same value and
    gradients as ``GPTLMLoss()(F.linear(hidden, weight, bias), labels)``.
    """

    def __init__(self, chunk_size: int = DEFAULT_CHUNK) -> None:
        super().__init__()
        self.IGNORE_INDEX = IGNORE_INDEX
        self.chunk_size = check_chunk_size(chunk_size)

    def forward(self, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        _check_hidden(hidden, weight, bias)
        check_tensor("labels", labels, floating=False)
        if labels.shape != hidden.shape[:-1]:
            raise ValueError(f"labels must have the shape of hidden without its last axis {tuple(hidden.shape[:-1])}, got {tuple(labels.shape)}")
        check_class_labels("labels", labels, weight.shape[0])
        return FusedLinearCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), weight, bias, shifted_targets(labels), self.chunk_size)


class FusedLinearKDLoss(nn.Module):
    """``KDLoss`` of student ``hidden @ weight.T`` against a frozen teacher head, without full logits.

    ``forward(hidden, weight, teacher_hidden, teacher_weight, label, bias=None, teacher_bias=None)``:
    the same value and student gradients as ``KDLoss()(F.linear(hidden, weight, bias),
    F.linear(teacher_hidden, teacher_weight, teacher_bias), label)``. The teacher gets no gradient.
    """

    def __init__(self, chunk_size: int = DEFAULT_CHUNK) -> None:
        super().__init__()
        self.IGNORE_INDEX = IGNORE_INDEX
        self.chunk_size = check_chunk_size(chunk_size)

    def forward(self, hidden, weight, teacher_hidden, teacher_weight, label, bias=None, teacher_bias=None) -> torch.Tensor:
        _check_hidden(hidden, weight, bias)
        _check_hidden(teacher_hidden, teacher_weight, teacher_bias, ("teacher_hidden", "teacher_weight", "teacher_bias"))
        if teacher_weight.shape[0] != weight.shape[0]:
            raise ValueError(f"teacher_weight must have the student's vocabulary size {weight.shape[0]}, got {teacher_weight.shape[0]}")
        if teacher_hidden.shape[:-1] != hidden.shape[:-1]:
            raise ValueError(f"teacher_hidden must match hidden's token axes {tuple(hidden.shape[:-1])}, got {tuple(teacher_hidden.shape[:-1])}")
        check_tensor("label", label, floating=False)
        if label.shape != hidden.shape[:-1]:
            raise ValueError(f"label must have the shape of hidden without its last axis {tuple(hidden.shape[:-1])}, got {tuple(label.shape)}")
        keep = (label != IGNORE_INDEX).reshape(-1)
        return FusedLinearDistillation.apply(
            hidden.reshape(-1, hidden.shape[-1]), weight, bias,
            teacher_hidden.reshape(-1, teacher_hidden.shape[-1]).detach(), teacher_weight.detach(),
            None if teacher_bias is None else teacher_bias.detach(), keep, self.chunk_size,
        )
