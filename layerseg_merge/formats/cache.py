"""Checkpoint files named in recipes (``model: daformer.pth``), imported once into a cache by content hash."""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")


def cache_root() -> Path:
    """``$LAYERSEG_CACHE``, else ``$XDG_CACHE_HOME/layerseg-merge``, else ``~/.cache/layerseg-merge``."""
    if os.environ.get("LAYERSEG_CACHE"):
        return Path(os.environ["LAYERSEG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "layerseg-merge"


def is_checkpoint_file(path: str) -> bool:
    return path.lower().endswith(CHECKPOINT_SUFFIXES)


def imported_dir(checkpoint: str | Path, weights: str = "student", log=lambda message: None) -> Path:
    """The model directory of ``checkpoint`` (an mmseg .pth), importing it into the cache the first time."""
    from layerseg_merge.formats.mmseg import MmsegError, content_hash, convert, write_model_dir
    from layerseg_merge.output import StagedOutput

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise MmsegError(f"checkpoint {checkpoint} not found (relative paths are resolved from the current "
                         f"directory, {os.getcwd()})")
    target = cache_root() / "mmseg" / f"{content_hash(checkpoint)[:32]}-{weights}"
    if (target / "config.json").is_file():
        return target
    imported = convert(checkpoint, weights)
    log(f"{checkpoint}: {imported.found.describe()}; imported into {target}")
    with StagedOutput(target, "dir", log=log) as staged:
        write_model_dir(imported, staged.staging)
        staged.commit()
    return target
