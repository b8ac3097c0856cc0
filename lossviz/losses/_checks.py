"""Argument checks shared by the production losses.

Every check raises a lossviz ``ValueError``/``TypeError`` whose message starts with the
argument's name, so a bad call fails at the loss's door and not deep inside torch.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Optional

import torch

IGNORE_INDEX = -100


def check_real(name: str, value, *, low=None, high=None, low_open=False, high_open=False) -> float:
    """Return ``value`` as a float after checking that it is a finite real inside the bounds."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def check_tensor(name: str, x, *, floating: bool = True) -> torch.Tensor:
    """Check that ``x`` is a tensor (of a floating dtype when ``floating``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    return x


def check_floats(**tensors: torch.Tensor) -> None:
    """Check several floating tensors at once (keyword names become the argument names)."""
    for name, x in tensors.items():
        check_tensor(name, x)


def check_same_shape(**tensors: torch.Tensor) -> None:
    """All given tensors must share one shape; the message lists every shape by name."""
    items = list(tensors.items())
    first_name, first = items[0]
    for name, x in items[1:]:
        if x.shape != first.shape:
            shapes = ", ".join(f"{n}{tuple(t.shape)}" for n, t in items)
            raise ValueError(f"{name} must have the shape of {first_name}; got {shapes}")


def check_same_floats(names, *tensors) -> None:
    """Fast path for the hot losses: non-empty floating tensors of one shape pass in about 1 µs;
    anything else goes through the detailed checks, whose message names the argument."""
    first = tensors[0]
    try:
        shape = first.shape
        fine = first.numel() > 0 and all(t.shape == shape and t.is_floating_point() for t in tensors)
    except AttributeError:  # not a tensor
        fine = False
    if not fine:
        named = dict(zip(names, tensors))
        check_floats(**named)
        check_same_shape(**named)
        check_nonempty(names[0], first)


def check_mask(name: str, mask: Optional[torch.Tensor], like_name: str, like: torch.Tensor) -> None:
    """An optional mask must have exactly the shape of the tensor it masks."""
    if mask is None:
        return
    if isinstance(mask, torch.Tensor) and mask.shape == like.shape:
        return  # the common case, without further calls
    check_tensor(name, mask, floating=False)
    if mask.shape != like.shape:
        raise ValueError(
            f"{name} must have the shape of {like_name} {tuple(like.shape)}, got {tuple(mask.shape)}"
        )


def check_nonempty(name: str, x: torch.Tensor) -> None:
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: the loss of an empty batch is undefined")


def check_class_labels(name: str, labels: torch.Tensor, num_classes: int) -> None:
    """Integer labels must be class ids in [0, num_classes) or IGNORE_INDEX (-100)."""
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"{name} must have an integer dtype (class ids, -100 = ignore), got {labels.dtype}")
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        value = int(labels[bad][0])
        raise ValueError(
            f"{name} holds {value}, which is neither a class id in [0, {num_classes}) nor the ignore index -100"
        )


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Half-precision inputs are computed in float32; float32 and float64 stay as they are."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
