"""Where `paircap caption` writes its JSON lines: standard output, or a file that is never emptied before its
replacement is whole.

With `--output F` the lines go to `F.partial` beside it as each batch is done, and once every file has its line they
replace F, in input order: a run that stops early (killed, out of memory, an exception) leaves an earlier F as it was.
`--resume` keeps the lines of the files already captioned, in F or in the partial file a stopped run left, and captions
only the rest. A file with an error line is captioned again.
"""

import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from modeling_paircap.file_io_paircap import write_atomic

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"


class CaptionOutputError(Exception):
    """An earlier output that cannot be resumed from (a line that is not a caption record, named by file and line)."""


def partial_path(path: Path) -> Path:
    """`F.partial`: where the lines for `F` are written until every file has one."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


def write_records(records: Iterable[dict], handle: TextIO) -> tuple[int, int]:
    """Write records as JSON lines, each flushed as it comes; returns (captioned, failed) counts."""
    counts = [0, 0]
    for record in records:
        counts["error" in record] += 1
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
    return counts[0], counts[1]


def captioned_lines(path: Path) -> dict[str, str]:
    """
    The lines of an earlier output whose file was captioned, by the file's absolute path (a later line of the same file
    wins). A last line without its newline (the write a kill cut short) is left out; error lines are not kept.

    Raises:
        CaptionOutputError: a complete line that is not a JSON object with a "file" (names the file and line).
    """
    kept: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.endswith("\n"):
                logger.info("%s:%d: an unfinished last line, left out", path, number)
                break
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                message = f"{path}:{number}: not a JSON line ({error.msg}); cannot resume from it"
                raise CaptionOutputError(message) from None
            if not isinstance(record, dict) or not isinstance(record.get("file"), str):
                raise CaptionOutputError(f'{path}:{number}: not a caption record (no "file"); cannot resume from it')
            if "caption" in record:
                kept[os.path.abspath(record["file"])] = line
    return kept


class CaptionOutput:
    """
    The JSON-lines file of one `paircap caption --output F` run: opened (the partial file written, with the lines
    kept by `resume`) before any model loads, so an unwritable output fails first; `todo` are the files still to
    caption; `write` appends their records in any order; `finish` writes F whole, in the order of `files`, and removes
    the partial file. Use it as a context manager: leaving without `finish` closes the partial file, F untouched.
    """

    def __init__(self, path: str | Path, files: Sequence[Path], resume: bool = False):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        earlier: dict[str, str] = {}
        if resume:
            for source in (self.path, self.partial):  # the partial file is the newer: its lines win
                if source.is_file():
                    earlier.update(captioned_lines(source))
        elif self.partial.is_file():
            logger.warning("replacing %s, left by an unfinished run (--resume keeps its captions)", self.partial)
        self._position = {os.path.abspath(file): i for i, file in enumerate(files)}
        kept = [line for file, line in earlier.items() if file in self._position]
        self.kept = len(kept)
        self.todo = [file for file in files if os.path.abspath(file) not in earlier]
        self._handle = self._start(kept)

    def _start(self, lines: list[str]) -> TextIO:
        """Write `lines` to a new partial file, swapped in whole (so the one it replaces is never half-written)."""
        self._replace(self.partial, lines)
        return open(self.partial, "a", encoding="utf-8")

    def write(self, records: Iterable[dict]) -> tuple[int, int]:
        """Append the records of `todo`'s files; returns (captioned, failed) counts."""
        return write_records(records, self._handle)

    def finish(self) -> None:
        """Every file has its line: F is replaced by the partial file's lines in input order."""
        self._handle.close()
        lines = self.partial.read_text(encoding="utf-8").splitlines(keepends=True)
        lines.sort(key=lambda line: self._position[os.path.abspath(json.loads(line)["file"])])
        self._replace(self.path, lines)
        self.partial.unlink()

    def _replace(self, target: Path, lines: list[str]) -> None:
        """`target` holds `lines`, written to a sibling first and renamed over it (keeping its permissions)."""

        def write(staged: Path) -> None:
            with open(staged, "w", encoding="utf-8") as handle:
                handle.writelines(lines)
                handle.flush()
                os.fsync(handle.fileno())
            if target.is_file():
                shutil.copymode(target, staged)

        write_atomic(target, write)

    def __enter__(self) -> "CaptionOutput":
        return self

    def __exit__(self, *exc_info) -> None:
        self._handle.close()
