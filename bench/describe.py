"""``python -m bench.run --describe METHOD``: one method's card — its paper and adaptation (the docstring),
role and family, every option with its default, type and allowed values, its search space, and the values
tuned for it on each built-in stream (the shipped files and the user settings folder's). Torch-free: read
from the catalogue's declarations and the tuned-settings files."""
from __future__ import annotations

import difflib


def did_you_mean(name: str, known) -> str:
    """`` did you mean 'x'?`` for a near miss of a known name, else ''."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" did you mean {close[0]!r}?" if close else ""


def allowed(cls, key: str) -> str:
    """What values an option takes, as its checks enforce them (choices, type, bounds)."""
    if key in cls.choices:
        return "one of " + ", ".join(map(str, cls.choices[key]))
    kind = cls.option_type(key)
    if kind is bool:
        return "true/false"
    if kind not in (int, float):
        return "text" + (" or none" if cls.defaults[key] is None else "")
    low, high, low_open = cls.bounds.get(key, (0, None, False))
    parts = [kind.__name__]
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    return " ".join(parts) + (" or none (derived at run time)" if cls.defaults[key] is None else "")


def tuned_values(name: str) -> list[str]:
    """``stream (file): key=value, …`` for every tuned-settings file of a built-in stream that names the
    method (current or not: a stale file says so)."""
    from .errors import BenchError
    from .streams import builtin_streams, load
    from .tuned import read_tuned, settings_dir
    lines = []
    for stream, path in builtin_streams().items():
        spec = load(str(path))
        folders = [settings_dir() / "tuned", path.parent]
        for f in sorted({p for d in folders for p in d.glob(f"{stream}.tuned*.json")}):
            try:
                data = read_tuned(f)
            except BenchError:
                continue                 # a damaged file is bench.run's to report, not the card's
            if name not in data["methods"]:
                continue
            chosen = data["methods"][name]["chosen"]
            values = ", ".join(f"{k}={v}" for k, v in chosen.items()) or "the defaults won"
            stale = "" if data.get("stream_sha256") == spec.sha256 else " (tuned on another version: not applied)"
            where = f.name if f.parent == path.parent else str(f)
            lines.append(f"{f.name.removesuffix('.json').replace('.tuned', '')} ({where}): {values}{stale}")
    return lines


def describe(name: str) -> str:
    from . import catalogue
    cls = catalogue.get(name)
    doc = (cls.__doc__ or "").strip()
    lines = [f"{name} — role {cls.role}, family {cls.family}"
             + (", sees old data (a reference)" if cls.sees_old_data else ""), "", doc, ""]
    if cls.defaults:
        width = max(len(k) for k in cls.defaults)
        lines.append("options (--set " + name + ".OPTION=VALUE):")
        for key, default in cls.defaults.items():
            space = cls.search_space.get(key)
            tune = f"; tuned over {', '.join(map(str, space))}" if space else ""
            lines.append(f"  {key:{width}s}  default {default!r}; {allowed(cls, key)}{tune}")
    else:
        lines.append("options: none")
    if cls.search_space:
        lines += ["", "tuned settings (python -m bench.tune, on validation pairs):"]
        lines += [f"  {t}" for t in tuned_values(name)] or ["  none on the built-in streams"]
    else:
        lines += ["", "nothing to tune (no search space)"]
    return "\n".join(lines)
