"""The ``lossviz`` command line: ``main(argv) -> int``; bad arguments exit 2 with one line."""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from contextlib import contextmanager
from typing import Optional, Sequence

from .errors import cli_spelling

# what argparse takes for a negative number (a value, not a flag); its own pattern misses -1e6 and -inf
_NEGATIVE_NUMBER = re.compile(r"^-((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|inf|infinity|nan)$", re.IGNORECASE)


class UsageError(Exception):
    """A user mistake on the command line: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER  # --x-range -1e6 1e6 reads -1e6 as a value

    def error(self, message):  # argparse would print usage and exit; we want one line and status 2
        raise UsageError(message)


class _Once(argparse.Action):
    """An option that may be given once: a second --sweep or --out is refused, not silently dropped."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            shown = " ".join(f"{v:g}" for v in values) if isinstance(values, list) else values
            hint = " (one figure sweeps one parameter; draw one figure per value of the other)" if self.dest == "sweep" else ""
            raise UsageError(f"{option_string} given twice (the second is {shown}){hint}")
        setattr(namespace, self.dest, values)


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed < 2**63:
        raise argparse.ArgumentTypeError(f"must be a whole number in [0, 2^63); got {text!r}")
    return seed


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number; got {text!r}")
    return value


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def parse_card_params(owner: str, params, tokens: Sequence[str], command: str = "", names: Sequence[str] = ()) -> dict:
    """``--beta 0.1 --label-smoothing=0.2`` -> ``{"beta": "0.1", "label_smoothing": "0.2"}``.

    ``params`` are the accepted ``Param`` objects (of one card, or of several for compare) and
    ``owner`` names them in messages; ``command`` and ``names`` (the entries already given) word
    the message for a stray name. Values are validated later by the card (range and type); here
    only the flags are checked. A value may be negative (``--margin -1``).
    """
    from .registry import closest_first

    by_flag = {p.flag: p for p in params}
    given, i = {}, 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("-") or _is_number(token):
            raise UsageError(_stray_message(tokens[i:], command, names))
        flag, has_value, inline = token.partition("=")
        prm = by_flag.get(flag)
        if prm is None:
            if not by_flag:
                raise UsageError(f"{owner} takes no parameters; got {flag}")
            raise UsageError(f"{owner} has no parameter {flag}; valid: {', '.join(closest_first(flag, sorted(by_flag)))}")
        if prm.name in given:
            raise UsageError(f"{flag} given twice ({given[prm.name]} and then {inline if has_value else ' '.join(tokens[i + 1:i + 2])})")
        if has_value:
            value = inline
        elif i + 1 < len(tokens):
            i += 1
            value = tokens[i]
        else:
            raise UsageError(f"{flag} needs a value in {prm.range_text()}")
        given[prm.name] = value
        i += 1
    return given


def _stray_message(rest: Sequence[str], command: str, names: Sequence[str]) -> str:
    """The line for a word where a parameter flag was expected: usually a second entry name."""
    from .cards.base import CardError
    from .registry import get

    words = []
    for token in rest:
        if token.startswith("-") and not _is_number(token):
            break
        words.append(token)
    try:
        for word in words:
            get(word)
    except CardError:
        return f"unexpected argument {words[0]!r}: parameters are flags with a value, e.g. --beta 0.1"
    both = " ".join([*names, *words])
    if command == "plot":
        return f"plot draws one entry; to put {both} on one axis use `lossviz compare {both}`"
    if command == "derive":
        return f"derive takes one entry; got {both} (run `lossviz derive NAME` once per entry)"
    return f"give every entry name before the parameter flags; got {' '.join(words)} after them"


def _card_help(card) -> str:
    lines = [f"{card.name}: {card.title} ({card.production or 'no production class'})", f"lesson: {card.lesson}", "parameters:"]
    lines += [f"  {p.flag} {p.range_text()}  default {p.default}: {p.doc}" for p in card.params] or ["  (none)"]
    return "\n".join(lines)


def _list(args) -> int:
    from .registry import BUILTIN, cards, origin
    from .render import table

    print("\n".join(table(cards())))
    added = [f"{c.name}: {origin(c.name)}" for c in cards() if origin(c.name) != BUILTIN]
    if added:
        print("\nfrom plugins (entry-point group lossviz.cards):\n" + "\n".join(f"  {line}" for line in added))
    return 0


def _derive(args) -> int:
    from .cards.base import CardError
    from .registry import get
    from .render import as_json, as_latex, as_text

    if args.help or not args.name:
        return _entry_help(args)
    try:
        card = get(args.name)
        given = parse_card_params(card.name, card.params, args.params, "derive", [args.name])
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


def _name_part(value) -> str:
    """A value as it appears in a file name: the shortest text that reads back as the same number
    (0.1, 1e-06, 1000000, -1), so two different values never share a name."""
    if isinstance(value, float):
        text = repr(value)
        return (text[:-2] if text.endswith(".0") else text).replace("e+", "e")
    return str(value)


def _stem(parts) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", "_".join(parts))


def _range_part(x_range) -> list:
    return [] if x_range is None else [f"x-range-{_name_part(float(x_range[0]))}-{_name_part(float(x_range[1]))}"]


def _default_stem(req) -> str:
    """``dpo_beta-0.1`` or ``cdpo_beta-0.1_label_smoothing-0-0.1-0.3``: the entry, every parameter
    (swept ones with all their values) and the axis range when one was given."""
    parts = [req.card.name]
    for prm in req.card.params:
        values = [p[prm.name] for p in req.param_sets]
        if values[0] is None:
            continue
        shown = "-".join(_name_part(v) for v in (values if prm.name == req.sweep else values[:1]))
        parts.append(f"{prm.name}-{shown}")
    return _stem(parts + _range_part(req.x_range))


def _compare_stem(names, what, given, x_range) -> str:
    """``compare_dpo_ipo_grad_beta-0.5_x-range--5-5``: everything that changes the figure."""
    parts = ["compare", *names, what]
    for key in sorted(given):
        value = given[key]
        parts.append(f"{key}-{_name_part(float(value)) if _is_number(value) else value}")
    return _stem(parts + _range_part(x_range))


def _parse_sweep(text):
    """``beta=0.1,0.3`` -> ``("beta", ["0.1", "0.3"])``: no empty items, at least two."""
    if text is None:
        return None
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise UsageError(f"--sweep must look like PARAM=v1,v2,...; got {text!r}")
    items = [v.strip() for v in values.split(",")]
    if "" in items:
        raise UsageError(f"--sweep has an empty value in {values!r}: give PARAM=v1,v2,... with no empty items")
    if len(items) < 2:  # one value is no sweep, and its file name would be the plain request's
        raise UsageError(f"--sweep needs at least two values; for one value give --{key.strip().replace('_', '-')} {items[0]}")
    return key.strip(), items  # repeated values and more than len(COLORS) are refused by plots.request


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
    entry_key = None
    if not args.no_cache:
        from .plugins import fingerprint

        entry_key = cache.key({**as_typed, "plugins": fingerprint()})  # a new or edited plugin card misses the cache
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
        given = parse_card_params(card.name, card.params, args.params, "plot", [args.name])
        from .plots import request, resolve_output, styled
        from .plots.lessons import builder

        req = request(card.name, _parse_sweep(args.sweep), args.x_range, **given)
        resolve_output(args.out, args.format, "check")  # a bad --out fails before any drawing
        fig, stem = styled(builder(req.card), req), _default_stem(req)
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
        given = parse_card_params("these entries", union.values(), args.params, "compare", args.names)
        from .plots import compare_figure, resolve_output

        resolve_output(args.out, args.format, "check")
        fig = compare_figure([c.name for c in cards], args.what, args.x_range, **given)
        return _save(args, fig, _compare_stem([c.name for c in cards], args.what, given, args.x_range))
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
    p.add_argument("--out", action=_Once, help="output file; the format comes from its suffix unless --format says otherwise "
                   "(default: a file in the current directory named after the entry and its parameters)")
    p.add_argument("--format", choices=("png", "svg", "pdf"), help="png, svg or pdf")
    p.add_argument("--dpi", type=int, default=default_dpi, help=f"resolution of raster output (default {default_dpi})")
    p.add_argument("--x-range", nargs=2, type=_finite, action=_Once, metavar=("LO", "HI"), help="the axis range (negative values as they are: --x-range -1e6 1e6)")
    p.add_argument("--force", action="store_true", help="replace an existing regular file that lossviz did not write "
                   "(never a directory, device, fifo or symbolic link)")


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
    verify.add_argument("--seed", type=_seed, default=0, help="seed of the sampled parameter sets and random batches, a whole number >= 0 (default 0); the same seed replays the same run")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(run=_verify)

    from .plots.core import COLORS

    plot = sub.add_parser(
        "plot",
        add_help=False,
        help="the lesson figure of one entry: loss and gradient over its natural axis, lesson points marked",
        description="Draw an entry's lesson figure from its stable numpy lowering (torch is not imported). "
        "Parameters are flags named after them (--beta 0.1); `lossviz plot NAME --help` lists them.",
    )
    plot.add_argument("name", nargs="?", help="a loss entry (see `lossviz list`)")
    plot.add_argument("-h", "--help", action="store_true", help="show this help (with NAME: also that entry's flags)")
    plot.add_argument("--sweep", action=_Once, metavar="PARAM=v1,v2,...",
                      help=f"overlay one curve per value of one parameter (2 to {len(COLORS)} distinct values, one colour each)")
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
    from .dynamics.cli import add_parser as add_simulate_parser  # light: torch loads when a simulation runs

    add_simulate_parser(sub)
    return parser


@contextmanager
def _plugin_warnings_on_one_line():
    """A skipped plugin card is reported as one line on stderr (``lossviz: warning: plugin ...``), every time."""
    from .errors import PluginWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", PluginWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, PluginWarning):
                print(f"lossviz: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        with cli_spelling(), _plugin_warnings_on_one_line():  # messages name --flags, not Python argument names
            code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        # `lossviz list | head -1`: the reader has gone; stop quietly, like other Unix tools
        _stdout_to_devnull()
        return 141  # 128 + SIGPIPE, the status a shell reports for such a writer


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a file (captured in tests)
        pass


def _main(argv: Optional[Sequence[str]]) -> int:
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
