"""Strict reading of the corpora's caption CSVs: every record is one line with the header's number of fields, or the
read stops with a :class:`ReaderError` naming the file and line.

Python's csv module, left lenient, lets one unterminated quote swallow every following row, up to the next quote
character or the end of the file, into a single caption. None of the caption CSVs read here (AudioCaps, Clotho,
Auto-ACD) has a field spanning lines, so a record that spans lines is a broken row, never a caption. Caption length is
not capped: a merge always spans lines, and a long caption on one line is not malformed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

from datasets_scripts.readers.core import LayoutError, ReaderError


class CaptionCsv:
    """A caption CSV with a header line, read strictly.

    ``columns`` holds the header's names (stripped); iterating gives each row as ``{column: value}``, blank lines
    skipped. Opening checks the header (present, no duplicate names, every ``required`` column); iterating checks
    each record: one line, closed quotes, as many fields as the header, UTF-8. Every failure is a
    :class:`ReaderError` ``"<file>:<line>: <problem>"``.
    """

    def __init__(self, path: Path, required: Sequence[str] = ()):
        self.path = Path(path)
        header = next(_records(self.path), None)
        if header is None:
            raise ReaderError(f"{self.path}:1: empty file, no header line")
        self.columns = [name.strip() for name in header[1]]
        duplicates = sorted({name for name in self.columns if self.columns.count(name) > 1})
        if duplicates:
            raise ReaderError(f"{self.path}:{header[0]}: column(s) {duplicates} appear more than once in the header")
        missing = [name for name in required if name not in self.columns]
        if missing:
            raise ReaderError(f"{self.path}:{header[0]}: missing column(s) {missing}; found {self.columns}")

    def __iter__(self) -> Iterator[dict[str, str]]:
        records = _records(self.path)
        next(records, None)  # the header
        width = len(self.columns)
        for line, fields in records:
            if len(fields) != width:
                hint = " (an unquoted comma?)" if len(fields) > width else ""
                raise ReaderError(
                    f"{self.path}:{line}: {len(fields)} fields where the header has {width} "
                    f"({','.join(self.columns)}){hint}"
                )
            yield dict(zip(self.columns, fields, strict=True))


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` of every non-blank record of a CSV file, each checked to be whole and on one line."""
    try:
        handle = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError as error:
        raise LayoutError(f"{path}: no such caption file") from error
    except OSError as error:
        raise ReaderError(f"{path}: cannot be read ({error.strerror or error})") from error
    with handle:
        reader = csv.reader(handle, strict=True)
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                raise ReaderError(_malformed(path, start, reader.line_num, error)) from None
            except UnicodeDecodeError as error:
                raise ReaderError(f"{path}:{_undecodable_line(path)}: not UTF-8 text ({error.reason})") from None
            if reader.line_num != start:
                raise ReaderError(
                    f"{path}:{start}: a quoted field runs from line {start} to line {reader.line_num} (an unterminated "
                    "quote?); a caption CSV has one row per line"
                )
            if fields:
                yield start, fields


def _malformed(path: Path, start: int, end: int, error: csv.Error) -> str:
    if "unexpected end of data" in str(error):
        return f"{path}:{start}: unterminated quote: the quoted field opened on this line runs to the end of the file"
    if end != start:
        return f"{path}:{start}: malformed row ({error}, on line {end}; an unterminated quote on line {start}?)"
    return f"{path}:{start}: malformed row ({error})"


def _undecodable_line(path: Path) -> int:
    """The number of the first line of ``path`` that is not UTF-8."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1
