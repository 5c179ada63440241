"""Model paths in recipes: local directories or Hugging Face Hub ids resolved through the local cache.

mergekit recipes name models as ``org/name`` (optionally ``org/name@revision``) as
often as paths. A Hub id is resolved with ``huggingface_hub.snapshot_download``:
from the cache when ``HF_HUB_OFFLINE`` is set (or the Hub cannot be reached),
downloading otherwise, as mergekit would. The cache is ``HF_HUB_CACHE`` (or
``HF_HOME/hub``), read when the call is made.
"""

from __future__ import annotations

import os
import re

from layerseg_merge.io.errors import CheckpointError

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TRUE = {"1", "on", "yes", "true"}
PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.md"]


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def is_hub_id(path: str) -> bool:
    """``org/name`` that is not a local path."""
    return bool(HUB_ID.fullmatch(path)) and not os.path.exists(path)


def cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def resolve_model_path(path: str, revision: str | None = None) -> str:
    """A local directory holding the model ``path`` (itself, or a snapshot in the Hub cache)."""
    if os.path.isdir(path):
        return path
    if not is_hub_id(path):
        if os.path.exists(path):
            raise CheckpointError(f"model {path} is not a folder; give a save_pretrained() directory")
        raise FileNotFoundError(f"model path {path!r} not found (relative paths are resolved from the current "
                                f"directory, {os.getcwd()}; Hub ids look like org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    name = f"{path}@{revision}" if revision else path
    where = cache_dir() or "the Hugging Face cache"
    local = f"model path {name!r} not found: no such folder (relative paths are resolved from the current " \
            f"directory, {os.getcwd()}) and, as a Hub id,"
    try:
        return snapshot_download(path, revision=revision, cache_dir=cache_dir(), local_files_only=is_offline(),
                                 allow_patterns=PATTERNS)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        if is_offline():
            raise CheckpointError(f"{local} not in {where} while HF_HUB_OFFLINE is set; download it where the Hub "
                                  f"is reachable (`hf download {path}`) or unset HF_HUB_OFFLINE") from error
        raise CheckpointError(f"{local} not in {where} and the Hub cannot be reached; download it first, or fix "
                              "the path") from error
    except RevisionNotFoundError as error:
        raise CheckpointError(f"{name}: the revision {revision!r} does not exist on the Hub; check the recipe") \
            from error
    except RepositoryNotFoundError as error:
        raise CheckpointError(f"{local} no such model on the Hub (or it is private); check the recipe") from error
    except (HfHubHTTPError, OSError) as error:
        raise CheckpointError(f"{name}: cannot download from the Hub ({str(error).splitlines()[0]}); set "
                              "HF_HUB_OFFLINE=1 to use the local cache") from error
