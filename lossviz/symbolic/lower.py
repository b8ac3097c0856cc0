r"""Stable numeric lowering of sympy expressions to numpy, torch and mpmath.

``lambdify`` prints ``log(1 + exp(x))`` literally and overflows at ``x = 1e4``, and it
evaluates every Piecewise branch. Here an expression is first passed through
:func:`~lossviz.symbolic.functions.stabilize`, then compiled into nested closures over a
per-backend table of operations:

- numpy and torch use the stable forms: :math:`\log\sigma(x) = \min(x, 0) - \log(1 + e^{-|x|})`,
  a two-sided :math:`\sigma`, and max-shifted log-sum-exp. Overflow in a Piecewise branch
  that is not selected is discarded silently.
- mpmath evaluates at 50 significant digits, scalar by scalar, and only the Piecewise
  branch that is selected. It is the extreme-value oracle.

torch is imported only when a torch lowering is asked for.
"""

from __future__ import annotations

import operator
from functools import reduce
from typing import Callable, Dict, Sequence

import numpy as np
import sympy as sp

from .functions import LogSigmoid, LogSumExp, Sigmoid, stabilize

MP_DIGITS = 50


class _NumpyOps:
    name = "numpy"

    const = staticmethod(float)
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    abs = staticmethod(np.abs)

    @staticmethod
    def sigmoid(x):
        x = np.asarray(x, dtype=float)
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    @staticmethod
    def logsigmoid(x):
        x = np.asarray(x, dtype=float)
        return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))

    @staticmethod
    def logsumexp(*xs):
        xs = np.broadcast_arrays(*[np.asarray(x, dtype=float) for x in xs])
        top = reduce(np.maximum, xs)
        return top + np.log(sum(np.exp(x - top) for x in xs))

    @staticmethod
    def piecewise(branches, env):
        conds, values = [], []
        with np.errstate(all="ignore"):  # overflow in a branch that is not selected is discarded
            for cond, value in branches:
                conds.append(cond(env))
                values.append(value(env))
        arrays = np.broadcast_arrays(*[np.asarray(v, dtype=float) for v in values], *[np.asarray(c) for c in conds])
        n = len(values)
        return np.select([a.astype(bool) for a in arrays[n:]], arrays[:n], default=np.nan)

    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    logical_and = staticmethod(np.logical_and)
    logical_or = staticmethod(np.logical_or)
    logical_not = staticmethod(np.logical_not)


class _TorchOps:
    name = "torch"

    def __init__(self):
        import torch
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        self.exp, self.log, self.abs = torch.exp, torch.log, torch.abs
        self.sigmoid, self.logsigmoid = torch.sigmoid, F.logsigmoid
        self.minimum, self.maximum = torch.minimum, torch.maximum
        self.logical_and, self.logical_or, self.logical_not = torch.logical_and, torch.logical_or, torch.logical_not

    def const(self, number):
        # a 0-d tensor: usable by torch.exp & co., and (like a Python scalar) it neither
        # promotes a float32 operand nor pins a device
        return self.torch.tensor(float(number), dtype=self.torch.float64)

    def logsumexp(self, *xs):
        return self.torch.logsumexp(self.torch.stack(self.torch.broadcast_tensors(*xs)), dim=0)

    def piecewise(self, branches, env):
        *head, (last_cond, last_value) = branches
        out = last_value(env)
        for cond, value in reversed(head):
            c = cond(env)
            out = value(env) if c is True else self.torch.where(c, value(env), out)
        return out


class _MpmathOps:
    name = "mpmath"

    def __init__(self):
        import mpmath

        self.mp = mpmath.mp

    def const(self, number):
        # called while compiling under workdps(MP_DIGITS), so the constant carries 50 digits
        if not number.is_finite:
            return self.mp.inf if number.is_positive else -self.mp.inf
        return self.mp.mpf(str(sp.Float(number, MP_DIGITS + 5)))

    def exp(self, x):
        return self.mp.exp(x)

    def log(self, x):
        return self.mp.log(x)

    def abs(self, x):
        return abs(x)

    def sigmoid(self, x):
        return 1 / (1 + self.mp.exp(-x))

    def logsigmoid(self, x):
        return -self.mp.log1p(self.mp.exp(-x))

    def logsumexp(self, *xs):
        return self.mp.log(self.mp.fsum(self.mp.exp(x) for x in xs))

    @staticmethod
    def piecewise(branches, env):
        for cond, value in branches:  # only the selected branch is evaluated
            if cond(env):
                return value(env)
        return float("nan")

    minimum = staticmethod(min)
    maximum = staticmethod(max)

    @staticmethod
    def logical_and(a, b):
        return a and b

    @staticmethod
    def logical_or(a, b):
        return a or b

    @staticmethod
    def logical_not(a):
        return not a


_RELATIONS = {
    sp.StrictLessThan: operator.lt,
    sp.LessThan: operator.le,
    sp.StrictGreaterThan: operator.gt,
    sp.GreaterThan: operator.ge,
}


def _compile(e, ops) -> Callable:
    if e.is_Symbol:
        name = e.name
        return lambda env: env[name]
    if e is sp.true or e is sp.false:
        value = bool(e)
        return lambda env: value
    if e.is_Number or e.is_NumberSymbol:
        c = ops.const(e)
        return lambda env: c
    if isinstance(e, sp.Piecewise):
        branches = [(_compile(c, ops), _compile(v, ops)) for v, c in e.args]
        return lambda env: ops.piecewise(branches, env)
    parts = [_compile(a, ops) for a in e.args]
    if isinstance(e, sp.Add):
        return lambda env: reduce(operator.add, (f(env) for f in parts))
    if isinstance(e, sp.Mul):
        return lambda env: reduce(operator.mul, (f(env) for f in parts))
    if isinstance(e, sp.Pow):
        base, power = parts
        if e.exp == -1:
            return lambda env: 1 / base(env)
        if e.exp == 2:
            return lambda env: (lambda b: b * b)(base(env))
        return lambda env: base(env) ** power(env)
    unary = {sp.exp: "exp", sp.log: "log", sp.Abs: "abs", Sigmoid: "sigmoid", LogSigmoid: "logsigmoid"}
    if e.func in unary:
        fn = getattr(ops, unary[e.func])
        (arg,) = parts
        return lambda env: fn(arg(env))
    if isinstance(e, LogSumExp):
        return lambda env: ops.logsumexp(*(f(env) for f in parts))
    if type(e) in _RELATIONS:
        rel, (lhs, rhs) = _RELATIONS[type(e)], parts
        return lambda env: rel(lhs(env), rhs(env))
    if isinstance(e, (sp.And, sp.Or)):
        combine = ops.logical_and if isinstance(e, sp.And) else ops.logical_or
        return lambda env: reduce(combine, (f(env) for f in parts))
    if isinstance(e, sp.Not):
        (arg,) = parts
        return lambda env: ops.logical_not(arg(env))
    if isinstance(e, (sp.Min, sp.Max)):
        combine = ops.minimum if isinstance(e, sp.Min) else ops.maximum
        return lambda env: reduce(combine, (f(env) for f in parts))
    raise NotImplementedError(f"lossviz cannot lower {e.func.__name__} ({e})")


_OPS_CACHE: Dict[str, object] = {}


def _ops(backend: str):
    if backend not in _OPS_CACHE:
        factories = {"numpy": _NumpyOps, "torch": _TorchOps, "mpmath": _MpmathOps}
        if backend not in factories:
            raise ValueError(f"backend must be one of {sorted(factories)}, got {backend!r}")
        _OPS_CACHE[backend] = factories[backend]()
    return _OPS_CACHE[backend]


def lower(expr: sp.Expr, variables: Sequence[str], backend: str = "numpy") -> Callable:
    """Compile ``expr`` into ``f(*values)`` over ``variables`` (names) for ``backend``.

    numpy and torch take arrays/tensors that broadcast; mpmath takes scalars and returns an
    ``mpf`` computed at 50 digits.
    """
    expr = stabilize(sp.sympify(expr))
    free = {s.name for s in expr.free_symbols}
    missing = free - set(variables)
    if missing:
        raise ValueError(f"expression has free symbols {sorted(missing)} that are not among the variables {list(variables)}")
    ops = _ops(backend)
    names = list(variables)

    if backend == "mpmath":
        mp = ops.mp
        with mp.workdps(MP_DIGITS):
            body = _compile(expr, ops)

        def evaluate_mp(*values):
            with mp.workdps(MP_DIGITS):
                return +body({n: mp.mpf(v) for n, v in zip(names, values)})

        return evaluate_mp
    body = _compile(expr, ops)
    if backend == "numpy":

        def evaluate_np(*values):
            with np.errstate(over="ignore", under="ignore"):
                out = body(dict(zip(names, values)))
            shape = np.broadcast_shapes(*[np.shape(v) for v in values]) if values else ()
            return np.broadcast_to(np.asarray(out, dtype=float), shape).copy() if shape else float(out)

        return evaluate_np

    def evaluate_torch(*values):
        torch = ops.torch
        out = body(dict(zip(names, values)))
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        if tensors:  # a constant (e.g. a zero gradient) still gets the inputs' shape, dtype and device
            shape = torch.broadcast_shapes(*[t.shape for t in tensors])
            out = torch.as_tensor(out, dtype=tensors[0].dtype, device=tensors[0].device).expand(shape)
        return out

    return evaluate_torch

