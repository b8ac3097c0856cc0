"""Text, LaTeX and JSON renderings of a derivation, and the ``lossviz list`` table."""

from __future__ import annotations

import json
from typing import List

import sympy as sp

from .cards.base import Derivation


def _param_value(v):
    if isinstance(v, sp.Symbol):
        return None
    return v


def production_call(d: Derivation) -> str:
    if d.symbolic_params:
        return f"{d.card.production} (give every parameter to see the constructor call)"
    kwargs = ", ".join(f"{k}={v!r}" for k, v in d.card.production_kwargs(d.params).items())
    return f"{d.card.production.split(':')[1]}({kwargs})" if d.card.production and d.card.production.startswith("lossviz") else str(d.card.production)


def as_dict(d: Derivation) -> dict:
    """The ``--format json`` object: every expression as text that ``sympy.sympify`` parses back."""
    return {
        "name": d.name,
        "params": {k: _param_value(v) for k, v in d.params.items()},
        "symbolic": list(d.symbolic_params),
        "variables": list(d.variables),
        "loss": d.plain(d.loss),
        "gradient": {v: d.plain(g) for v, g in d.gradient.items()},
        # inputs whose gradient trains nothing: detached in the loss, or constants of the trainer
        "detached": [v for v in d.variables if v in d.card.detached],
        "constants": [v for v in d.variables if v in d.card.constants and v not in d.card.detached],
        "gradient_notes": _notes(d),
        "latex": {"loss": d.loss_latex, "gradient": d.gradient_latex},
        "facts": {f.name: {"value": d.plain(f.value), "latex": d.latex(f.value), "doc": f.doc} for f in d.facts},
        "production": production_call(d),
        "lesson": d.card.lesson,
    }


def _notes(d: Derivation) -> dict:
    """``{variable: why no gradient trains it}`` for the variables that have such a note."""
    notes = {v: d.card.gradient_note(v) for v in d.variables}
    return {v: note for v, note in notes.items() if note}


def as_json(d: Derivation) -> str:
    return json.dumps(as_dict(d), indent=2, ensure_ascii=False)


def as_text(d: Derivation) -> str:
    lines = [f"{d.name}: {d.card.title}", f"lesson: {d.card.lesson}", f"production: {production_call(d)}"]
    params = ", ".join(f"{k}={'(symbolic)' if isinstance(v, sp.Symbol) else v}" for k, v in d.params.items())
    lines += [f"parameters: {params or '(none)'}", f"variables: {', '.join(d.variables)}", "", "loss:", f"  {sp.sstr(d.loss)}", "", "gradient:"]
    notes = _notes(d)
    for v, g in d.gradient.items():
        lines.append(f"  d/d{v} = {sp.sstr(g)}")
        if v in notes:
            lines.append(f"      {notes[v]}")
    if d.facts:
        lines += ["", "facts (computed by sympy):"]
        for f in d.facts:
            lines += [f"  {f.name} = {sp.sstr(f.value)}", f"      {f.doc}"]
    return "\n".join(lines)


def as_latex(d: Derivation) -> str:
    lines = [f"% {d.name}: {d.card.title}", r"\begin{aligned}", rf"\mathcal{{L}} &= {d.loss_latex} \\"]
    notes = _notes(d)
    for v, g in d.gradient_latex.items():
        note = rf" && \text{{{notes[v]}}}" if v in notes else ""
        lines.append(rf"\frac{{\partial \mathcal{{L}}}}{{\partial {d.card.variable_latex.get(v, v)}}} &= {g}{note} \\")
    lines.append(r"\end{aligned}")
    for f in d.facts:
        lines.append(f"% {f.name}: {f.doc}")
        lines.append(d.latex(f.value))
    return "\n".join(lines)


def table(cards) -> List[str]:
    rows = [("name", "family", "parameters (defaults)", "cases", "production")]
    for c in cards:
        params = ", ".join(f"{p.name}={p.default}" for p in c.params if not p.is_case) or "-"
        rows.append((c.name, c.family, params, c.cases_doc or "-", c.production or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out
