"""One colour and one marker per method, the same in every figure and every results folder.

A method's style depends on its name alone — never on which other methods are plotted — so adding or
filtering methods changes no colour. Each family (``bench.method_spec.FAMILIES``) has one hue: references are grey
and black, the naive baseline brown, regularisers blue, distillation purple, replay orange, null-space
methods green, optimisers magenta. The built-in methods have hand-picked shades (distinct within a family,
and each shade paired with its own marker); a method missing from ``BUILTIN`` (a new file in ``methods/``)
gets a shade of its family's hue and a marker from a hash of its name (never a built-in method's pair), and a
variant label such as
``ewc[strength=10]`` its method's colour, lightened or darkened, with a marker from a hash of the label.
To give a new method a hand-picked style, add it to ``BUILTIN``.

Torch-free: the family comes from the run record (``family``, from the method class), or from ``BUILTIN``
for run files written before families were recorded.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

from ..method_spec import FAMILIES


@dataclass(frozen=True)
class Style:
    family: str
    color: str
    marker: str
    reference: bool = False   # drawn dashed in line figures, outside the zoom of the scatter


# family -> shades (dark to light) a method outside BUILTIN is given one of
PALETTES = {
    "reference": ("#9e9e9e", "#212121", "#616161"),
    "naive": ("#8c564b", "#6d3b2e", "#b07a6c"),
    "regularisation": ("#08306b", "#2171b5", "#4292c6", "#6baed6", "#1c5a99"),
    "distillation": ("#3f007d", "#6a51a3", "#9e9ac8", "#807dba"),
    "replay": ("#a63603", "#d94801", "#f16913", "#fd8d3c", "#e6a04a"),
    "null-space": ("#00441b", "#238b45", "#41ab5d", "#74c476", "#006d2c"),
    "optimiser": ("#ce1256", "#e7298a", "#980043"),
    "other": ("#01665e", "#35978f", "#80cdc1", "#5ab4ac"),
}
MARKERS = "osD^vP*Xph<>"

BUILTIN = {
    "frozen": Style("reference", "#9e9e9e", "x", True),
    "joint": Style("reference", "#212121", "*", True),
    "vanilla": Style("naive", "#8c564b", "o"),
    "ewc": Style("regularisation", "#08306b", "s"),
    "ewc-online": Style("regularisation", "#2171b5", "D"),
    "mas": Style("regularisation", "#4292c6", "^"),
    "si": Style("regularisation", "#6baed6", "v"),
    "l2": Style("regularisation", "#1c5a99", "<"),
    "lwf": Style("distillation", "#3f007d", "o"),
    "co2l": Style("distillation", "#6a51a3", "s"),
    "cila": Style("distillation", "#9e9ac8", "D"),
    "er": Style("replay", "#a63603", "o"),
    "der": Style("replay", "#d94801", "s"),
    "derpp": Style("replay", "#f16913", "D"),
    "gem": Style("replay", "#fd8d3c", "^"),
    "agem": Style("replay", "#e6a04a", "v"),
    "dns": Style("null-space", "#00441b", "P"),
    "dns-official": Style("null-space", "#41ab5d", "X"),
    "gpm": Style("null-space", "#238b45", "^"),
    "nscl": Style("null-space", "#74c476", "v"),
    "cflat": Style("optimiser", "#ce1256", "h"),
}


def _hash(text: str) -> int:
    return zlib.crc32(text.encode())      # stable across processes (str hash is salted)


def _shade(color: str, amount: float) -> str:
    """``amount`` > 0 mixes towards white, < 0 towards black."""
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    target = 255 if amount > 0 else 0
    return "#" + "".join(f"{round(c + (target - c) * abs(amount)):02x}" for c in rgb)


def _new_method_style(name: str, family: str) -> tuple[str, str]:
    """A (shade, marker) of the family's palette for a method outside ``BUILTIN``: the combination its name
    hashes to, or the next one no built-in method of the family has (so a new method never looks like one)."""
    palette = PALETTES[family]
    combos = [(c, m) for m in MARKERS for c in palette]
    taken = {(b.color, b.marker) for b in BUILTIN.values() if b.family == family}
    start = _hash(name) % len(combos)
    return next(combos[(start + k) % len(combos)] for k in range(len(combos))
                if combos[(start + k) % len(combos)] not in taken)


def style(label: str, family: str | None = None, role: str | None = None) -> Style:
    """The style of a table row: a method name or a variant label ``method[k=v,…]``."""
    base = label.split("[", 1)[0]
    known = BUILTIN.get(base)
    fam = family if family in FAMILIES else (known.family if known else "other")
    reference = role in ("lower-reference", "upper-reference") if role else (known.reference if known else False)
    if known is not None and known.family == fam:
        s = Style(fam, known.color, known.marker, reference)
    else:
        s = Style(fam, *_new_method_style(base, fam), reference)
    if label != base:
        h = _hash(label)
        amount = (-0.35, -0.2, 0.2, 0.35)[h % 4]
        marker = MARKERS[(h // 4) % len(MARKERS)]
        if marker == s.marker:
            marker = MARKERS[(MARKERS.index(marker) + 1) % len(MARKERS)]
        s = Style(fam, _shade(s.color, amount), marker, reference)
    return s


def styles(runs: list[dict]) -> dict[str, Style]:
    """row label -> style, for the rows of these run records."""
    from .records import label
    out: dict = {}
    for r in runs:
        out.setdefault(label(r), style(label(r), r.get("family"), r.get("role")))
    return out
