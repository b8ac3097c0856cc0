"""The ``lossviz`` command line: ``main(argv) -> int``; bad arguments exit 2 with one line."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


class UsageError(Exception):
    """A user mistake on the command line: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit; we want one line and status 2
        raise UsageError(message)


def parse_card_params(owner: str, params, tokens: Sequence[str]) -> dict:
    """``--beta 0.1 --label-smoothing=0.2`` -> ``{"beta": "0.1", "label_smoothing": "0.2"}``.

    ``params`` are the accepted ``Param`` objects (of one card, or of several for compare) and
    ``owner`` names them in messages. Values are validated later by the card (range and type);
    here only the flags are checked.
    """
    from .registry import closest_first

    by_flag = {p.flag: p for p in params}
    flags = {flag: p.name for flag, p in by_flag.items()}
    given, i = {}, 0
    while i < len(tokens):
        token = tokens[i]
        flag, _, inline = token.partition("=")
        if flag not in flags:
            valid = ", ".join(closest_first(flag, sorted(flags))) or "(this loss has no parameters)"
            raise UsageError(f"{owner} has no parameter {flag}; valid: {valid}")
        if inline:
            value = inline
        elif i + 1 < len(tokens):
            i += 1
            value = tokens[i]
        else:
            raise UsageError(f"{flag} needs a value in {by_flag[flag].range_text()}")
        given[flags[flag]] = value
        i += 1
    return given


def _card_help(card) -> str:
    lines = [f"{card.name}: {card.title} ({card.production or 'no production class'})", f"lesson: {card.lesson}", "parameters:"]
    lines += [f"  {p.flag} {p.range_text()}  default {p.default}: {p.doc}" for p in card.params] or ["  (none)"]
    return "\n".join(lines)


def _list(args) -> int:
    from .registry import cards
    from .render import table

    print("\n".join(table(cards())))
    return 0


def _derive(args) -> int:
    from .cards.base import CardError
    from .registry import get
    from .render import as_json, as_latex, as_text

    if args.help or not args.name:
        return _entry_help(args)
    try:
        card = get(args.name)
        given = parse_card_params(card.name, card.params, args.params)
        from .cards.base import Derivation

        derivation = Derivation(card, card.resolve(given, symbolic=not args.defaults))
        render = {"text": as_text, "latex": as_latex, "json": as_json}[args.format]
        print(render(derivation))
    except CardError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _plot_entry(args) -> int:
    if args.help or not args.name:
        return _entry_help(args)
    return _plot(args)


def _entry_help(args) -> int:
    """`lossviz derive|plot [NAME] --help`: the command's help, then the entry's own flags; no NAME is exit 2."""
    print(args.parser.format_help())
    if args.name:
        print(_card_help(_get_or_usage(args.name)))
    return 0 if args.help else 2


def _get_or_usage(name):
    from .cards.base import CardError
    from .registry import get

    try:
        return get(name)
    except CardError as exc:
        raise UsageError(str(exc)) from None


def _verify(args) -> int:
    from .verification import TOLERANCES, VerifyError, verify

    if args.all and args.names:
        raise UsageError("give entry names or --all, not both")
    if not args.all and not args.names:
        raise UsageError("give entry names to verify (see `lossviz list`) or --all")
    try:
        report = verify(None if args.all else args.names, device=args.device, dtype=args.dtype, seed=args.seed)
    except VerifyError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(report.to_json())
    else:
        print(f"tolerance (relative, loss and gradients) for {args.dtype}: {TOLERANCES[args.dtype]:.0e}; "
              "finite differences and gradcheck run in float64 on the same device")
        print(report.table())
    return 0 if report.ok else 1


def _default_stem(req) -> str:
    """``dpo_beta-0.1`` or ``cdpo_beta-0.1_label_smoothing-0-0.1-0.3``: the entry and its parameters."""
    import re

    parts = [req.card.name]
    for prm in req.card.params:
        values = [p[prm.name] for p in req.param_sets]
        if values[0] is None:
            continue
        shown = "-".join(f"{v:g}" if isinstance(v, float) else str(v) for v in (values if prm.name == req.sweep else values[:1]))
        parts.append(f"{prm.name}-{shown}")
    return re.sub(r"[^A-Za-z0-9._-]", "_", "_".join(parts))


def _parse_sweep(text):
    if text is None:
        return None
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise UsageError(f"--sweep must look like PARAM=v1,v2,...; got {text!r}")
    return key.strip(), [v.strip() for v in values.split(",") if v.strip()]


def _save(args, fig, stem) -> int:
    from .plots import resolve_output, save

    path, fmt = resolve_output(args.out, args.format, stem)
    print(save(fig, path, fmt, dpi=args.dpi, force=args.force))
    return 0


def _plot_errors():
    from .cards.base import CardError
    from .plots.core import PlotError

    return (CardError, PlotError)


def _plot(args) -> int:
    from .plots import cache
    from .plots.core import PlotError

    as_typed = {"command": "plot", "name": args.name, "params": list(args.params), "sweep": args.sweep, "x_range": args.x_range}
    entry_key = None if args.no_cache else cache.key(as_typed)
    hit = cache.load(entry_key) if entry_key else None
    if hit is not None:  # built before by this very code: render and save, no sympy
        fig, stem = hit
        try:
            return _save(args, fig, stem)
        except PlotError as exc:
            raise UsageError(str(exc)) from None
    from .registry import get

    try:
        card = get(args.name)
        given = parse_card_params(card.name, card.params, args.params)
        from .plots import FIGURES, request, resolve_output, styled

        req = request(card.name, _parse_sweep(args.sweep), args.x_range, **given)
        resolve_output(args.out, args.format, "check")  # a bad --out fails before any drawing
        fig, stem = styled(FIGURES[req.card.name], req), _default_stem(req)
        if entry_key:
            cache.store(entry_key, (fig, stem))
        return _save(args, fig, stem)
    except _plot_errors() as exc:
        raise UsageError(str(exc)) from None


def _compare(args) -> int:
    from .registry import get

    try:
        cards = [get(n) for n in args.names]
        union = {prm.flag: prm for card in reversed(cards) for prm in card.params}  # the first entry's Param wins
        given = parse_card_params("these entries", union.values(), args.params)
        from .plots import compare_figure, resolve_output

        resolve_output(args.out, args.format, "check")
        fig = compare_figure([c.name for c in cards], args.what, args.x_range, **given)
        return _save(args, fig, "compare_" + "_".join(c.name for c in cards) + f"_{args.what}")
    except _plot_errors() as exc:
        raise UsageError(str(exc)) from None


def _gallery(args) -> int:
    from .plots.gallery import gallery

    try:
        written = gallery(args.out, fmt=args.format, force=args.force)
    except _plot_errors() as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {len(written)} files to {args.out}/ (see {args.out}/README.md)")
    print("learn interactively: `jupyter lab notebooks/` (from this repository's .venv: `.venv/bin/jupyter lab notebooks/`)")
    return 0


def _add_output_options(p, default_dpi=150):
    p.add_argument("--out", help="output file; the format comes from its suffix unless --format says otherwise "
                   "(default: a file in the current directory named after the entry and its parameters)")
    p.add_argument("--format", choices=("png", "svg", "pdf"), help="png, svg or pdf")
    p.add_argument("--dpi", type=int, default=default_dpi, help=f"resolution of raster output (default {default_dpi})")
    p.add_argument("--x-range", nargs=2, type=float, metavar=("LO", "HI"), help="the axis range")
    p.add_argument("--force", action="store_true", help="replace an existing file that lossviz did not write")


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(print)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lossviz",
        description="Derive, verify, plot and use the loss functions of LLM post-training "
        "(SFT, KD, DPO/cDPO/IPO, KTO, PPO, reward models, PRM).",
        epilog="Start with `lossviz list`; every command has --help.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"lossviz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    listing = sub.add_parser("list", help="the loss entries: names, families, parameters with defaults, cases")
    listing.set_defaults(run=_list)

    derive = sub.add_parser(
        "derive",
        add_help=False,
        help="the symbolic loss, gradient and lesson facts of one entry",
        description="Derive one loss entry with sympy. Parameters are given as flags named after them "
        "(--beta 0.1, --label-smoothing 0.2; `lossviz derive NAME --help` lists an entry's flags). "
        "Real parameters that are not given stay symbolic, so the facts come out as formulas; "
        "--defaults gives them their default values instead. Case parameters (--arm, --labels, --label) "
        "take their default when not given.",
    )
    derive.add_argument("name", nargs="?", help="a loss entry (see `lossviz list`); aliases and class names work")
    derive.add_argument("-h", "--help", action="store_true", help="show this help (with NAME: also that entry's flags)")
    derive.add_argument("--format", choices=("text", "latex", "json"), default="text", help="output format (default: text)")
    derive.add_argument("--defaults", action="store_true", help="give parameters that were not set their default value")
    derive.set_defaults(run=_derive, takes_card_params=True, parser=derive)
    verify = sub.add_parser(
        "verify",
        help="check that the production classes have the card's gradient (autograd, finite differences, gradcheck)",
        description="Run each entry's production class forward and backward on seeded random batches "
        "(masks, ignored labels, margins, empty KTO sides) and compare the input gradients with the card's "
        "symbolic gradient carried through the reduction; also central finite differences and "
        "torch.autograd.gradcheck in float64. Exit status 1 if anything fails.",
    )
    verify.add_argument("names", nargs="*", metavar="NAME", help="entries to verify (see `lossviz list`)")
    verify.add_argument("--all", action="store_true", help="verify every entry")
    verify.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when available (default)")
    verify.add_argument("--dtype", default="float64", choices=("float64", "float32", "bfloat16"), help="dtype of the production run (default float64)")
    verify.add_argument("--seed", type=int, default=0, help="seed of the random batches (default 0)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(run=_verify)

    plot = sub.add_parser(
        "plot",
        add_help=False,
        help="the lesson figure of one entry: loss and gradient over its natural axis, lesson points marked",
        description="Draw an entry's lesson figure from its stable numpy lowering (torch is not imported). "
        "Parameters are flags named after them (--beta 0.1); `lossviz plot NAME --help` lists them.",
    )
    plot.add_argument("name", nargs="?", help="a loss entry (see `lossviz list`)")
    plot.add_argument("-h", "--help", action="store_true", help="show this help (with NAME: also that entry's flags)")
    plot.add_argument("--sweep", metavar="PARAM=v1,v2,...", help="overlay one curve per value of a parameter")
    plot.add_argument("--no-cache", action="store_true", help="build the figure anew instead of reusing a cached build "
                      "(also: LOSSVIZ_NO_CACHE=1; the cache lives in $LOSSVIZ_CACHE_DIR or ~/.cache/lossviz)")
    _add_output_options(plot)
    plot.set_defaults(run=_plot_entry, takes_card_params=True, parser=plot)

    compare = sub.add_parser(
        "compare",
        help="several losses (or their gradient weights) on one axis",
        description="Overlay entries on their natural axes, e.g. `lossviz compare dpo cdpo ipo kto pairwise`: "
        "the gradient weight -dℓ/dx of each against the margin. Parameter flags apply to every entry that has them.",
    )
    compare.add_argument("names", nargs="+", metavar="NAME")
    compare.add_argument("--what", choices=("loss", "grad"), default="grad", help="plot the loss or the gradient weight (default grad)")
    _add_output_options(compare)
    compare.set_defaults(run=_compare, takes_card_params=True)

    gallery = sub.add_parser("gallery", help="regenerate every lesson figure and figures/README.md")
    gallery.add_argument("--out", default="figures", help="output folder (default: figures)")
    gallery.add_argument("--format", choices=("png", "svg", "pdf"), default="png")
    gallery.add_argument("--force", action="store_true", help="replace files that lossviz did not write")
    gallery.set_defaults(run=_gallery)

    demo = sub.add_parser("demo", help="compute every production loss on a small example batch and print it")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "takes_card_params", False):
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
        args.params = extra  # the loss's own flags (--beta 0.1 ...), checked against its card
        if not getattr(args, "command", None):
            parser.print_help()
            return 2
        return args.run(args)
    except UsageError as exc:
        print(f"lossviz: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
