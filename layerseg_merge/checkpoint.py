"""Tensor names, shapes and dtypes of a checkpoint directory, read from headers only.

A small reader of the transformers layouts (``model.safetensors``, sharded
``model-0000k-of-0000n.safetensors`` + index, ``pytorch_model.bin``), written
here so that reading a layout needs neither mergekit nor transformers, and so
that a broken file gives one clear message instead of a library traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from layerseg_merge.errors import CheckpointError  # noqa: F401  (raised here; defined where nothing heavy loads)


@dataclass(frozen=True)
class TensorHeader:
    shape: tuple[int, ...]
    dtype: torch.dtype


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_HEADER_LIMIT = 100_000_000  # the limit the safetensors library itself enforces


def weight_files(model_dir: str | Path) -> list[Path]:
    """The weight files of a save_pretrained() directory, safetensors preferred."""
    root = Path(model_dir)
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (root / single).is_file():
            return [root / single]
        if (root / index).is_file():
            try:
                weight_map = json.loads((root / index).read_text())["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise CheckpointError(f"{root / index}: not a valid shard index ({error}); re-save the model "
                                      "with save_pretrained()") from error
            return [root / name for name in sorted(set(weight_map.values()))]
    raise CheckpointError(f"{root}: no model.safetensors or pytorch_model.bin (nor their .index.json); "
                          "save the model with save_pretrained() first")


def read_safetensors_header(path: Path) -> dict[str, TensorHeader]:
    """Names, shapes and dtypes from a safetensors header; validates the header against the file size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if not 0 < length <= min(_HEADER_LIMIT, size - 8):
                raise CheckpointError(f"{path}: not a safetensors file (truncated or corrupt header); "
                                      "re-save or re-download the model")
            header = json.loads(handle.read(length))
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read ({error.strerror}); check the file") from error
    except (UnicodeDecodeError, ValueError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path}: corrupt safetensors header ({error}); re-save or re-download the model") \
            from error
    headers: dict[str, TensorHeader] = {}
    data_size = size - 8 - length
    try:
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            start, end = entry["data_offsets"]
            if not 0 <= start <= end <= data_size:
                raise CheckpointError(f"{path}: tensor {name!r} lies beyond the end of the file (truncated); "
                                      "re-save or re-download the model")
            headers[name] = TensorHeader(tuple(entry["shape"]), _SAFETENSORS_DTYPES[entry["dtype"]])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path}: corrupt safetensors header ({error!r}); re-save or re-download the "
                              "model") from error
    return headers


def _read_pickle_header(path: Path) -> dict[str, TensorHeader]:
    try:
        state = torch.load(path, map_location="meta", weights_only=True)
    except Exception as error:  # torch raises several types for bad or unsafe pickles
        raise CheckpointError(f"{path}: cannot be read safely as a weights-only PyTorch file "
                              f"({str(error).splitlines()[0]}); convert it to safetensors") from error
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds no state dict; save the model with save_pretrained()")
    return {name: TensorHeader(tuple(t.shape), t.dtype) for name, t in state.items() if isinstance(t, torch.Tensor)}


def read_tensor_headers(model_dir: str | Path) -> dict[str, TensorHeader]:
    """Map every tensor name in ``model_dir`` to its shape and dtype (no tensor data is read)."""
    headers: dict[str, TensorHeader] = {}
    for path in weight_files(model_dir):
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in the shard index but missing; re-save the model")
        reader = read_safetensors_header if path.suffix == ".safetensors" else _read_pickle_header
        headers.update(reader(path))
    return headers


def load_tensors(model_dir: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a save_pretrained() directory (file names), from its safetensors weights."""
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for path in weight_files(model_dir):
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path}: only safetensors weights can be read here; re-save the model with "
                                  "save_pretrained()")
        tensors.update(load_file(path))
    return tensors


def read_config(model_dir: str | Path) -> dict:
    """``config.json`` as a dict, with a message naming the file when it is missing or malformed."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise CheckpointError(f"{model_dir}: no config.json; pass a save_pretrained() directory") from error
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: cannot read ({error}); check the file") from error
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}); fix or re-save "
                              "the model") from error
    if not isinstance(config, dict) or "model_type" not in config:
        raise CheckpointError(f"{path}: no `model_type`; re-save the model with save_pretrained()")
    return config
