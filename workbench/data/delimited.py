"""Rows of a CSV/TSV file with the line each starts on, read strictly: an unmatched quote, which
pandas and lax csv parsing turn silently into one field holding the rows after it, stops with
the line it opens on."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import WorkbenchError, one_line

__all__ = ["delimited_rows"]


def delimited_rows(lines: Iterable[str], path: Path, delimiter: str, warnings: list[str],
                   long_row: int) -> Iterator[tuple[int, list[str]]]:
    """The rows of a CSV/TSV, each with the line it starts on; a broken quote stops with that line.

    An unmatched opening quote makes every row after it part of one field, silently in pandas
    and in lax csv parsing. Strict parsing catches the usual cases (the next quote is followed
    by text, or the file ends inside the field); rows spanning more than ``long_row`` lines,
    which a quote closed by chance leaves, get one warning.
    """
    # Whole documents can exceed csv's default 128 KB field limit; only ever raise it.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    start, long = 1, []  # `long`: (first line, lines) of rows spanning more than long_row lines
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise _csv_error(path, exc, start, reader.line_num) from None
        if reader.line_num - start + 1 > long_row:
            long.append((start, reader.line_num - start + 1))
        yield start, row
        start = reader.line_num + 1
    if long:
        first, lines_spanned = long[0]
        warnings.append(
            f"file '{path}': {len(long)} row(s) span more than {long_row} lines, the first at line "
            f"{first} ({lines_spanned} lines); if those fields should not hold line breaks, an "
            f"unmatched quote on line {first} merged rows: fix it"
        )


def _csv_error(path: Path, exc: csv.Error, start: int, line: int) -> WorkbenchError:
    message = str(exc)
    if "end of data" in message or "expected after" in message:
        how = "the file ends inside it" if "end of data" in message else (
            f"it closes on line {line} with text after the quote")
        return WorkbenchError(
            f"file '{path}' line {start}: a quoted field that opens on this line is not closed "
            f"properly ({how}), which merges the rows after it; close the quote, or double a "
            'quote that is part of the text ("")'
        )
    return WorkbenchError(f"file '{path}' line {line} is not valid {path.suffix[1:].upper()} "
                          f"({one_line(exc)}); fix that line")
