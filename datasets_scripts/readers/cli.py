"""The readers' command line: read a local corpus, print its reader report, optionally save the pairs.

    paircap read clotho /data/clotho evaluation --save-to data/pairs/clotho_evaluation

Another command line mounts it as a subcommand with :func:`add_arguments` and :func:`run`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from datasets_scripts.readers.core import ReaderReport, with_path_audio
from datasets_scripts.readers.corpora import read_corpus

DESCRIPTION = "Read a local caption corpus and print its reader report."


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the readers' arguments to ``parser`` (a parser of its own or a subcommand's); returns it."""
    parser.add_argument("name", help="audiocaps | clotho | wavcaps | wavcaps/<subset> | autoacd")
    parser.add_argument("root", help="corpus folder, laid out as distributed")
    parser.add_argument("split")
    parser.add_argument("--text-only", action="store_true")
    parser.add_argument("--max-duration", type=float, default=40.0, help="seconds; <= 0 keeps all")
    parser.add_argument("--save-to", help="save the dataset here (Dataset.save_to_disk)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Read the corpus ``args`` names, save it where ``--save-to`` says and print its report (JSON) on stdout."""
    max_duration = args.max_duration if args.max_duration and args.max_duration > 0 else None
    ds = read_corpus(args.name, args.root, args.split, text_only=args.text_only, max_duration=max_duration)
    if args.save_to:
        with_path_audio(ds).save_to_disk(args.save_to)
    print(json.dumps(ReaderReport.from_dataset(ds).to_dict(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog="paircap read", description=DESCRIPTION))


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
