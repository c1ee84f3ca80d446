"""HTML building blocks of the report pages: every value is escaped, every page works offline."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

__all__ = ["details", "esc", "fmt", "grid_table", "inline", "link", "page", "readable", "shown", "status", "table"]

_PAGE_CSS = """body{font:14px system-ui,sans-serif;margin:24px;color:#111}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6}.wb-ok{color:#15803d}.wb-failed,.wb-interrupted{color:#b91c1c;font-weight:bold}
td:first-child{white-space:nowrap}.wb-skipped,.wb-pending{color:#6b7280}.wb-running{color:#b45309}code{font-size:12px}
.wb-noise{color:#6b7280;font-style:italic}.wb-differs{color:#1d4ed8;font-weight:bold}
details{margin:8px 0 20px}summary{cursor:pointer;font-weight:bold}"""
_MISSING = "–"


def fmt(value: Any) -> str:
    """A value as text: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def readable(value: Any) -> str:
    """A number rounded for reading (3 significant digits, whole numbers from 100, thousands separated)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _MISSING if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def shown(value: Any, name: str = "", rounded: bool = True) -> str:
    """A cell's HTML: numbers rounded (unless not ``rounded``) and paths shortened (``shortnames.short_value``), the full value as a tooltip."""
    from ..shortnames import short_value

    number = isinstance(value, int | float) and not isinstance(value, bool)
    text = (readable(value) if rounded else str(value)) if number or value is None else short_value(value, name)
    full = fmt(value) if not isinstance(value, float) else repr(value)
    if text == full or value is None:
        return html.escape(text)
    return f'<span title="{html.escape(full)}">{html.escape(text)}</span>'


def esc(value: Any) -> str:
    """:func:`fmt`, HTML-escaped."""
    return html.escape(fmt(value))


def link(href: str, text: str) -> str:
    """A link to a relative path (quoted) with escaped text."""
    return f'<a href="{html.escape(quote(href))}">{html.escape(text)}</a>'


def status(state: str) -> str:
    """A run or notebook status, coloured."""
    return f'<span class="wb-{html.escape(state)}">{html.escape(state)}</span>'


def table(values: Mapping[str, Any], short: bool = False) -> str:
    """A two-column table of names and values; ``short``: numbers rounded and paths shortened (:func:`shown`)."""
    cell = (lambda k, v: shown(v, str(k))) if short else (lambda k, v: esc(v))
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{cell(k, v)}</td></tr>" for k, v in values.items())
    return f"<table>{rows}</table>"


def grid_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table whose header is text and whose cells are already HTML."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def details(summary: str, body_html: str) -> str:
    """A collapsed block (no script): ``summary`` is text, ``body_html`` HTML."""
    return f"<details><summary>{html.escape(summary)}</summary>{body_html}</details>"


def inline(values: Mapping[str, Any]) -> str:
    """``name=value`` lines, escaped."""
    return "<br>".join(f"{html.escape(str(k))}={esc(v)}" for k, v in values.items())


def page(title: str, body: str, css: str = "", script: str = "") -> str:
    """A whole page with the shared stylesheet, more ``css`` and an inline ``script`` (trusted code, no data)."""
    end = f"<script>{script}</script>" if script else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_PAGE_CSS}{css}</style></head><body><h1>{html.escape(title)}</h1>{body}{end}</body></html>\n")
