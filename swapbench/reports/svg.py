"""Inline SVG plots for the HTML reports: no plotting backend, no network, one string per plot."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

AXIS = "#64748b"
GRID = "#e2e8f0"
PANEL = "#f8fafc"


def fmt_p(p: float | None) -> str:
    """A p-value to two significant digits. Results store p to 6 decimals, so a stored 0 is below 1e-6:
    shown as such, not as a p of 0."""
    if p is None:
        return "n/a"
    return "< 1e-6" if p < 1e-6 else f"{p:.2g}"


def fmt(value: float | None) -> str:
    """Three decimals for proportions and losses; scientific notation for tiny distances (KID ~1e-4)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value != 0 and abs(value) < 0.01:
        return f"{value:.2e}"
    return f"{value:.3f}"


@dataclass(frozen=True)
class Frame:
    """Maps data coordinates into a plot panel of ``width`` x ``height`` pixels with margins for labels."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int
    height: int
    left: int = 66
    right: int = 12
    top: int = 12
    bottom: int = 34

    def px(self, x: float) -> float:
        span = self.x1 - self.x0 or 1.0
        return self.left + (x - self.x0) / span * (self.width - self.left - self.right)

    def py(self, y: float) -> float:
        span = self.y1 - self.y0 or 1.0
        return self.height - self.bottom - (y - self.y0) / span * (self.height - self.top - self.bottom)

    def panel(self, x_label: str, y_label: str, y_text=fmt, x_text=fmt) -> str:
        w, h = self.width - self.left - self.right, self.height - self.top - self.bottom
        parts = [f'<rect x="{self.left}" y="{self.top}" width="{w}" height="{h}" fill="{PANEL}" stroke="{GRID}"/>']
        for frac in (0.0, 0.5, 1.0):
            y = self.y0 + frac * (self.y1 - self.y0)
            x = self.x0 + frac * (self.x1 - self.x0)
            parts.append(f'<text x="{self.left - 4}" y="{self.py(y) + 3:.1f}" text-anchor="end" class="ax">'
                         f'{escape(y_text(y))}</text>')
            parts.append(f'<text x="{self.px(x):.1f}" y="{self.height - self.bottom + 13}" text-anchor="middle" '
                         f'class="ax">{escape(x_text(x))}</text>')
        parts.append(f'<text x="{self.left + w / 2:.1f}" y="{self.height - 4}" text-anchor="middle" class="ax">'
                     f'{escape(x_label)}</text>')
        parts.append(f'<text x="11" y="{self.top + h / 2:.1f}" text-anchor="middle" class="ax" '
                     f'transform="rotate(-90 11 {self.top + h / 2:.1f})">{escape(y_label)}</text>')
        return "".join(parts)


def _svg(width: int, height: int, body: str, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">{body}</svg>')


def line_chart(xs: list[float], ys: list[float], x_label: str, y_label: str, colour: str = "#2563eb",
               width: int = 370, height: int = 220) -> str:
    """A line chart; a single point is drawn as a dot so a short run still shows its one logged value."""
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and math.isfinite(y)]
    if not points:
        return '<p class="muted">nothing logged</p>'
    lo, hi = min(y for _, y in points), max(y for _, y in points)
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
    x0, x1 = min(x for x, _ in points), max(x for x, _ in points)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    frame = Frame(x0, x1, lo - pad, hi + pad, width, height)
    path = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in points)
    mark = (f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{path}"/>' if len(points) > 1 else
            f'<circle cx="{frame.px(points[0][0]):.1f}" cy="{frame.py(points[0][1]):.1f}" r="3" fill="{colour}"/>')
    return _svg(width, height, frame.panel(x_label, y_label, x_text=lambda v: f"{v:.0f}") + mark, y_label)


def ci_bar(metric: dict, width: int = 150) -> str:
    """A 0..1 track with the 95% CI as a band and the value as a tick (proportions only, else empty)."""
    lo, hi = metric["ci95"]
    value = metric["value"]
    if not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in (lo, hi, value)):
        return ""
    return _svg(width, 14, f'<rect x="0" y="5" width="{width}" height="4" fill="{GRID}"/>'
                f'<rect x="{lo * width:.1f}" y="2" width="{max((hi - lo) * width, 1):.1f}" height="10" fill="#93c5fd"/>'
                f'<rect x="{max(value * width - 1, 0):.1f}" y="0" width="2" height="14" fill="#1e3a8a"/>',
                f"{value:.3f} in [{lo:.3f}, {hi:.3f}]")


@dataclass(frozen=True)
class ScatterPoint:
    label: str
    x: float
    x_ci: tuple[float, float]
    y: float
    y_ci: tuple[float, float]
    href: str | None = None
    colour: str = "#2563eb"


def _point_label(label: str, cx: float, cy: float, width: int) -> str:
    """Right of the point, or left of it near the right edge (where good runs sit at preservation ~1)."""
    left = cx > width * 0.7
    return (f'<text x="{cx - 8 if left else cx + 8:.1f}" y="{cy - 7:.1f}" text-anchor="{"end" if left else "start"}" '
            f'class="pt">{escape(label)}</text>')


def scatter(points: list[ScatterPoint], x_label: str, y_label: str, width: int = 560, height: int = 420,
            targets: tuple[float | None, float | None] = (None, None)) -> str:
    """Points with 95% CI whiskers on both axes on a 0..1 square; dashed lines mark the gate targets."""
    lows = [min(p.x_ci[0], p.y_ci[0]) for p in points] + [t for t in targets if t is not None]
    lo = max(0.0, math.floor(min(lows, default=0.0) * 10) / 10)
    frame = Frame(lo, 1.0, lo, 1.0, width, height, right=24, top=24)
    body = [frame.panel(x_label, y_label)]
    tx, ty = targets
    if tx is not None:
        body.append(f'<line x1="{frame.px(tx):.1f}" y1="{frame.top}" x2="{frame.px(tx):.1f}" '
                    f'y2="{frame.height - frame.bottom}" stroke="#dc2626" stroke-dasharray="4 3"/>')
    if ty is not None:
        body.append(f'<line x1="{frame.left}" y1="{frame.py(ty):.1f}" x2="{frame.width - frame.right}" '
                    f'y2="{frame.py(ty):.1f}" stroke="#dc2626" stroke-dasharray="4 3"/>')
    for p in points:
        cx, cy = frame.px(p.x), frame.py(p.y)
        mark = (f'<line x1="{frame.px(p.x_ci[0]):.1f}" y1="{cy:.1f}" x2="{frame.px(p.x_ci[1]):.1f}" y2="{cy:.1f}" '
                f'stroke="{p.colour}" stroke-opacity="0.5"/>'
                f'<line x1="{cx:.1f}" y1="{frame.py(p.y_ci[0]):.1f}" x2="{cx:.1f}" y2="{frame.py(p.y_ci[1]):.1f}" '
                f'stroke="{p.colour}" stroke-opacity="0.5"/>'
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{p.colour}"><title>{escape(p.label)}: '
                f'{fmt(p.x)}, {fmt(p.y)}</title></circle>'
                f'{_point_label(p.label, cx, cy, width)}')
        body.append(f'<a href="{escape(p.href)}">{mark}</a>' if p.href else mark)
    return _svg(width, height, "".join(body), f"{y_label} vs {x_label}")
