"""Charts drawn on the server as SVG (no script, no network), for the dashboard and reports."""

from __future__ import annotations

import html
import textwrap


def it_number(value: float, decimals: int = 0) -> str:
    """A number in Italian notation: ``1.234``, ``12,5``."""
    text = f"{value:,.{decimals}f}"
    return text.replace(",", "\0").replace(".", ",").replace("\0", ".")


def _label_lines(label: str, width: int = 34, lines: int = 2) -> list[str]:
    """A label wrapped on at most ``lines`` lines; the last one shortened only if needed."""
    wrapped = textwrap.wrap(label, width) or [""]
    if len(wrapped) <= lines:
        return wrapped
    head = wrapped[: lines - 1]
    rest = " ".join(wrapped[lines - 1 :])
    return [*head, rest[: width - 1] + "…"]


def svg_bars(labels: list[str], values: list[int | None], *, title: str) -> str:
    """A horizontal bar chart (SVG) of non-missing values.

    Labels are wrapped on two lines rather than cut, and two labels that would
    still read the same get a number, so no two bars look alike; the full label
    is in each bar's tooltip.
    """
    items = [(lab, v) for lab, v in zip(labels, values, strict=True) if v is not None][:20]
    if not items:
        return ""
    shown = [_label_lines(lab) for lab, _ in items]
    seen: dict[tuple[str, ...], int] = {}
    for i, lines in enumerate(shown):
        key = tuple(lines)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1 or [tuple(s) for s in shown].count(key) > 1:
            shown[i] = [*lines[:-1], f"{lines[-1]} ({seen[key]})"]
    top = max(v for _, v in items) or 1
    row, label_w, bar_w = 34, 250, 300
    height = row * len(items) + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {label_w + bar_w + 70} {height}" '
        f'role="img" aria-label="{html.escape(title)}" class="raccordo-chart">'
    ]
    for i, ((lab, v), lines) in enumerate(zip(items, shown, strict=True)):
        y = 4 + i * row
        w = max(1.0, bar_w * v / top)
        first_y = y + (17 if len(lines) == 1 else 11)
        tspans = "".join(
            f'<tspan x="{label_w - 6}" y="{first_y + 13 * j}">{html.escape(line)}</tspan>'
            for j, line in enumerate(lines)
        )
        parts.append(
            f'<text font-size="11" text-anchor="end" fill="#17324d">{tspans}</text>'
            f'<rect x="{label_w}" y="{y + 7}" width="{w:.1f}" height="16" fill="#0066cc">'
            f"<title>{html.escape(lab)}: {it_number(v)}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + 20}" font-size="12" '
            f'fill="#17324d">{it_number(v)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
