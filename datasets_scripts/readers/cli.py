"""The readers' command line: read a local corpus, print its reader report, optionally save the pairs.

    paircap read clotho /data/clotho evaluation --save-to data/pairs/clotho_evaluation
    paircap read audiocaps /data/aac val    # aac-datasets' AUDIOCAPS/csv_files_v1/val.csv, AUDIOCAPS/audio_32000Hz/val/
    paircap read audiocaps /data/ac2 val --captions-csv csv_files_v2/val.csv --audio-dir audio/val

Another command line mounts it as a subcommand with :func:`add_arguments` and :func:`run`. A corpus that cannot be read
(unknown name, split or layout, a malformed caption file) raises :class:`ReaderError`, whose message names the file and
line: `paircap read` prints it as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from datasets_scripts.readers.core import ReaderError, ReaderReport, with_path_audio
from datasets_scripts.readers.corpora import read_corpus

DESCRIPTION = "Read a local caption corpus and print its reader report."


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the readers' arguments to ``parser`` (a parser of its own or a subcommand's); returns it."""
    parser.add_argument("name", help="audiocaps | clotho | wavcaps | wavcaps/<subset> | autoacd")
    parser.add_argument("root", help="corpus folder, laid out as distributed or as aac-datasets writes it")
    parser.add_argument("split")
    parser.add_argument("--text-only", action="store_true")
    parser.add_argument("--max-duration", type=float, default=40.0, help="seconds; <= 0 keeps all")
    parser.add_argument(
        "--captions-csv", help="the split's caption CSV (audiocaps, clotho, autoacd), instead of the layout's"
    )
    parser.add_argument(
        "--audio-dir", action="append", help="an audio folder, instead of the layout's (repeat for several)"
    )
    parser.add_argument("--save-to", help="save the dataset here (Dataset.save_to_disk)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Read the corpus ``args`` names, save it where ``--save-to`` says and print its report (JSON) on stdout."""
    options = {
        "text_only": args.text_only,
        "max_duration": args.max_duration if args.max_duration and args.max_duration > 0 else None,
    }
    if args.captions_csv:
        options["captions_csv"] = args.captions_csv
    if args.audio_dir:
        options["audio_dir"] = args.audio_dir
    ds = read_corpus(args.name, args.root, args.split, **options)
    if args.save_to:
        try:
            with_path_audio(ds).save_to_disk(args.save_to)
        except OSError as error:
            raise ReaderError(f"--save-to {args.save_to}: {error.strerror or error}") from error
    print(json.dumps(ReaderReport.from_dataset(ds).to_dict(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog="paircap read", description=DESCRIPTION))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and read; a :class:`ReaderError` propagates to the caller, which prints it."""
    return run(build_parser().parse_args(argv))


def command_line(argv: Sequence[str] | None = None) -> int:
    """:func:`main` as a program: a :class:`ReaderError` is one line on stderr and exit status 2."""
    try:
        return main(argv)
    except ReaderError as error:
        print(f"paircap read: error: {error}", file=sys.stderr)
        return 2
