"""Tensor names, shapes and dtypes of a checkpoint directory, read from headers only.

A small reader of the transformers layouts (``model.safetensors``, sharded
``model-0000k-of-0000n.safetensors`` + index, ``pytorch_model.bin``), written
here so that reading a layout needs neither mergekit nor transformers, and so
that a broken file gives one clear message instead of a library traceback.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import pickletools
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from layerseg_merge.io.errors import CheckpointError  # noqa: F401  (raised here; defined where nothing heavy loads)


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


# How torch's weights-only unpickler words a refused global (torch 2.4 .. 2.13).
_BLOCKED_GLOBAL = re.compile(r"unsupported GLOBAL (\S+) whose module \S+ is blocked")
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_UNPICKLER_DETAIL = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")
# Globals of a plain weights file (tensors, OrderedDict, numpy arrays in the meta data).
_PLAIN_GLOBALS = re.compile(r"(torch|collections|_codecs|numpy)\..+|builtins\.(set|frozenset|bytearray|slice|complex)")
# Modules whose functions run commands or code: a global from one of them is an attack, not a stray object.
_CODE_MODULES = {"os", "posix", "nt", "sys", "subprocess", "builtins", "runpy", "pty", "socket", "shutil",
                 "importlib", "code", "pickle", "marshal", "ctypes", "webbrowser"}
_STRING_OPCODES = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
                   "STRING"}


def _scan_globals(handle, limit: int, found: list[str]) -> None:
    for _ in range(limit):  # torch's legacy format stores several pickles one after the other
        strings: list[str] = []
        memo: dict = {}
        last = None
        for opcode, argument, _ in pickletools.genops(handle):
            name = opcode.name
            if name in ("GLOBAL", "INST"):
                found.append(".".join(str(argument).split(" ", 1)))
            elif name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            if name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                memo[len(memo) if name == "MEMOIZE" else argument] = last
                continue
            last = memo.get(argument) if name in ("GET", "BINGET", "LONG_BINGET") else \
                argument if name in _STRING_OPCODES else None
            if isinstance(last, str | bytes):
                strings.append(last.decode("latin-1") if isinstance(last, bytes) else last)


def pickle_globals(path: Path, limit: int = 8) -> list[str]:
    """The Python globals a pickle file (or a torch zip's ``data.pkl``) names, in order.

    Read with :mod:`pickletools` (opcodes only: nothing is imported or called); the first ``limit``
    pickles of the file.
    """
    found: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            if zipfile.is_zipfile(path):
                archive = stack.enter_context(zipfile.ZipFile(path))
                member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if member is None:
                    return found
                handle = stack.enter_context(archive.open(member))
            else:
                handle = stack.enter_context(open(path, "rb"))
            _scan_globals(handle, limit, found)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # not a pickle, or past the last one
        pass
    return found


def unpickling_refusal(path: Path, error: BaseException) -> str | None:
    """The message for a weights-only load that stopped at a Python global, naming it; None for other failures."""
    text = str(error)
    name = None
    if found := _BLOCKED_GLOBAL.search(text) or _REFUSED_GLOBAL.search(text):
        name = found[1]
    elif isinstance(error, pickle.UnpicklingError):  # torch stopped before any global (pickle protocol 4, say)
        name = next((g for g in pickle_globals(path) if not _PLAIN_GLOBALS.fullmatch(g)), None)
    if name is None:
        return None
    if "." not in name or name.split(".")[0] in _CODE_MODULES:  # torch drops "builtins." (eval, exec)
        return (f"{path}: refused: unpickling it would call {name}, which can run any command on this machine, so it "
                "was not loaded and nothing was run; do not use this file: get the checkpoint from a source you "
                "trust")
    return (f"{path}: loading it needs arbitrary unpickling (it stores the Python object {name} besides tensors and "
            "plain values), which layerseg refuses (nothing was loaded or run); re-save it where it was made with "
            "plain types only, e.g. torch.save({'meta': dict(meta), 'state_dict': dict(ckpt['state_dict'])}, path)")


def unpickling_detail(error: BaseException) -> str:
    """The informative line of a torch load error, without torch's generic weights-only preamble and advice."""
    if found := _UNPICKLER_DETAIL.search(str(error)):
        return found[1]
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if not line.startswith(_TORCH_BOILERPLATE)), type(error).__name__)


def _read_pickle_header(path: Path) -> dict[str, TensorHeader]:
    try:
        state = torch.load(path, map_location="meta", weights_only=True)
    except Exception as error:  # torch raises several types for bad or unsafe pickles
        raise CheckpointError(unpickling_refusal(path, error) or
                              f"{path}: not a PyTorch weights file, or truncated ({unpickling_detail(error)}); "
                              "re-save or re-download the model, or convert it to safetensors") from error
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
    except RecursionError as error:
        raise CheckpointError(f"{path}: nested more deeply than a model config is (the JSON parser gave up); fix "
                              "or re-save the model") from error
    if not isinstance(config, dict) or "model_type" not in config:
        raise CheckpointError(f"{path}: no `model_type`; re-save the model with save_pretrained()")
    return config
