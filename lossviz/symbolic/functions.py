r"""Stable primitives as sympy functions: :math:`\sigma`, :math:`\log\sigma` and log-sum-exp.

Each knows its derivative (so ``sympy.diff`` keeps gradients in stable form), its LaTeX, and
its elementary rewrite (``expr.rewrite(sympy.exp)``) for ``solve``/``limit``/``simplify``
and for text that ``sympy.sympify`` parses back.
"""

from __future__ import annotations

import sympy as sp


class Sigmoid(sp.Function):
    r""":math:`\sigma(x) = 1 / (1 + e^{-x})`."""

    nargs = 1
    is_real = True
    is_positive = True

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.Rational(1, 2)
        if x is sp.oo:
            return sp.S.One
        if x is sp.S.NegativeInfinity:
            return sp.S.Zero

    def fdiff(self, argindex=1):
        x = self.args[0]
        return Sigmoid(x) * Sigmoid(-x)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sp.exp(-x))

    def _eval_evalf(self, prec):
        return self._eval_rewrite_as_exp(*self.args)._eval_evalf(prec)

    def _latex(self, printer, exp=None):  # exp: the power sympy's printer puts on σ(x)^n
        tex = r"\sigma\left(%s\right)" % printer._print(self.args[0])
        return tex if exp is None else r"%s^{%s}" % (tex, exp)


class LogSigmoid(sp.Function):
    r""":math:`\log\sigma(x) = -\log(1 + e^{-x})`."""

    nargs = 1
    is_real = True

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return -sp.log(2)

    def fdiff(self, argindex=1):
        return Sigmoid(-self.args[0])

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return -sp.log(1 + sp.exp(-x))

    def _eval_evalf(self, prec):
        return self._eval_rewrite_as_exp(*self.args)._eval_evalf(prec)

    def _latex(self, printer, exp=None):
        tex = r"\log\sigma\left(%s\right)" % printer._print(self.args[0])
        return tex if exp is None else r"\left(%s\right)^{%s}" % (tex, exp)


class LogSumExp(sp.Function):
    r""":math:`\operatorname{LSE}(x_1, \dots, x_n) = \log \sum_k e^{x_k}`."""

    is_real = True

    def fdiff(self, argindex=1):
        # softmax component: e^{x_i - LSE}, bounded by 1 and stable as written
        return sp.exp(self.args[argindex - 1] - self)

    def _eval_rewrite_as_exp(self, *args, **kwargs):
        return sp.log(sp.Add(*[sp.exp(a) for a in args]))

    def _eval_evalf(self, prec):
        return self._eval_rewrite_as_exp(*self.args)._eval_evalf(prec)

    def _latex(self, printer, exp=None):
        tex = r"\operatorname{LSE}\left(%s\right)" % ", ".join(printer._print(a) for a in self.args)
        return tex if exp is None else r"%s^{%s}" % (tex, exp)


STABLE_FUNCTIONS = (Sigmoid, LogSigmoid, LogSumExp)


def elementary(expr: sp.Expr) -> sp.Expr:
    """Rewrite the stable primitives as exp/log (for solve, limit, simplify, and plain text)."""
    if isinstance(expr, sp.MatrixBase):
        return expr.applyfunc(elementary)
    return expr.rewrite(sp.exp) if expr.has(*STABLE_FUNCTIONS) else expr


def _exp_argument(e):
    """Return u if e is ``exp(u)`` or ``k*exp(v)`` with a number k > 0 (then u = v + log k), else None."""
    if isinstance(e, sp.exp):
        return e.args[0]
    if isinstance(e, sp.Mul):
        numbers = [f for f in e.args if f.is_Number]
        rest = [f for f in e.args if not f.is_Number]
        if len(rest) == 1 and isinstance(rest[0], sp.exp) and numbers and sp.Mul(*numbers) > 0:
            # sympy splits exp(x - 0.5) into 0.6065*exp(x); fold the factor back into the exponent
            return rest[0].args[0] + sp.log(sp.Mul(*numbers))
    return None


def _is_one_plus_exp(e):
    """Return u if e is ``1 + exp(u)`` (or ``1 + k*exp(v)``), else None."""
    if isinstance(e, sp.Add) and len(e.args) == 2 and sp.S.One in e.args:
        other = e.args[0] if e.args[1] == 1 else e.args[1]
        return _exp_argument(other)
    return None


def stabilize(expr: sp.Expr) -> sp.Expr:
    """Replace overflow-prone elementary patterns by the stable primitives.

    ``log(1 + e^u) -> -logsigmoid(-u)``, ``1 / (1 + e^u) -> sigmoid(-u)`` and
    ``e^u * sigmoid(-u) -> sigmoid(u)`` (the last is what differentiating ``log(1 + e^u)``
    leaves behind), applied bottom-up.
    """
    if not expr.args:
        return expr
    args = [stabilize(a) for a in expr.args]
    expr = expr.func(*args) if tuple(args) != expr.args else expr
    if isinstance(expr, sp.log):
        u = _is_one_plus_exp(expr.args[0])
        if u is not None:
            return -LogSigmoid(-u)
    if isinstance(expr, sp.Pow) and expr.exp == -1:
        u = _is_one_plus_exp(expr.base)
        if u is not None:
            return Sigmoid(-u)
    if isinstance(expr, sp.Mul):
        exps = [f for f in expr.args if isinstance(f, sp.exp)]
        if len(exps) > 1:
            # exp(a)*exp(-b) would be 0*inf at |a|, |b| = 1e4: evaluate exp(a - b) instead
            rest = [f for f in expr.args if not isinstance(f, sp.exp)]
            merged = sp.exp(sp.Add(*[f.args[0] for f in exps]), evaluate=False)
            return stabilize(sp.Mul(*rest, merged, evaluate=False)) if rest else merged
        factors = list(expr.args)
        for i, f in enumerate(factors):
            if isinstance(f, sp.exp):
                u = f.args[0]
                for j, g in enumerate(factors):
                    if isinstance(g, Sigmoid) and sp.simplify(g.args[0] + u) == 0:
                        rest = [h for k, h in enumerate(factors) if k not in (i, j)]
                        return stabilize(sp.Mul(*rest, Sigmoid(u)))
    return expr
