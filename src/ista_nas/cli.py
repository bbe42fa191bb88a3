"""The ``ista-nas`` command: parses flags and calls library functions, nothing more."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__
from .config import PRESETS, SearchConfig, make_config
from .errors import IstaNasError, UserError

log = logging.getLogger("ista_nas")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (problem + where to look) and exit code 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per SearchConfig field; defaults are SUPPRESSed so only explicit flags are seen."""
    for f in dataclasses.fields(SearchConfig):
        if f.name == "preset":
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = type(f.default)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=f.metadata["help"])
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=f.name.upper(),
                                help=f.metadata["help"])


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ista-nas", description="ISTA-NAS: architecture search by sparse coding")
    parser.add_argument("--version", action="version", version=f"ista-nas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    search = commands.add_parser("search", help="search an architecture (two-stage ISTA-NAS)",
                                 description="Search a cell architecture. Start from a preset; every flag overrides it.")
    search.add_argument("--preset", default=argparse.SUPPRESS,
                        help=f"starting settings: {', '.join(PRESETS)} [default: paper]")
    search.add_argument("--out", default=None, help="new run directory [default: runs/search-TIMESTAMP]")
    search.add_argument("--resume", metavar="DIR", default=None,
                        help="continue the run in DIR from its last checkpoint (--epochs and --device may change)")
    _add_config_flags(search)
    return parser


def _search(args: argparse.Namespace) -> None:
    from .methods import two_stage

    given: dict[str, Any] = {k: v for k, v in vars(args).items()
                             if k not in ("command", "verbose", "out", "resume")}
    if args.resume is not None:
        if args.out is not None:
            raise UserError("--out and --resume exclude each other; --resume continues the run where it is")
        two_stage.resume(args.resume, **given)
        return
    if given.get("dataset", "").startswith("folder:"):  # stored absolute, so a resume works from anywhere
        given["dataset"] = "folder:" + str(Path(given["dataset"][len("folder:"):]).expanduser().resolve())
    if given.get("data_dir"):
        given["data_dir"] = str(Path(given["data_dir"]).expanduser().resolve())
    cfg = make_config(**given)
    two_stage.search(cfg, args.out or time.strftime("runs/search-%Y%m%d-%H%M%S"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():
            {"search": _search}[args.command](args)
    except IstaNasError as exc:
        print(f"ista-nas: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ista-nas: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
