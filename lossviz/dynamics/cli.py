"""``lossviz simulate``: run a scenario and write its figure, or print its series as JSON.

Kept light: parsing and listing import neither torch nor matplotlib.
"""

from __future__ import annotations

import re
from pathlib import Path

FORMATS = ("png", "svg", "pdf", "json")


def add_parser(subparsers):
    """Add the ``simulate`` command to the ``lossviz`` sub-command parsers."""
    p = subparsers.add_parser(
        "simulate",
        add_help=False,
        help="train toy policies with the production losses and watch the dynamics (margins, KL, ratios)",
        description="Train a small policy (tabular, log-linear or a tiny autoregressive one) with the production "
        "losses and record every step. `lossviz simulate --list` lists the scenarios; "
        "`lossviz simulate SCENARIO --help` shows its losses, parameters, claim and source. "
        "Scenario parameters are flags named after them (--beta 0.5, --ches -0.5).",
    )
    p.add_argument("scenario", nargs="?", help="a scenario (see --list)")
    p.add_argument("-h", "--help", action="store_true", help="show this help (with SCENARIO: also its parameters)")
    p.add_argument("--list", action="store_true", help="list the scenarios")
    p.add_argument("--losses", help="comma-separated losses to compare (default: the scenario's own selection)")
    p.add_argument("--steps", type=int, help="training steps (epochs for trust-region); default: the scenario's")
    p.add_argument("--lr", type=float, help="learning rate; default: the scenario's")
    p.add_argument("--seed", type=int, default=0, help="seed of the reference policy, data and sampling (default 0)")
    p.add_argument("--out", help="output file (default: dynamics-SCENARIO.png in the current directory; "
                   "for --format json: standard output)")
    p.add_argument("--format", choices=FORMATS, help="png, svg, pdf, or json (the series of every run)")
    p.add_argument("--dpi", type=int, default=150, help="resolution of raster output (default 150)")
    p.add_argument("--force", action="store_true", help="replace an existing file that lossviz did not write")
    p.set_defaults(run=run, takes_card_params=True, parser=p)
    return p


def _usage(message):
    from ..cli import UsageError

    return UsageError(message)


def parse_params(item, tokens) -> dict:
    """``--beta 0.5 --label-smoothing=0.2`` -> ``{"beta": "0.5", "label_smoothing": "0.2"}`` (checked later)."""
    from ..errors import closest_first

    flags = {p.flag: p for p in item.params}
    given, i = {}, 0
    while i < len(tokens):
        flag, sep, value = tokens[i].partition("=")
        if flag not in flags:
            valid = ", ".join(closest_first(flag, list(flags))) or "(none)"
            raise _usage(f"scenario {item.name} has no parameter {flag}; valid: {valid}")
        if not sep:
            if i + 1 >= len(tokens):
                raise _usage(f"{flag} needs a value: {flags[flag].range_text()}")
            i += 1
            value = tokens[i]
        given[flags[flag].name] = value
        i += 1
    return given


def listing() -> str:
    from .declare import scenarios

    lines = []
    for item in scenarios():
        params = " ".join(f"{p.flag} {p.default:g}" for p in item.params)
        lines.append(f"{item.name:<26} {item.title}")
        lines.append(f"{'':<26} losses: {','.join(item.losses)} (default {','.join(item.default_losses)})")
        lines.append(f"{'':<26} {params}; --steps {item.steps} --lr {item.lr:g} ({item.optimizer})")
    return "\n".join(lines)


def describe(item) -> str:
    lines = [f"{item.name}: {item.title}", f"policy: {item.policy}", f"data: {item.data}",
             f"losses: {', '.join(item.losses)} (default {','.join(item.default_losses)})",
             f"steps: {item.steps} {item.step_name}s, lr {item.lr:g}, optimizer {item.optimizer}", "parameters:"]
    lines += [f"  {p.flag} {p.range_text()}  default {p.default:g}: {p.doc}" for p in item.params]
    lines += [f"claim: {item.claim}", f"source: {item.source}"]
    return "\n".join(lines)


def default_stem(item, given: dict) -> str:
    parts = [f"dynamics-{item.name}"] + [f"{k}-{v}" for k, v in given.items()]
    return re.sub(r"[^A-Za-z0-9._-]", "_", "_".join(parts))


def run(args) -> int:
    from .declare import DynamicsError, get

    if args.list:
        if args.scenario:
            raise _usage("give a scenario or --list, not both")
        print(listing())
        return 0
    if args.help or not args.scenario:
        print(args.parser.format_help())
        if args.scenario:
            print(describe(_get(args.scenario, get, DynamicsError)))
        return 0 if args.help else 2
    item = _get(args.scenario, get, DynamicsError)
    given = parse_params(item, args.params)
    fmt = args.format
    if fmt is None and args.out:
        suffix = Path(args.out).suffix.lower().lstrip(".")
        if suffix not in FORMATS:
            raise _usage(f"cannot tell the format from --out {args.out!r}: use a .png, .svg, .pdf or .json name, or --format")
        fmt = suffix
    try:
        target = _target(args, fmt, default_stem(item, given))  # a bad --out fails before any training
        from .engine import simulate

        sim = simulate(item, losses=args.losses, steps=args.steps, seed=args.seed, lr=args.lr, **given)
        if fmt == "json":
            text = sim.to_json()
            if target is None:
                print(text)
            else:
                print(_write_text(target, text + "\n", args.force))
            return 0
        from ..plots.core import save

        path, image_format = target
        print(save(sim.figure(), path, image_format, dpi=args.dpi, force=args.force))
        return 0
    except DynamicsError as exc:
        raise _usage(str(exc)) from None
    except ValueError as exc:  # PlotError (output) is a ValueError
        raise _usage(str(exc)) from None


def _get(name, get, error):
    try:
        return get(name)
    except error as exc:
        raise _usage(str(exc)) from None


def _target(args, fmt, stem):
    from ..plots.core import resolve_output

    if fmt == "json":
        if args.out is None:
            return None
        path = Path(args.out)
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise _usage(f"output directory {str(parent)!r} does not exist")
        if path.is_dir():
            raise _usage(f"--out {str(path)!r} is a directory; give a file name")
        return path
    return resolve_output(args.out, fmt, stem)


def _write_text(path: Path, text: str, force: bool) -> Path:
    """Atomic, never over a device, fifo or link, and an existing file lossviz did not write is kept unless ``force``."""
    from ..plots.core import write_atomically

    return write_atomically(path, lambda handle: handle.write(text.encode("utf-8")), force)
