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


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(print)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lossviz", description=__doc__.splitlines()[0] if __doc__ else None)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"lossviz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    demo = sub.add_parser("demo", help="compute every production loss on a small example batch and print it")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return 2
        return args.run(args)
    except UsageError as exc:
        print(f"lossviz: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
