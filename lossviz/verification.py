"""Autograd verification: the production code has exactly the gradient the derivation says.

For each entry, on the chosen device and dtype:

1. build seeded random production batches (:meth:`Card.batches`): masks, ignored labels,
   margins, empty KTO sides. Sample points keep a distance from every kink (clip edges,
   hinge points, clamps at 0): 0.02 in the PPO log-ratio and value step, 0.1 in a KTO
   reference point, so finite differences with step 1e-6 never cross one;
2. round the inputs to the dtype, run the production class forward and backward;
3. compute the expected loss and input gradients in float64 from the card's symbolic
   gradient, lowered to numpy and evaluated at the *rounded* inputs, carried through the
   reduction (each example's weight in the mean), with zero expected at masked, ignored and
   detached positions;
4. compare, and in float64 on the same device also check central finite differences
   (a random direction, step 1e-6) and ``torch.autograd.gradcheck``.

Errors are norm-wise: the largest absolute difference over a batch's gradients divided by
the largest expected magnitude (for the loss, by its own magnitude).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from .cards.base import Card, CardError, Derivation

#: relative tolerance of each dtype (loss and gradients), stated in every report
TOLERANCES = {"float64": 1e-9, "float32": 1e-5, "bfloat16": 3e-2}
FD_STEP, FD_TOLERANCE = 1e-6, 1e-6


class VerifyError(ValueError):
    """A bad request (unknown entry, device or dtype; CUDA without a GPU): one line for the user."""


@dataclass
class EntryResult:
    entry: str
    device: str
    dtype: str
    points: int
    max_abs_err: float
    max_rel_err: float
    worst: str  # where the largest relative error is: "loss" or "<batch>: <argument>[index]"
    fd_rel_err: Optional[float]
    gradcheck: Optional[bool]
    tolerance: float
    passed: bool
    seconds: float
    failures: List[str] = field(default_factory=list)


@dataclass
class Report:
    results: List[EntryResult]

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def __getitem__(self, entry: str) -> EntryResult:
        return next(r for r in self.results if r.entry == entry)

    def table(self) -> str:
        head = ("entry", "device", "dtype", "points", "max abs err", "max rel err", "tol", "fin.diff", "gradcheck", "verdict")
        rows = [head]
        for r in self.results:
            rows.append((
                r.entry, r.device, r.dtype, str(r.points), f"{r.max_abs_err:.2e}", f"{r.max_rel_err:.2e}", f"{r.tolerance:.0e}",
                "-" if r.fd_rel_err is None else f"{r.fd_rel_err:.1e}",
                "-" if r.gradcheck is None else ("pass" if r.gradcheck else "FAIL"),
                "pass" if r.passed else "FAIL",
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for r in self.results:
            for f in r.failures:
                lines.append(f"FAIL {r.entry}: {f}")
        lines.append(f"{self.passed} passed, {self.failed} failed")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"results": [asdict(r) for r in self.results], "passed": self.passed, "failed": self.failed}, indent=2)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise VerifyError(f"--device must be one of auto, cpu, cuda; got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise VerifyError("--device cuda was requested but no CUDA GPU is available (torch.cuda.is_available() is False)")
    return device


def _torch_dtype(dtype: str):
    import torch

    if dtype not in TOLERANCES:
        raise VerifyError(f"--dtype must be one of {', '.join(TOLERANCES)}; got {dtype!r}")
    return getattr(torch, dtype)


def _derivation(card: Card, params: Mapping[str, object], case: Mapping[str, str], symbolic: Sequence[str], cache: dict) -> Derivation:
    key = (tuple(sorted(case.items())), tuple(symbolic))
    if key not in cache:
        # parameters that vary per example are not fixed here (a hard PRM label overrides p)
        values = card.resolve({k: v for k, v in {**params, **case}.items() if k not in symbolic})
        for name in symbolic:
            values[name] = card.param(name).symbol
        cache[key] = Derivation(card, values)
    return cache[key]


def _read(arrays, location):
    if isinstance(location[0], str):  # ("mean", arg): the batch mean of an input
        return float(np.mean(arrays[location[1]]))
    arg, index = location
    return arrays[arg][index]


def _expected(card, params, spec, arrays, cache):
    """Expected loss and gradients (float64 numpy), from the card, at the rounded inputs."""
    if spec.expectation is not None:
        return spec.expectation(arrays)
    grads = {k: np.zeros(np.shape(arrays[k])) for k in spec.grad_args}
    loss = 0.0
    groups: Dict[tuple, list] = {}
    for term in spec.terms:
        groups.setdefault((term.key(),), []).append(term)
    for (case_key,), terms in groups.items():
        d = _derivation(card, params, dict(case_key), spec.symbolic, cache)
        columns = [np.array([_read(arrays, t.where[v]) for t in terms]) for v in d.variables]
        columns += [np.array([_read(arrays, t.extra[s]) if isinstance(t.extra[s], tuple) else t.extra[s] for t in terms]) for s in d.symbolic_params]
        weights = np.array([t.weight for t in terms])
        loss += float(np.sum(weights * d.function("loss")(*columns)))
        for v in d.variables:
            slope = weights * d.function(v)(*columns)
            for t, s in zip(terms, slope):
                location = t.where[v]
                if isinstance(location[0], str):
                    if s != 0:
                        raise AssertionError(f"{card.name}: {v} is read as a batch mean but has a non-zero card gradient")
                    continue
                arg, index = location
                grads[arg][index] += s
    return loss, grads


def _to_torch(spec, dtype, device):
    import torch

    tensors = []
    for k, a in enumerate(spec.args):
        if a is None:
            tensors.append(None)
        elif np.issubdtype(np.asarray(a).dtype, np.floating):
            t = torch.tensor(a, dtype=torch.float64).to(dtype=dtype, device=device)
            tensors.append(t.requires_grad_() if k in spec.grad_args else t)
        else:
            tensors.append(torch.tensor(a, dtype=torch.long, device=device))
    return tensors


def _run(module, tensors):
    out = module(*tensors)
    return out[0] if isinstance(out, tuple) else out


def _detached_args(card: Card, spec) -> set:
    """Inputs the card reads but never differentiates (KTO's KL batch): excluded from gradcheck/FD."""
    return {loc[1] for t in spec.terms for v, loc in t.where.items() if isinstance(loc[0], str) and v in card.detached}


def _float64_checks(card, spec, device, rng) -> tuple:
    """Central finite differences along a random direction, and gradcheck, both in float64."""
    import torch

    module = spec.make_module(device)
    tensors = _to_torch(spec, torch.float64, device)
    free = [k for k in spec.grad_args if k not in _detached_args(card, spec)]
    loss = _run(module, tensors)
    grads = torch.autograd.grad(loss, [tensors[k] for k in free], allow_unused=True)
    directions = [torch.tensor(rng.normal(size=tuple(tensors[k].shape)), dtype=torch.float64, device=device) for k in free]
    analytic = sum(float((g * v).sum()) for g, v in zip(grads, directions) if g is not None)

    def shifted(sign):
        moved = list(tensors)
        for k, v in zip(free, directions):
            moved[k] = (tensors[k].detach() + sign * FD_STEP * v)
        with torch.no_grad():
            return float(_run(module, moved))

    numeric = (shifted(1) - shifted(-1)) / (2 * FD_STEP)
    fd_err = abs(numeric - analytic) / max(abs(analytic), 1e-12)

    def fn(*xs):
        moved = list(t.detach() if isinstance(t, torch.Tensor) else t for t in tensors)
        for k, x in zip(free, xs):
            moved[k] = x
        return _run(module, moved)

    inputs = [tensors[k].detach().clone().requires_grad_() for k in free]
    try:
        ok = bool(torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, raise_exception=False))
    except RuntimeError:
        ok = False
    return fd_err, ok


def verify_card(card: Card, device: str = "auto", dtype: str = "float64", seed: int = 0, params: Optional[Mapping[str, object]] = None) -> EntryResult:
    """Verify one card (an object; :func:`verify` takes names)."""
    import torch

    start = time.perf_counter()
    device = resolve_device(device)
    torch_dtype = _torch_dtype(dtype)
    tolerance = TOLERANCES[dtype]
    rng = np.random.default_rng(seed)
    p = card.resolve(dict(params or {}))
    cache: dict = {}
    points, max_abs, max_rel, worst, failures = 0, 0.0, 0.0, "-", []
    fd_worst, gradcheck_ok = 0.0, True
    for spec in card.batches(rng, p):
        tensors = _to_torch(spec, torch_dtype, device)
        loss = _run(spec.make_module(device), tensors)
        value = float(loss.detach())
        leaves = [tensors[k] for k in spec.grad_args]
        got = torch.autograd.grad(loss, leaves, allow_unused=True) if loss.requires_grad else [None] * len(leaves)
        arrays = [None if t is None else t.detach().to(torch.float64).cpu().numpy() for t in tensors]
        want_loss, want_grads = _expected(card, p, spec, arrays, cache)
        points += spec.points

        loss_err = abs(value - want_loss)
        loss_rel = loss_err / max(abs(want_loss), 1e-300) if want_loss != 0 else loss_err
        if not np.isfinite(value):
            loss_rel = loss_err = float("inf")
        candidates = [(loss_rel, loss_err, f"{spec.label}: loss")]
        scale = max([float(np.max(np.abs(g))) for g in want_grads.values() if np.size(g)] + [0.0]) or 1.0
        for k, g in zip(spec.grad_args, got):
            g = np.zeros(np.shape(arrays[k])) if g is None else g.detach().to(torch.float64).cpu().numpy()
            diff = np.abs(g - want_grads[k])
            diff = np.where(np.isfinite(diff), diff, np.inf)
            if diff.size:
                at = np.unravel_index(int(np.argmax(diff)), diff.shape)
                candidates.append((float(diff[at]) / scale, float(diff[at]), f"{spec.label}: {spec.arg_names[k]}[{', '.join(map(str, at))}]"))
        for rel, err, where in candidates:
            max_abs = max(max_abs, err)
            if rel > max_rel:
                max_rel, worst = rel, where
            if not rel <= tolerance:
                failures.append(f"{where}: relative error {rel:.2e} > {tolerance:.0e} (got vs the card's gradient)")

        fd_err, ok = _float64_checks(card, spec, device, rng)
        fd_worst = max(fd_worst, fd_err)
        gradcheck_ok &= ok
        if fd_err > FD_TOLERANCE:
            failures.append(f"{spec.label}: finite differences differ from autograd by {fd_err:.1e}")
        if not ok:
            failures.append(f"{spec.label}: torch.autograd.gradcheck failed")
    return EntryResult(card.name, device, dtype, points, max_abs, max_rel, worst, fd_worst, gradcheck_ok, tolerance,
                       not failures, time.perf_counter() - start, failures)


def verify(names: Union[str, Card, Iterable[Union[str, Card]], None] = None, device: str = "auto", dtype: str = "float64",
           seed: int = 0, **params) -> Report:
    """Verify entries (names, aliases or card objects; ``None``: all) and return a :class:`Report`.

    ``params`` go to every named entry (e.g. ``verify("cdpo", beta=0.5)``).
    """
    from .registry import cards, get

    if names is None:
        selected = cards()
    else:
        if isinstance(names, (str, Card)):
            names = [names]
        try:
            selected = [n if isinstance(n, Card) else get(n) for n in names]
        except CardError as exc:
            raise VerifyError(str(exc)) from None
    resolve_device(device)
    _torch_dtype(dtype)
    return Report([verify_card(c, device, dtype, seed, params) for c in selected])
