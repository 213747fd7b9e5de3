"""Pure layout arithmetic for the figures: axis zoom around the continual-learning methods, labels placed
without overlap. No matplotlib here (unit-testable, and fast)."""
from __future__ import annotations

import math
from collections.abc import Sequence


def zoom(values: list[float], references: Sequence[float] = (), pad: float = 0.08,
         reach: float = 0.5, min_span: float = 0.0) -> tuple[float, float]:
    """Axis limits around ``values`` (the methods being compared), widened by ``pad`` of their span on each
    side. A reference value is taken in only when it lies within ``reach`` spans of the others; farther ones
    would squeeze the comparison into a band (the figures mark them at the edge instead). The limits are at
    least ``min_span`` apart (widened about their centre), so a tiny spread is not blown up to the axis."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        vals = [v for v in references if v is not None and math.isfinite(v)] or [0.0]
    lo, hi = min(vals), max(vals)
    span = hi - lo or max(abs(hi) * 0.1, 1e-3)
    for r in references:
        if r is not None and math.isfinite(r) and lo - reach * span <= r <= hi + reach * span:
            lo, hi = min(lo, r), max(hi, r)
    span = hi - lo or max(abs(hi) * 0.1, 1e-3)
    lo, hi = lo - pad * span, hi + pad * span
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    return lo, hi


def _overlap(a, b) -> float:
    """Area shared by two boxes (x0, y0, x1, y1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _outside(box, bounds) -> float:
    inner = _overlap(box, bounds)
    return (box[2] - box[0]) * (box[3] - box[1]) - inner


ANGLES = (0, 45, -45, 180, 135, -135, 90, -90, 22, -22, 158, -158, 68, -68, 112, -112)


def place_labels(points: list[tuple[float, float]], sizes: list[tuple[float, float]],
                 bounds: tuple[float, float, float, float], radius: float = 4.0,
                 rings: int = 8, step: float | None = None, obstacles: Sequence[tuple] = ()) -> list[tuple[float, float]]:
    """Label offsets (dx, dy) from each point, in the units of the inputs (display pixels), so that no label
    overlaps another label or any point's marker and every label stays within ``bounds`` where that is
    possible; where it is not, the placement with the least overlap.

    Greedy: the most crowded points choose first, each trying rings of growing distance and, on each ring,
    the directions of ``ANGLES`` (right first, then the diagonals and the left); the first free position
    wins. ``sizes`` are the labels' (width, height); ``radius`` the markers' radius; ``obstacles`` more
    boxes (x0, y0, x1, y1) no label should cover (error bars)."""
    n = len(points)
    if step is None:
        step = max([h for _, h in sizes] + [radius])
    markers = [(x - radius, y - radius, x + radius, y + radius) for x, y in points]
    crowd = [sum(math.hypot(px - x, py - y) < 6 * step for px, py in points) for x, y in points]
    order = sorted(range(n), key=lambda i: (-crowd[i], points[i][0], points[i][1]))
    placed: dict[int, tuple] = {}
    out = [(0.0, 0.0)] * n
    for i in order:
        x, y = points[i]
        w, h = sizes[i]
        best: tuple[float, float, tuple[float, float, float, float]] = (0.0, 0.0, markers[i])
        best_cost = math.inf
        for ring in range(rings):
            r = radius + 2 + ring * step
            for ang in ANGLES:
                c, s = math.cos(math.radians(ang)), math.sin(math.radians(ang))
                cx, cy = x + c * (r + w / 2), y + s * (r + h / 2)
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                cost = (sum(_overlap(box, b) for b in placed.values())
                        + sum(_overlap(box, m) for k, m in enumerate(markers) if k != i)
                        + sum(_overlap(box, o) for o in obstacles)
                        + 4 * _outside(box, bounds))
                if cost < best_cost - 1e-9:
                    best, best_cost = (cx - x, cy - y, box), cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        out[i] = best[:2]
        placed[i] = best[2]
    return out


def spread(positions: list[float], gap: float, low: float = -math.inf, high: float = math.inf) -> list[float]:
    """1-D label positions (labels at the right end of lines): at least ``gap`` apart, each group of labels
    that had to be pulled apart centred on where its members want to be, all within [low, high] where there
    is room. Order is kept (equal positions keep their input order)."""
    order = sorted(range(len(positions)), key=lambda i: positions[i])
    want = [positions[i] for i in order]
    groups: list[list[int]] = []           # runs of consecutive labels, stacked ``gap`` apart

    def start(g):                          # the group's lowest position: its members centred on their wishes
        return sum(want[k] - (k - g[0]) * gap for k in g) / len(g)

    for k in range(len(want)):
        groups.append([k])
        while len(groups) > 1 and start(groups[-2]) + len(groups[-2]) * gap > start(groups[-1]):
            last = groups.pop()
            groups[-1].extend(last)
    ys = [0.0] * len(want)
    for g in groups:
        s0 = start(g)
        for k in g:
            ys[k] = s0 + (k - g[0]) * gap
    n = len(ys)
    ys = [min(y, high - (n - 1 - k) * gap) for k, y in enumerate(ys)]   # the top ones down under the ceiling,
    ys = [max(y, low + k * gap) for k, y in enumerate(ys)]              # the bottom ones up (the floor wins)
    out = [0.0] * len(positions)
    for k, i in enumerate(order):
        out[i] = ys[k]
    return out
