"""Tensor names, shapes and dtypes of a checkpoint directory, read from headers only."""

from __future__ import annotations

import os
from dataclasses import dataclass

import safetensors
import torch
from mergekit.io import ShardedTensorIndex


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


def read_tensor_headers(model_dir: str) -> dict[str, TensorHeader]:
    """Map every tensor name in ``model_dir`` to its shape and dtype (no data is read)."""
    try:
        index = ShardedTensorIndex.from_disk(model_dir)
    except (RuntimeError, FileNotFoundError) as error:
        raise FileNotFoundError(
            f"{model_dir}: no model.safetensors or pytorch_model.bin (nor their .index.json); "
            "save the model with save_pretrained() first"
        ) from error
    headers: dict[str, TensorHeader] = {}
    for shard in index.shards:
        path = os.path.join(index.base_path, shard.filename)
        if index.is_safetensors:
            with safetensors.safe_open(path, framework="pt") as handle:
                for name in handle.keys():
                    piece = handle.get_slice(name)
                    headers[name] = TensorHeader(
                        tuple(piece.get_shape()), _SAFETENSORS_DTYPES[piece.get_dtype()]
                    )
        else:
            state = torch.load(path, map_location="meta", weights_only=True)
            state = state.get("state_dict", state)
            for name, tensor in state.items():
                headers[name] = TensorHeader(tuple(tensor.shape), tensor.dtype)
    return headers
