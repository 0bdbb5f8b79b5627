"""Charts drawn on the server as SVG (no script, no network), for the dashboard and reports."""

from __future__ import annotations

import html
import textwrap


def it_number(value: float, decimals: int = 0) -> str:
    """A number in Italian notation: ``1.234``, ``12,5``."""
    text = f"{value:,.{decimals}f}"
    return text.replace(",", "\0").replace(".", ",").replace("\0", ".")


#: Characters per label line, and lines per label, in a bar chart.
LABEL_WIDTH = 34
LABEL_LINES = 3


def _label_lines(label: str, width: int = LABEL_WIDTH, lines: int = LABEL_LINES) -> list[str]:
    """A label wrapped on at most ``lines`` lines, shortened only if it must be.

    What tells rows apart is kept whole: the start (a SIUSS code, ``"A1.09 · …"``) and a
    closing ``"(…)"`` (the area of utenza); the words in between are cut, marked ``…``.
    """
    wrapped = textwrap.wrap(label, width) or [""]
    if len(wrapped) <= lines:
        return wrapped
    tail = ""
    if label.endswith(")") and " (" in label:
        head, _, rest = label.rpartition(" (")
        tail = f" ({rest}"
    else:
        head = label
    words = head.split()
    while len(words) > 1:
        words.pop()
        candidate = textwrap.wrap(" ".join(words) + "…" + tail, width)
        if len(candidate) <= lines:
            return candidate
    head_lines = wrapped[: lines - 1]
    rest = " ".join(wrapped[lines - 1 :])
    return [*head_lines, rest[: width - 1] + "…"]


def svg_bars(labels: list[str], values: list[int | None], *, title: str) -> str:
    """A horizontal bar chart (SVG) of non-missing values.

    Labels are wrapped on up to three lines rather than cut; a longer one loses words
    in the middle, never its start or its closing parenthesis (code and area), and
    two labels that would still read the same get a number, so no two bars look
    alike. The full label is in each bar's tooltip.
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
    most = max(len(lines) for lines in shown)
    row, label_w, bar_w = (34 if most <= 2 else 46), 250, 300
    height = row * len(items) + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {label_w + bar_w + 70} {height}" '
        f'role="img" aria-label="{html.escape(title)}" class="raccordo-chart">'
    ]
    for i, ((lab, v), lines) in enumerate(zip(items, shown, strict=True)):
        y = 4 + i * row
        w = max(1.0, bar_w * v / top)
        bar_y = y + (row - 16) // 2
        # Label lines centred on the bar.
        first_y = bar_y + 11 - round(6.5 * (len(lines) - 1))
        tspans = "".join(
            f'<tspan x="{label_w - 6}" y="{first_y + 13 * j}">{html.escape(line)}</tspan>'
            for j, line in enumerate(lines)
        )
        parts.append(
            f'<text font-size="11" text-anchor="end" fill="#17324d">{tspans}</text>'
            f'<rect x="{label_w}" y="{bar_y}" width="{w:.1f}" height="16" fill="#0066cc">'
            f"<title>{html.escape(lab)}: {it_number(v)}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{bar_y + 13}" font-size="12" '
            f'fill="#17324d">{it_number(v)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
