"""CSV for spreadsheets: a text cell that a spreadsheet would run as a formula is escaped.

A cell starting with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return) is a formula to
Excel, LibreOffice and Google Sheets: a scan named ``=HYPERLINK(...)`` or a failure reason
quoting one would run when the summary is opened. Such text cells get a single quote in front
(the OWASP rule for CSV injection); numbers are written as they are. Every CSV the package
writes goes through :func:`csv_text`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

__all__ = ["csv_cell", "csv_text"]

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value) -> str | int | float:
    """``value`` as a safe CSV cell: ``None`` -> ``""``; text that starts a formula gets a leading ``'``."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """The CSV of ``header`` and ``rows``, every cell through :func:`csv_cell`."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([csv_cell(h) for h in header])
    for row in rows:
        w.writerow([csv_cell(v) for v in row])
    return buf.getvalue()
