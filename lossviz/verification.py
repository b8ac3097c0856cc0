"""Autograd verification: the production code has exactly the gradient the derivation says.

For each entry, on the chosen device and dtype:

0. take the parameters at their defaults (or as given), then ``samples`` more parameter sets
   drawn across their ranges (:func:`sample_params`: β, label smoothing, KTO weights that
   differ, clip widths, asymmetric and dual clip, the log-ratio clamp, margins); parameters
   given by the caller stay fixed. Everything random comes from ``seed``: the same seed
   replays the same parameters and batches, and the report prints both;
1. build seeded random production batches (:meth:`Card.batches`) that reach every branch:
   masks with fully masked sequences, ignored labels, margins, empty KTO sides, positive and
   clamped KTO reference points, ratios beyond the PPO clip, dual clip and log-ratio clamp.
   Sample points keep a distance from every kink (clip edges, hinge points, clamps at 0):
   0.02 in the PPO log-ratio and value step, 0.1 in a KTO reference point, so finite
   differences with step 1e-6 never cross one;
2. round the inputs to the dtype, run the production class forward and backward;
3. compute the expected loss and input gradients in float64 from the card's symbolic
   gradient (real parameters kept as symbols, so one derivation serves every parameter set),
   lowered to numpy and evaluated at the *rounded* inputs, carried through the
   reduction (each example's weight in the mean), with zero expected at masked, ignored and
   detached positions;
4. compare, and in float64 on the same device also check central finite differences
   (a random direction, step 1e-6) and ``torch.autograd.gradcheck``.

Errors are norm-wise: the largest absolute difference over a batch's gradients divided by
the largest expected magnitude (at least ``GRADIENT_FLOOR`` = 1e-6 of the loss's size, for
batches whose sigmoids all saturate); for the loss, divided by the sum of the magnitudes of its
per-example terms (a PPO loss whose terms of both signs cancel to nearly 0 cannot be held to
a relative error of its tiny sum); for finite differences, divided by the sum of the
magnitudes of the directional derivative's terms, for the same reason, and at least by
1e-3 of the loss (the float64 rounding of the loss alone moves a difference quotient with
step 1e-6 by about 1e-10 of the loss).
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .cards.base import Card, CardError, Derivation

#: relative tolerance of each dtype (loss and gradients), stated in every report
TOLERANCES = {"float64": 1e-9, "float32": 1e-5, "bfloat16": 3e-2}
FD_STEP, FD_TOLERANCE = 1e-6, 1e-6
#: parameter sets drawn per entry beyond the defaults
SAMPLES = 8

# How each real parameter is drawn: (kind, low, high, chance of None for an optional parameter).
# The ranges are the interesting part of each parameter's valid range (Param.low/high still
# validate every draw); a parameter not listed keeps its default.
_DRAWS = {
    "beta": ("log", 0.02, 2.0, 0.0),
    "label_smoothing": ("uniform", 0.0, 0.45, 0.0),
    "desirable_weight": ("uniform", 0.1, 3.0, 0.0),
    "undesirable_weight": ("uniform", 0.1, 3.0, 0.0),
    "clip_eps": ("uniform", 0.05, 0.6, 0.25),
    "clip_eps_low": ("uniform", 0.05, 0.6, 0.5),
    "clip_eps_high": ("uniform", 0.05, 1.5, 0.5),
    "dual_clip": ("uniform", 1.1, 2.0, 0.5),  # log c within the sampled log-ratios, so the dual clip binds
    "log_ratio_max": ("uniform", 0.2, 1.5, 0.5),  # where the sampled log-ratios lie, so the clamp is reached
    "margin": ("uniform", -2.0, 2.0, 0.0),
    "gamma": ("uniform", 0.0, 2.0, 0.0),  # SimPO's target reward margin
    "alpha": ("uniform", 0.0, 2.0, 0.0),  # CPO's NLL weight
    "nll_loss_coef": ("uniform", 0.0, 2.0, 0.0),  # RPO's NLL weight
    # below and above (1 - log 2)/3, where DiscoPOP stops rising through βh = 0; below 0.04 bfloat16 misses its tolerance
    # (near βh = 0 the gradient is a difference of terms of size β/(4τ), rounded at 2^-8)
    "discopop_tau": ("log", 0.04, 0.5, 0.0),
    "temperature": ("log", 0.5, 4.0, 0.0),  # distillation temperature
    "tau_pos": ("log", 0.2, 5.0, 0.0),  # SAPO's gate temperatures
    "tau_neg": ("log", 0.2, 5.0, 0.0),
    "loss_scale_factor": ("uniform", 1.0, 10.0, 0.5),  # the Dr. GRPO constant (off: the padded length)
    "eps": ("log", 1e-8, 1e-2, 0.0),  # the ε added to a group's reward std (GRPO advantages)
}
# Upper ends of the draws in float32 and bfloat16, where rounding alone would exceed the tolerance:
# the rounding of a log-ratio (relative 2^-24 or 2^-8 of log-probs of size ~5) moves βΔ by β times as
# much, and a sigmoid saturates sooner; cDPO's gradient (1-ε)σ(-βh) - εσ(βh) cancels to a fraction
# 1 - 2ε of its terms.
_LOW_PRECISION_MAX = {"beta": 0.5, "label_smoothing": 0.3}
# Gradients below this fraction of the loss's size are compared in absolute terms at that level: in a batch
# whose sigmoids all saturate, torch's σ(1 - σ) rounds at the loss's scale, not at the tiny gradient's.
GRADIENT_FLOOR = 1e-6


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
    seed: int = 0
    param_sets: List[Dict[str, object]] = field(default_factory=list)  # the defaults (or given), then the sampled sets


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
        seeds = sorted({r.seed for r in self.results})
        lines.append(f"parameter sets (#0: defaults or as given; the rest drawn from seed {', '.join(map(str, seeds))}; "
                     "the same --seed replays them):")
        width = max(len(r.entry) for r in self.results) if self.results else 0
        for r in self.results:
            sets = [f"#{k} {format_params(ps) or '-'}" for k, ps in enumerate(r.param_sets)]
            # a few sets per line, so a long list stays readable in a terminal
            rows = [sets[i:i + 3] for i in range(0, len(sets), 3)]
            for i, row in enumerate(rows):
                lines.append(f"  {(r.entry if i == 0 else '').ljust(width)}  {' | '.join(row)}")
        for r in self.results:
            for f in r.failures:
                lines.append(f"FAIL {r.entry}: {f}")
        lines.append(f"{self.passed} passed, {self.failed} failed")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"results": [asdict(r) for r in self.results], "passed": self.passed, "failed": self.failed}, indent=2)


def format_params(params: Mapping[str, object]) -> str:
    """``beta=0.37 desirable_weight=2.1``: numbers to 4 significant digits, parameters that are off (None) left out."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items() if v is not None)


def sample_params(card: Card, rng, fixed: Mapping[str, object], switched_on: Optional[Mapping[str, bool]] = None,
                  dtype: str = "float64") -> Dict[str, object]:
    """One parameter set drawn across the ranges of ``_DRAWS``; ``fixed`` parameters keep their value.

    ``switched_on`` says which optional parameters (dual clip, ...) are set; those not named are
    set with the chance that ``_DRAWS`` gives. A draw the production class refuses (e.g. a
    value loss with only one asymmetric clip width) is drawn again; then with only the first
    switch kept and the other optional parameters off (the unclipped value loss); then with
    every optional parameter left to chance. So every set is one a user could pass.
    """
    switched_on = dict(switched_on or {})
    first = next(iter(switched_on), None)
    for attempt in range(100):
        if attempt == 20:
            switched_on = {name: (on if name == first else False) for name, on in switched_on.items()}
        elif attempt == 40:
            switched_on = {}
        drawn: Dict[str, object] = {}
        for prm in card.params:
            if prm.name in fixed or prm.is_case or prm.name not in _DRAWS:
                continue
            kind, low, high, none_chance = _DRAWS[prm.name]
            if dtype != "float64":
                high = min(high, _LOW_PRECISION_MAX.get(prm.name, high))
            if prm.optional:
                on = switched_on.get(prm.name)
                if not (rng.random() >= none_chance if on is None else on):
                    drawn[prm.name] = None
                    continue
            value = float(np.exp(rng.uniform(np.log(low), np.log(high)))) if kind == "log" else float(rng.uniform(low, high))
            if prm.high is not None:
                value = min(value, prm.high)
            drawn[prm.name] = value
        try:
            values = card.resolve({**fixed, **drawn})
            card.example(card.sample(rng, values), values)  # the production class accepts the set
        except (ValueError, TypeError):
            continue
        return values
    raise RuntimeError(f"{card.name}: no valid parameter set in 100 draws")  # pragma: no cover


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


def _real_params(card: Card, params: Mapping[str, object], symbolic: Sequence[str]) -> Tuple[str, ...]:
    """The parameters kept as symbols: every real one that is set, and those that vary per example."""
    return tuple(sorted({prm.name for prm in card.params if not prm.is_case and params.get(prm.name) is not None} | set(symbolic)))


def _derivation(card: Card, params: Mapping[str, object], case: Mapping[str, str], symbolic: Sequence[str], cache: dict) -> Derivation:
    free = _real_params(card, params, symbolic)
    # the structure (cases, which optional parameters are off) picks the derivation; the numbers do not
    key = (tuple(sorted(case.items())), free)
    if key not in cache:
        values = card.resolve({k: v for k, v in {**params, **case}.items() if k not in free})
        for name in free:
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
        loss, grads = spec.expectation(arrays)
        return loss, grads, abs(loss)
    grads = {k: np.zeros(np.shape(arrays[k])) for k in spec.grad_args}
    loss = magnitude = 0.0
    groups: Dict[tuple, list] = {}
    for term in spec.terms:
        groups.setdefault((term.key(),), []).append(term)
    for (case_key,), terms in groups.items():
        d = _derivation(card, params, dict(case_key), spec.symbolic, cache)
        columns = [np.array([_read(arrays, t.where[v]) for t in terms]) for v in d.variables]
        columns += [np.array([_extra(arrays, t, s, params) for t in terms]) for s in d.symbolic_params]
        weights = np.array([t.weight for t in terms])
        contributions = weights * d.function("loss")(*columns)
        loss += float(np.sum(contributions))
        magnitude += float(np.sum(np.abs(contributions)))
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
    return loss, grads, magnitude


def _extra(arrays, term, name, params):
    """A symbolic parameter's value for one term: per example (a number or a location in the inputs), else the set's."""
    if name not in term.extra:
        return float(params[name])
    value = term.extra[name]
    return _read(arrays, value) if isinstance(value, tuple) else value


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
    if not free:  # every input is also read through a detached copy (straight-through k1+/k3+): nothing to difference
        return 0.0, True
    loss = _run(module, tensors)
    grads = torch.autograd.grad(loss, [tensors[k] for k in free], allow_unused=True)
    directions = [torch.tensor(rng.normal(size=tuple(tensors[k].shape)), dtype=torch.float64, device=device) for k in free]
    analytic = sum(float((g * v).sum()) for g, v in zip(grads, directions) if g is not None)
    magnitude = sum(float((g * v).abs().sum()) for g, v in zip(grads, directions) if g is not None)

    def shifted(sign):
        moved = list(tensors)
        for k, v in zip(free, directions):
            moved[k] = (tensors[k].detach() + sign * FD_STEP * v)
        with torch.no_grad():
            return float(_run(module, moved))

    numeric = (shifted(1) - shifted(-1)) / (2 * FD_STEP)
    # at least 1e-3 of the loss: rounding the loss (relative 1e-16) moves a quotient with step 1e-6 by ~1e-10 of it
    fd_err = abs(numeric - analytic) / max(magnitude, 1e-3 * abs(float(loss.detach())), 1e-12)

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


def parameter_sets(card: Card, seed: int, samples: int = SAMPLES, params: Optional[Mapping[str, object]] = None,
                   dtype: str = "float64") -> Tuple[List[Dict[str, object]], list]:
    """The parameter sets of one entry and, for each, the random stream its batches are drawn from.

    Set 0 is the defaults (or ``params``) with the stream ``default_rng(seed)``; set k is drawn from
    ``default_rng([seed, crc32(name), k])``, which then goes on to draw its batches, so any set
    replays from the seed alone. Every optional parameter (dual clip, clamp, asymmetric widths)
    is switched on in half of the drawn sets.
    """
    fixed = dict(params or {})
    param_sets = [card.resolve(fixed)]
    streams = [np.random.default_rng(seed)]
    name_key = zlib.crc32(card.name.encode())
    plan = np.random.default_rng([seed, name_key])
    optional = [prm.name for prm in card.params if prm.optional and prm.name in _DRAWS and prm.name not in fixed]
    switches = {name: plan.permutation(np.arange(samples) < (samples + 1) // 2) for name in optional}
    for k in range(1, samples + 1):
        rng = np.random.default_rng([seed, name_key, k])
        drawn = sample_params(card, rng, fixed, {name: bool(on[k - 1]) for name, on in switches.items()}, dtype)
        if drawn not in param_sets:  # an entry without parameters to draw runs once
            param_sets.append(drawn)
            streams.append(rng)
    return param_sets, streams


def verify_card(card: Card, device: str = "auto", dtype: str = "float64", seed: int = 0,
                params: Optional[Mapping[str, object]] = None, samples: int = SAMPLES) -> EntryResult:
    """Verify one card (an object; :func:`verify` takes names) at its defaults (or ``params``) and at
    ``samples`` parameter sets drawn from ``seed``, with the parameters in ``params`` held fixed."""
    import torch

    start = time.perf_counter()
    device = resolve_device(device)
    torch_dtype = _torch_dtype(dtype)
    tolerance = TOLERANCES[dtype]
    param_sets, streams = parameter_sets(card, seed, samples, params, dtype)
    cache: dict = {}
    points, max_abs, max_rel, worst, failures = 0, 0.0, 0.0, "-", []
    fd_worst, gradcheck_ok = 0.0, True
    for k, (p, rng) in enumerate(zip(param_sets, streams)):
        tag = f"#{k}" + (f" [{format_params({n: v for n, v in p.items() if not card.param(n).is_case})}]" if k else "")
        for spec in card.batches(rng, p):
            where_set = f"{tag} {spec.label}"
            tensors = _to_torch(spec, torch_dtype, device)
            loss = _run(spec.make_module(device), tensors)
            value = float(loss.detach())
            leaves = [tensors[i] for i in spec.grad_args]
            got = torch.autograd.grad(loss, leaves, allow_unused=True) if loss.requires_grad else [None] * len(leaves)
            arrays = [None if t is None else t.detach().to(torch.float64).cpu().numpy() for t in tensors]
            want_loss, want_grads, loss_scale = _expected(card, p, spec, arrays, cache)
            points += spec.points

            loss_err = abs(value - want_loss)
            loss_rel = loss_err / loss_scale if loss_scale > 0 else loss_err
            if not np.isfinite(value):
                loss_rel = loss_err = float("inf")
            candidates = [(loss_rel, loss_err, f"{where_set}: loss")]
            scale = max([float(np.max(np.abs(g))) for g in want_grads.values() if np.size(g)] + [GRADIENT_FLOOR * loss_scale]) or 1.0
            for i, g in zip(spec.grad_args, got):
                g = np.zeros(np.shape(arrays[i])) if g is None else g.detach().to(torch.float64).cpu().numpy()
                diff = np.abs(g - want_grads[i])
                diff = np.where(np.isfinite(diff), diff, np.inf)
                if diff.size:
                    at = np.unravel_index(int(np.argmax(diff)), diff.shape)
                    candidates.append((float(diff[at]) / scale, float(diff[at]), f"{where_set}: {spec.arg_names[i]}[{', '.join(map(str, at))}]"))
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
                failures.append(f"{where_set}: finite differences differ from autograd by {fd_err:.1e}")
            if not ok:
                failures.append(f"{where_set}: torch.autograd.gradcheck failed")
    shown = [{k: v for k, v in ps.items() if not card.param(k).is_case} for ps in param_sets]  # batches cover every case
    return EntryResult(card.name, device, dtype, points, max_abs, max_rel, worst, fd_worst, gradcheck_ok, tolerance,
                       not failures, time.perf_counter() - start, failures, seed, shown)


def verify(names: Union[str, Card, Iterable[Union[str, Card]], None] = None, device: str = "auto", dtype: str = "float64",
           seed: int = 0, samples: int = SAMPLES, **params) -> Report:
    """Verify entries (names, aliases or card objects; ``None``: all) and return a :class:`Report`.

    Each entry runs at its defaults and at ``samples`` parameter sets drawn from ``seed``
    (printed in the report; the same seed replays them). ``params`` go to every named entry
    and stay fixed in every set (e.g. ``verify("cdpo", beta=0.5)`` draws only the label
    smoothing); ``samples=0`` runs the given parameters alone.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise VerifyError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise VerifyError(f"samples must be a non-negative int, got {samples!r}")
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
    import torch

    # the batches are tiny: a second intra-op thread only adds synchronisation (20x slower on a busy CPU)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return Report([verify_card(c, device, dtype, seed, params, samples) for c in selected])
    finally:
        torch.set_num_threads(threads)
