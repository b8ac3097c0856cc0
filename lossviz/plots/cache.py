"""A cache of built figures: repeating a `lossviz plot` request skips sympy entirely.

Building a lesson figure costs a sympy import and some symbolic work (about half a second);
rendering and saving it does not need sympy. The built matplotlib Figure is pickled under a
key made of the request *as typed* (entry, parameter flags, sweep, range), a hash of
lossviz's own source files, and the matplotlib and Python versions, so any code change or
upgrade misses the cache. Only successfully built figures are stored; output checks
(format, directory, overwrite protection) run on every call, hit or miss.

Location: ``$LOSSVIZ_CACHE_DIR``, else ``$XDG_CACHE_HOME/lossviz``, else ``~/.cache/lossviz``.
``LOSSVIZ_NO_CACHE=1`` (or ``true``, ``yes``, ``on``; or ``lossviz plot --no-cache``) turns it off;
``0``, ``false``, ``no``, ``off`` or empty leave it on. At most ``MAX_ENTRIES``
figures are kept (the oldest go first). The cache holds pickles written by lossviz for this
user; a file that fails to load is treated as a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Optional

MAX_ENTRIES = 200
_PACKAGE = Path(__file__).resolve().parent.parent


def cache_off() -> bool:
    """``LOSSVIZ_NO_CACHE`` set to anything but empty, 0, false, no or off turns the cache off."""
    return os.environ.get("LOSSVIZ_NO_CACHE", "").strip().lower() not in ("", "0", "false", "no", "off")


def cache_dir() -> Optional[Path]:
    if cache_off():
        return None
    base = os.environ.get("LOSSVIZ_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "lossviz"
    )
    return Path(base) / "figures"


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def key(request: dict) -> str:
    payload = {
        "request": request,
        "source": _source_hash(),
        "matplotlib": metadata.version("matplotlib"),
        "python": list(sys.version_info[:2]),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load(entry_key: str):
    """The cached object for ``entry_key``, or None (a miss, or anything unreadable)."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        return pickle.loads((folder / f"{entry_key}.pickle").read_bytes())
    except Exception:  # a missing, partial or stale file is just a miss
        return None


def store(entry_key: str, value) -> None:
    """Keep ``value`` under ``entry_key``; any failure (read-only home, full disk) is ignored."""
    folder = cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=str(folder), suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, folder / f"{entry_key}.pickle")
        entries = sorted(folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-MAX_ENTRIES]:
            old.unlink()
    except Exception:
        try:
            os.unlink(tmp)
        except Exception:
            pass
