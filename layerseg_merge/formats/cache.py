"""Checkpoint files named in recipes (``model: daformer.pth``), imported once into a cache by content hash.

Each entry is a model directory under ``cache_root()/mmseg/<sha256 of the .pth>-<weights>/`` with
``layerseg_cache.json``: the sha256 of every file of the entry (checked on each use: a damaged
entry is imported again), the source path and the last use. Imports of one entry are serialised
(a second merge waits for the first instead of failing). After an import the least recently
used entries are removed until the cache fits ``LAYERSEG_CACHE_MAX_GB`` (default 20, ``inf``: no
limit); the entries of the recipe being merged are kept. ``layerseg cache`` lists the entries;
``layerseg cache clear`` removes them. An import's lock file (``locks/``) is removed when the import
ends, whether it succeeded or failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")
MANIFEST = "layerseg_cache.json"
DEFAULT_MAX_GB = 20.0


def cache_root() -> Path:
    """``$LAYERSEG_CACHE``, else ``$XDG_CACHE_HOME/layerseg-merge``, else ``~/.cache/layerseg-merge``."""
    if os.environ.get("LAYERSEG_CACHE"):
        return Path(os.environ["LAYERSEG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "layerseg-merge"


class CacheError(ValueError):
    """A cache that cannot be used as it is; the message names the setting or the path, and what to do."""


def max_bytes() -> int | float:
    """The size policy: ``LAYERSEG_CACHE_MAX_GB`` (GB = 10^9 bytes; 0 keeps only the entries in use; ``inf``, or a
    size beyond any disk, is no limit: ``math.inf``)."""
    text = os.environ.get("LAYERSEG_CACHE_MAX_GB", str(DEFAULT_MAX_GB))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise CacheError(f"LAYERSEG_CACHE_MAX_GB={text!r} is not a size in GB >= 0 (or inf, no limit); unset it for "
                         f"the default ({DEFAULT_MAX_GB:g})")
    return int(value * 1e9) if math.isfinite(value * 1e9) else math.inf


def _not_a_folder(path: Path) -> CacheError:
    """The refusal of a cache whose ``path`` (or a folder above it) is not a folder."""
    blocking = next((p for p in [*reversed(path.parents), path] if os.path.lexists(p) and not p.is_dir()), path)
    needed = "" if blocking == path else f" ({path})"
    return CacheError(f"{blocking} is a file where the import cache needs a folder{needed}; move or remove it, or "
                      "set LAYERSEG_CACHE to another folder")


def folder(name: str, create: bool = False) -> Path:
    """``cache_root() / name``, created if missing (``create``); a CacheError where a file stands in its way."""
    path = cache_root() / name
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        elif any(os.path.lexists(place) and not place.is_dir() for place in (cache_root(), path)):
            raise FileExistsError(path)
    except (FileExistsError, NotADirectoryError):
        raise _not_a_folder(path) from None
    return path


def is_checkpoint_file(path: str) -> bool:
    return path.lower().endswith(CHECKPOINT_SUFFIXES)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    path: Path
    source: str
    size: int
    last_used: float


def _manifest(entry: Path) -> dict | None:
    try:
        data = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def damage(entry: Path) -> str | None:
    """Why the cache entry is not usable (None: every file is there with its recorded checksum)."""
    manifest = _manifest(entry)
    if manifest is None:
        return f"{MANIFEST} is missing or unreadable"
    names = sorted(p.name for p in entry.iterdir() if p.name != MANIFEST)
    if names != sorted(manifest["files"]):
        return f"it holds {names}, not {sorted(manifest['files'])}"
    for name, checksum in manifest["files"].items():
        if _sha256(entry / name) != checksum:
            return f"{name} changed since it was written"
    return None


def _write_manifest(entry: Path, source: str) -> None:
    files = {p.name: _sha256(p) for p in sorted(entry.iterdir()) if p.name != MANIFEST}
    (entry / MANIFEST).write_text(json.dumps({"source": source, "files": files}, indent=1) + "\n")


def is_cache_entry(path: Path) -> bool:
    """A folder this cache wrote (a manifest beside model files): the only thing it ever replaces or removes."""
    return path.is_dir() and (path / MANIFEST).is_file() and (path / "config.json").is_file()


@contextlib.contextmanager
def _serialised(target: Path) -> Iterator[None]:
    """One import of ``target`` at a time, across processes (a second one waits); the lock file is removed after."""
    from layerseg_merge.io.output import _same_file

    lock = folder("locks", create=True) / f"{target.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _same_file(fd, lock):  # else the holder we waited for removed it: lock the next one
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # while locked: a waiter finds it gone and retries
        os.close(fd)


def imported_dir(checkpoint: str | Path, weights: str = "student", log=lambda message: None) -> Path:
    """The model directory of ``checkpoint`` (an mmseg .pth), importing it into the cache the first time."""
    from layerseg_merge.formats.mmseg import MmsegError, content_hash, convert, write_model_dir
    from layerseg_merge.io.output import StagedOutput

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise MmsegError(f"checkpoint {checkpoint} not found (relative paths are resolved from the current "
                         f"directory, {os.getcwd()})")
    max_bytes()  # a bad LAYERSEG_CACHE_MAX_GB fails before the import
    target = folder("mmseg") / f"{content_hash(checkpoint)[:32]}-{weights}"
    with _serialised(target):
        problem = damage(target) if target.exists() else "missing"
        if problem is None:
            os.utime(target / MANIFEST)  # last use, for the size policy
        else:
            if problem != "missing":
                log(f"cache entry {target} is damaged ({problem}); importing {checkpoint} again")
            imported = convert(checkpoint, weights)
            with StagedOutput(target, "dir", overwrite=True, log=log, replaceable=is_cache_entry) as staged:
                write_model_dir(imported, staged.staging)
                _write_manifest(staged.staging, str(checkpoint.resolve()))
                staged.commit()
            log(f"{checkpoint}: {imported.found.describe()}; imported into {target}")
    return target


def entries() -> list[Entry]:
    """The cache's entries, most recently used first."""
    root = folder("mmseg")
    found = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if is_cache_entry(path):
            manifest = _manifest(path) or {}
            size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
            found.append(Entry(path, str(manifest.get("source", "?")), size, (path / MANIFEST).stat().st_mtime))
    return sorted(found, key=lambda e: -e.last_used)


def evict(limit: int, keep: set[Path], log=lambda message: None) -> list[Path]:
    """Remove the least recently used entries (never those in ``keep``) until the cache holds ``limit`` bytes."""
    removed = []
    present = entries()
    total = sum(e.size for e in present)
    for entry in reversed(present):  # least recently used first
        if total <= limit:
            break
        if entry.path in keep:
            continue
        remove(entry.path)
        total -= entry.size
        removed.append(entry.path)
        log(f"removed cache entry {entry.path} ({entry.size / 1e9:.2f} GB, last used "
            f"{time.strftime('%Y-%m-%d', time.localtime(entry.last_used))}) to keep the cache under "
            f"{limit / 1e9:g} GB (LAYERSEG_CACHE_MAX_GB)")
    return removed


def remove(entry: Path) -> None:
    """Remove one entry this cache wrote (refuses anything else)."""
    if not is_cache_entry(entry):
        raise ValueError(f"{entry} is not a layerseg-merge cache entry; nothing was removed")
    shutil.rmtree(entry)


def import_checkpoint_models(data: dict, log=lambda message: None) -> dict[str, str]:
    """Replace the ``.pth`` model paths of a raw recipe by their imported directories (a cache keyed by content);
    returns the map."""
    from layerseg_merge.engine.recipe_yaml import replace_model_paths

    imported: dict[str, str] = {}

    def replace(path: str) -> str:
        if not is_checkpoint_file(path):
            return path
        if path not in imported:
            imported[path] = str(imported_dir(path, log=log))
        return imported[path]

    replace_model_paths(data, replace)
    if imported:
        evict(max_bytes(), keep={Path(p) for p in imported.values()}, log=log)
    return imported
