"""Debian packages as a data source: used where installed, else fetched with ``apt-get download`` into a
cache and unpacked there (``dpkg -x``, or in Python without dpkg), atomically; no root needed.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..errors import BenchError

SYSTEM_ROOT = Path("/")     # where installed Debian packages live (tests point it elsewhere)
# Debian package -> a path it installs (relative to the file-system root), used to find it
PACKAGES = {
    "dataset-fashion-mnist": "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz",
    "asterisk-core-sounds-en-wav": "usr/share/asterisk/sounds/en_US_f_Allison/digits/0.wav",
    "asterisk-core-sounds-en": "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz",
    "openclipart-svg": "usr/share/openclipart/svg/food",
}

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_cache(recipe: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cmcl-bench" / recipe


def _how_to_get(pkg: str, cache: Path) -> str:
    return (f"install it (`apt-get install {pkg}`, on Debian or Ubuntu) or put its .deb ({pkg}_*.deb, from "
            f"packages.debian.org) in {cache / 'debs'}/")


def find_local(pkg: str, cache: Path) -> Path | None:
    """The root under which ``pkg``'s files are, without fetching anything: the system (installed package)
    or the cache (unpacked earlier); None if neither has it."""
    need = PACKAGES[pkg]
    for root in (SYSTEM_ROOT, cache / "pkgs" / pkg):
        if (root / need).exists():
            return root
    return None


def missing_packages(cache: Path | str) -> list[str]:
    """Debian packages of the recipe that are neither installed nor unpacked in the cache."""
    cache = Path(cache)
    return [p for p in PACKAGES if find_local(p, cache) is None]


def _download(pkg: str, cache: Path) -> Path:
    debs = cache / "debs"
    have = sorted(debs.glob(f"{pkg}_*.deb")) if debs.is_dir() else []
    if have:
        return have[-1]
    apt = shutil.which("apt-get")
    if apt is None:
        raise BenchError(f"Debian package {pkg} is needed and apt-get is not available here: {_how_to_get(pkg, cache)}")
    debs.mkdir(parents=True, exist_ok=True)
    log(f"downloading Debian package {pkg} (apt-get download)")
    with tempfile.TemporaryDirectory(dir=debs, prefix=".download-") as tmp:
        try:
            r = subprocess.run([apt, "download", pkg], cwd=tmp, capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired:
            raise BenchError(f"apt-get download {pkg} timed out; {_how_to_get(pkg, cache)}") from None
        got = sorted(Path(tmp).glob(f"{pkg}_*.deb"))
        if r.returncode != 0 or not got:
            lines = [ln.strip() for ln in (r.stderr or r.stdout or "").splitlines() if ln.strip().startswith("E:")]
            why = lines[-1] if lines else f"exit code {r.returncode}"
            hint = " (run `apt-get update` first)" if re.search(r"locate|candidate", why) else ""
            raise BenchError(f"could not download Debian package {pkg}: {why}{hint}; {_how_to_get(pkg, cache)}")
        dest = debs / got[0].name
        os.replace(got[0], dest)
    return dest


def _extract_deb_python(deb: Path, dest: Path) -> None:
    """``dpkg -x`` without dpkg: a .deb is an ar archive whose ``data.tar.*`` member holds the files."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise BenchError(f"{deb}: not a Debian package (no ar header)")
        while header := f.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            if name.startswith("data.tar"):
                with tarfile.open(fileobj=io.BytesIO(f.read(size))) as tar:
                    if hasattr(tarfile, "data_filter"):
                        tar.extractall(dest, filter="data")
                    else:  # pragma: no cover - Python < 3.11.4
                        tar.extractall(dest)
                return
            f.seek(size + size % 2, 1)
    raise BenchError(f"{deb}: no data.tar member")


def locate(pkg: str, cache: Path) -> Path:
    """Root of ``pkg``'s files: installed, unpacked in the cache, or fetched and unpacked now (atomically)."""
    root = find_local(pkg, cache)
    if root is not None:
        return root
    deb = _download(pkg, cache)
    target = cache / "pkgs" / pkg
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{pkg}.unpack-"))
    try:
        dpkg = shutil.which("dpkg-deb") or shutil.which("dpkg")
        if dpkg:
            r = subprocess.run([dpkg, "-x", str(deb), str(tmp)], capture_output=True, text=True)
            if r.returncode != 0:
                why = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
                raise BenchError(f"could not unpack {deb} ({why}); delete it and rerun to download it again")
        else:
            _extract_deb_python(deb, tmp)
        if not (tmp / PACKAGES[pkg]).exists():
            raise BenchError(f"{deb} does not contain {PACKAGES[pkg]}: not the expected package {pkg}?")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
