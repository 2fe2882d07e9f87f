"""`report --html FILE`: one self-contained page for the person who reads the bill, not the developer.

Totals, a table per customer, and stacked bar charts of tokens (and estimated cost, with the `prices` extra)
per day per customer and per model. The charts are SVG drawn here, on the server side of the page: no
script, no CDN, no font or image to fetch, so the page opens offline, from an e-mail attachment or a
file share, years later, and a Content-Security-Policy that forbids every fetch keeps it that way. Every text
that came from an event (customer ids, model names) is escaped: an id is data, never markup.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Callable

from .pricing import format_cost
from .report_model import time_range
from .report_query import Group, parse_timestamp
from .report_text import footer_notes, selection_note

if TYPE_CHECKING:
    from .report_model import Report

# colours told apart by most colour-blind readers (Okabe-Ito, then greys for the rest)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000", "#999999")
MAX_SERIES = 8  # more than this and a stacked bar is unreadable: the rest are drawn as "other"
MAX_DAYS = 120  # beyond this a bar per day is a smear: the charts switch to a bar per month
CHART_W, CHART_H, LEFT, BOTTOM, TOP = 880, 260, 70, 40, 12

_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1a1a1a}
body{max-width:1000px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}h3{font-size:15px;margin:18px 0 6px}
.meta{color:#555;margin:0 0 4px}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px}table{border-collapse:collapse;margin:6px 0 12px}
th,td{padding:3px 10px;border-bottom:1px solid #e5e5e5;text-align:right}th{background:#f5f5f5}
td.k,th.k{text-align:left}tr.total td{font-weight:600}.legend{list-style:none;padding:0;margin:0 0 8px}
.legend li{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:10px;height:10px;margin-right:4px}
.notes li{margin-bottom:4px;color:#333}svg text{font-size:11px;fill:#444}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def human(value: float) -> str:
    """An axis or card number a person reads at a glance: 1.2k, 3.4M."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}{suffix}"
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def money(value: Decimal | float | None) -> str:
    if value is None:
        return "?"
    return "$" + format_cost(value)


def _buckets(report: Report) -> tuple[str, list[str]]:
    """The chart's x axis: every day (or month) from the first call to the last, gaps included."""
    moments = [m for m in (parse_timestamp(e.get("timestamp")) for e in report.events) if m is not None]
    if not moments:
        return "day", []
    first, last = min(moments).date(), max(moments).date()
    if (last - first).days > MAX_DAYS:
        months, cursor = [], first.replace(day=1)
        while cursor <= last:
            months.append(cursor.strftime("%Y-%m"))
            cursor = (cursor + timedelta(days=32)).replace(day=1)
        return "month", months
    return "day", [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


Metric = Callable[[Group], float]


def _series(
    rows: Sequence[Group], metric: Metric, order: Sequence[str]
) -> tuple[list[str], dict[tuple[str, str], float]]:
    """The series (the first MAX_SERIES of `order` that have a value, the rest as "other") and their values.

    `order` is the same for the token and the cost chart, so a customer keeps its colour on both.
    """
    totals: dict[str, float] = {}
    for row in rows:
        totals[row.key[0]] = totals.get(row.key[0], 0.0) + metric(row)
    ranked = [name for name in order if totals.get(name, 0) > 0]
    keep = ranked[:MAX_SERIES]
    names = keep + (["other"] if len(ranked) > MAX_SERIES else [])
    values: dict[tuple[str, str], float] = {}
    for row in rows:
        name = row.key[0] if row.key[0] in keep else "other"
        if name in names:
            values[(name, row.key[1])] = values.get((name, row.key[1]), 0.0) + metric(row)
    return names, values


def _colour(index: int) -> str:
    return PALETTE[min(index, len(PALETTE) - 1)]


def nice_ceiling(value: float) -> float:
    """The axis top: the next 1, 2, 2.5 or 5 times a power of ten, so ticks at quarters read cleanly."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def _axis(peak: float, fmt: Callable[[float], str], plot_h: float) -> list[str]:
    parts = []
    for i in range(5):
        value = peak * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{CHART_W}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(fmt(value))}</text>')
    return parts


def _bars(
    names: list[str], values: dict[tuple[str, str], float], buckets: list[str], fmt: Callable[[float], str]
) -> list[str]:
    plot_w, plot_h = CHART_W - LEFT, CHART_H - TOP - BOTTOM
    stacks = [sum(values.get((n, b), 0.0) for n in names) for b in buckets]
    peak = nice_ceiling(max(stacks, default=0.0))
    slot = plot_w / max(len(buckets), 1)
    width = max(slot * 0.75, 1.0)
    parts = _axis(peak, fmt, plot_h)
    label_every = max(1, len(buckets) // 12)
    for i, bucket in enumerate(buckets):
        x, base = LEFT + i * slot + (slot - width) / 2, float(TOP + plot_h)
        for j, name in enumerate(names):
            value = values.get((name, bucket), 0.0)
            if value <= 0:
                continue
            height = max(plot_h * value / peak, 0.5)
            base -= height
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{base:.1f}" width="{width:.1f}" height="{height:.1f}" '
                f'fill="{_colour(j)}" data-series="{_e(name)}" data-bucket="{_e(bucket)}">'
                f"<title>{_e(name)}, {_e(bucket)}: {_e(fmt(value))}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + width / 2:.1f}" y="{CHART_H - BOTTOM + 16}" text-anchor="middle">'
                f"{_e(bucket)}</text>"
            )
    return parts


def chart(
    title: str,
    rows: Sequence[Group],
    buckets: list[str],
    metric: Metric,
    fmt: Callable[[float], str],
    order: Sequence[str],
) -> str:
    """One stacked bar chart (rows keyed (series, bucket)) as an inline SVG with its legend."""
    names, values = _series(rows, metric, order)
    if not names or not buckets:
        return f"<h3>{_e(title)}</h3><p class='meta'>nothing to draw</p>"
    legend = "".join(
        f'<li><span class="sw" style="background:{_colour(j)}"></span>{_e(n)}</li>'
        for j, n in enumerate(names)
    )
    body = "".join(_bars(names, values, buckets, fmt))
    return (
        f"<h3>{_e(title)}</h3><ul class='legend'>{legend}</ul>"
        f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{CHART_W}" height="{CHART_H}" '
        f'viewBox="0 0 {CHART_W} {CHART_H}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def _tokens(group: Group) -> float:
    return float(group.totals.total_tokens)


def _cost(group: Group) -> float:
    return float(group.cost or 0)


def _table(report: Report, heads: Sequence[str], rows: Sequence[Group], total: Group) -> str:
    priced = report.prices is not None
    cols = ["calls", "errors", "estimated", "input", "output", "cached", "reasoning", "total"]
    cols += ["cost (est.)"] if priced else []
    head = "".join(f'<th class="k">{_e(h)}</th>' for h in heads) + "".join(f"<th>{_e(c)}</th>" for c in cols)

    def line(key: Sequence[str], group: Group, css: str = "") -> str:
        t = group.totals
        cells = [t.calls, t.errors, t.estimated, *t.tokens().values()]
        tds = "".join(f'<td class="k">{_e(k)}</td>' for k in key) + "".join(f"<td>{c}</td>" for c in cells)
        if priced:
            tds += f"<td>{_e(money(group.cost))}{'*' if group.unpriced else ''}</td>"
        return f'<tr class="{css}">{tds}</tr>'

    body = "".join(line(row.key, row) for row in rows)
    body += line(["TOTAL", *[""] * (len(heads) - 1)], total, "total")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cards(report: Report, total: Group) -> str:
    t = total.totals
    cards = [
        ("calls", f"{t.calls:,}"),
        ("total tokens", human(t.total_tokens)),
        ("input / output", f"{human(t.input_tokens)} / {human(t.output_tokens)}"),
        ("customers", f"{len(t.customers):,}"),
        ("estimated calls", f"{t.estimated:,}"),
    ]
    if report.prices is not None:
        cards.append(("cost (estimate)", money(total.cost) + ("*" if total.unpriced else "")))
    return "".join(f'<div class="card">{_e(k)}<b>{_e(v)}</b></div>' for k, v in cards)


def _charts(report: Report) -> str:
    unit, buckets = _buckets(report)
    parts = []
    metrics: list[tuple[str, Metric, Callable[[float], str]]] = [("tokens", _tokens, human)]
    if report.prices is not None:
        metrics.append(("estimated cost (USD)", _cost, lambda v: money(v)))
    for label, metric, fmt in metrics:
        for split in ("customer", "model"):
            order = [group.key[0] for group in report.grouped([split])[0]]  # biggest first, by tokens
            rows, _ = report.grouped([split, unit])
            parts.append(chart(f"{label} per {unit}, by {split}", rows, buckets, metric, fmt, order))
    return "".join(parts)


def _customer_tables(report: Report) -> str:
    customers, _ = report.grouped(["customer"])
    detail, _ = report.grouped(["customer", "day", "model"])
    by_customer: dict[str, list[Group]] = {}
    for row in detail:
        by_customer.setdefault(row.key[0], []).append(
            Group(key=row.key[1:], totals=row.totals, cost=row.cost, unpriced=row.unpriced)
        )
    parts = []
    for customer in customers:
        mine = by_customer.get(customer.key[0], [])
        parts.append(
            f"<h3>customer {_e(customer.key[0])}</h3>" + _table(report, ["day", "model"], mine, customer)
        )
    return "".join(parts)


def render_html(report: Report) -> str:
    """The whole page as one string: style inline, charts inline, nothing fetched."""

    first, last = time_range(report.events)
    span = "" if first is None or last is None else f", {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC"
    customers, total = report.grouped(["customer"])
    models, _ = report.grouped(["model"])
    notes = "".join(f"<li>{_e(n)}</li>" for n in footer_notes(report))
    sources = ", ".join(report.reading.sources)
    selected = "".join(f"<p class='meta'>{_e(line)}</p>" for line in selection_note(report))
    made = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>OpenAI usage report</title><style>{_STYLE}</style></head><body>"
        "<h1>OpenAI usage report</h1>"
        f"<p class='meta'>{len(report.events)} call(s){_e(span)} from {_e(sources)}</p>{selected}"
        f"<p class='meta'>made {_e(made)} by cmdrdata-autopatch report</p>"
        f"<div class='cards'>{_cards(report, total)}</div>"
        f"<h2>Charts</h2>{_charts(report)}"
        f"<h2>Customers</h2>{_table(report, ['customer'], customers, total)}"
        f"<h2>Models</h2>{_table(report, ['model'], models, total)}"
        f"<h2>Per customer</h2>{_customer_tables(report)}"
        f"<h2>Notes</h2><ul class='notes'>{notes}</ul>"
        "</body></html>\n"
    )
