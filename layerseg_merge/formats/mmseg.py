"""mmsegmentation 0.x UDA checkpoints (DAFormer, HRDA, MIC, EDAPS, SegFormer) <-> model directories.

Facts (container forms, prefixes, names, the MiT -> transformers map with its ``attn.kv``
split, LayerNorm eps) are those of ``shared/reference/mmseg-uda-checkpoints.md``.

An imported directory holds ``config.json`` (a transformers ``SegformerConfig`` whose
``architectures`` names the kind, plus ``layerseg_mmseg``: kind, MiT variant, head
sizes, the mmseg test pipeline and test procedure (``test_pipeline``, ``inference``; see
``formats/mmseg_config.py``) and the checkpoint's original ``meta``), ``model.safetensors``
(the MiT backbone under transformers' SegFormer names, so that it lines up with Hugging
Face SegFormers; the heads under their own mmseg names) and ``preprocessor_config.json``
(the papers' ImageNet normalisation). A plain SegFormer (SegFormerHead) becomes an
ordinary ``SegformerForSemanticSegmentation``.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from layerseg_merge.formats.mmseg_config import ConfigError, read_test_settings
from layerseg_merge.io.checkpoint import CheckpointError, unpickling_detail, unpickling_refusal

UDA_PREFIXES = ("model.", "ema_model.", "imnet_model.")
ARCHITECTURES = {
    "daformer": "DAFormerForSemanticSegmentation",
    "hrda": "HRDAForSemanticSegmentation",
    "edaps": "EDAPSForPanopticSegmentation",
    "segformer": "SegformerForSemanticSegmentation",
}
KIND_NAMES = {"daformer": "DAFormer", "hrda": "HRDA/MIC", "edaps": "EDAPS", "segformer": "mmseg SegFormer"}
# MiT variants (embed dims, depths); every variant has heads (1, 2, 5, 8), sr (8, 4, 2, 1), mlp ratio 4.
MIT_VARIANTS = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
    "b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
    "b3": ((64, 128, 320, 512), (3, 4, 18, 3)),
    "b4": ((64, 128, 320, 512), (3, 8, 27, 3)),
    "b5": ((64, 128, 320, 512), (3, 6, 40, 3)),
}
MIT_HEADS = (1, 2, 5, 8)
# mean/std of the papers' img_norm_cfg (0-255 scale, to_rgb=True) on the 0-1 scale.
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

# Per block: original MiT name -> transformers (legacy, on-disk) SegFormer name.
_BLOCK_NAMES = {
    "norm1": "layer_norm_1", "attn.q": "attention.self.query", "attn.proj": "attention.output.dense",
    "attn.sr": "attention.self.sr", "attn.norm": "attention.self.layer_norm", "norm2": "layer_norm_2",
    "mlp.fc1": "mlp.dense1", "mlp.dwconv.dwconv": "mlp.dwconv.dwconv", "mlp.fc2": "mlp.dense2",
}  # fmt: skip
_BLOCK_NAMES_BACK = {v: k for k, v in _BLOCK_NAMES.items()}
# The NVlabs SegFormerHead -> transformers' SegformerDecodeHead (reference §6.1, rule 8).
_SEGFORMER_HEAD = ((r"decode_head\.linear_c(\d)\.proj\.(.+)",
                    lambda m: f"decode_head.linear_c.{int(m[1]) - 1}.proj.{m[2]}"),
                   (r"decode_head\.linear_fuse\.conv\.(.+)", lambda m: f"decode_head.linear_fuse.{m[1]}"),
                   (r"decode_head\.linear_fuse\.bn\.(.+)", lambda m: f"decode_head.batch_norm.{m[1]}"),
                   (r"decode_head\.linear_pred\.(.+)", lambda m: f"decode_head.classifier.{m[1]}"))  # fmt: skip
_SEGFORMER_HEAD_BACK = ((r"decode_head\.linear_c\.(\d)\.proj\.(.+)",
                         lambda m: f"decode_head.linear_c{int(m[1]) + 1}.proj.{m[2]}"),
                        (r"decode_head\.linear_fuse\.(weight|bias)", lambda m: f"decode_head.linear_fuse.conv.{m[1]}"),
                        (r"decode_head\.batch_norm\.(.+)", lambda m: f"decode_head.linear_fuse.bn.{m[1]}"),
                        (r"decode_head\.classifier\.(.+)", lambda m: f"decode_head.linear_pred.{m[1]}"))  # fmt: skip


class MmsegError(CheckpointError):
    """An mmseg checkpoint that cannot be imported or exported; the message names it and what to do."""


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# ------------------------------------------------------------------------------ reading


def load_container(path: str | Path) -> dict:
    """The checkpoint as ``torch.load(weights_only=True)`` returns it (memory-mapped where possible)."""
    path = Path(path)
    if not path.is_file():
        raise MmsegError(f"{path}: no such checkpoint file")
    try:
        mmap = zipfile.is_zipfile(path)  # torch >= 1.6 files: tensors stay on disk until used
        container = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if refusal := unpickling_refusal(path, error):
            raise MmsegError(refusal) from error
        raise MmsegError(f"{path}: not a PyTorch checkpoint, or truncated (unreadable pickle data: "
                         f"{unpickling_detail(error)}); check the download") from error
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, zipfile.BadZipFile) as error:
        raise MmsegError(f"{path}: not a PyTorch checkpoint, or truncated ({_first_line(error)}); "
                         "check the download") from error
    if not isinstance(container, dict):
        raise MmsegError(f"{path}: holds a {type(container).__name__}, not a checkpoint dict")
    return container


def select_weights(container: dict, path: str | Path, weights: str = "student") -> tuple[OrderedDict, str]:
    """The student (``model.*``) or teacher (``ema_model.*``) tensors without prefix, and the prefix used."""
    state = container.get("state_dict", container)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MmsegError(f"{path}: no state dict of tensors found (expected `state_dict` or a dict of tensors)")
    state = OrderedDict((k.removeprefix("module."), v) for k, v in state.items())
    present = [p for p in UDA_PREFIXES if any(k.startswith(p) for k in state)]
    if weights == "teacher":
        if "ema_model." not in present:
            raise MmsegError(f"{path}: --weights teacher, but the checkpoint holds no ema_model.* weights (a published "
                             "checkpoint keeps only the student); use --weights student")
        prefix = "ema_model."
    elif weights == "student":
        prefix = "model." if "model." in present else ""
        if not prefix and present:
            raise MmsegError(f"{path}: holds {', '.join(present)} weights but no student (model.*); use --weights "
                             "teacher for ema_model.*")
    else:
        raise MmsegError(f"--weights must be student or teacher, not {weights!r}")
    selected = OrderedDict((k[len(prefix):], v) for k, v in state.items()
                           if k.startswith(prefix) and not (prefix == "" and k.startswith(UDA_PREFIXES)))
    return selected, prefix


@dataclass(frozen=True)
class Detected:
    kind: str
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    sr_ratios: tuple[int, ...]
    mlp_ratios: tuple[int, ...]
    num_classes: int
    channels: int
    fusion: str  # DAFormer head fusion: "aspp" (released) or "conv1"

    @property
    def variant(self) -> str:
        for name, (dims, depths) in MIT_VARIANTS.items():
            if (dims, depths) == (self.embed_dims, self.depths):
                return name
        return "custom"

    def describe(self) -> str:
        mit = f"MiT-{self.variant.upper()}" if self.variant != "custom" else \
            f"a custom MiT (widths {list(self.embed_dims)}, depths {list(self.depths)})"
        return f"{KIND_NAMES[self.kind]} on {mit}, {self.num_classes} classes"


# Name prefixes (no UDA prefix) that only one kind's head has, in the order they decide: EDAPS also has a DAFormer
# decode_head, and an mmseg SegFormerHead an (unused) conv_seg. A head with some of them is that kind's, and what
# it lacks is named (check_complete), rather than an "unknown layout".
_HEAD_MARKERS = (
    ("edaps", ("rpn_head.", "roi_head.", "neck.")),
    ("hrda", ("decode_head.scale_attention.", "decode_head.head.")),
    ("segformer", ("decode_head.linear_fuse.", "decode_head.linear_pred.", "decode_head.linear_c")),
    ("daformer", ("decode_head.embed_layers.", "decode_head.fuse_layer.", "decode_head.conv_seg.")),
)


def _size(state: dict, candidates) -> int | None:
    """``shape[dim]`` of the first (name, dim) of ``candidates`` present in ``state``."""
    return next((int(state[name].shape[dim]) for name, dim in candidates
                 if name in state and state[name].dim() > dim), None)


def detect(state: dict, path: str | Path, prefix: str = "") -> Detected:
    """Kind (DAFormer, HRDA/MIC, EDAPS, SegFormer) and MiT shape, from names and shapes alone.

    Sizes are read from any tensor that holds them, so that a checkpoint missing some tensors is
    described (and refused by :func:`check_complete`, naming them) rather than failing on a lookup.
    """
    if "backbone.patch_embed1.proj.weight" not in state:
        native = any(k.startswith("backbone.layers.") for k in state)
        hint = (" (this is mmseg's own MiT layout, backbone.layers.N, which these repositories do not use; "
                "it is not supported)") if native else ""
        raise MmsegError(f"{path}: unknown layout: no MiT backbone (backbone.patch_embed1...) found{hint}; "
                         "expected a DAFormer, HRDA, MIC, EDAPS or SegFormer checkpoint")
    stages = [s for s in range(1, 5) if f"backbone.patch_embed{s}.proj.weight" in state]
    if stages != [1, 2, 3, 4]:
        raise MmsegError(f"{path}: the MiT backbone has stages {stages}; expected 4")
    dims = tuple(int(state[f"backbone.patch_embed{s}.proj.weight"].shape[0]) for s in stages)
    blocks = [sorted({int(m[1]) for k in state if (m := re.match(rf"backbone\.block{s}\.(\d+)\.", k))})
              for s in stages]
    depths = tuple(indices[-1] + 1 if indices else 1 for indices in blocks)  # a missing block is named later
    srs = tuple(_size(state, [(f"backbone.block{s}.{j}.attn.sr.weight", 3) for j in blocks[s - 1]]) or 1
                for s in stages)
    hidden = [_size(state, [(f"backbone.block{s}.{j}.{name}", dim) for j in blocks[s - 1] for name, dim in
                            (("mlp.fc1.weight", 0), ("mlp.fc2.weight", 1), ("mlp.dwconv.dwconv.weight", 0))])
              for s in stages]
    mlps = tuple(h // dim if h else 4 for h, dim in zip(hidden, dims))
    names = set(state)
    kind = next((kind for kind, markers in _HEAD_MARKERS if any(k.startswith(markers) for k in names)), None)
    if kind is None:
        others = sorted(k for k in names if not k.startswith("backbone."))
        held = f"its other tensors: {', '.join(prefix + k for k in others[:3])}{' ...' if len(others) > 3 else ''}" \
            if others else "no other tensors"
        raise MmsegError(f"{path}: unknown layout: a MiT backbone, but no tensor of a DAFormer, HRDA, EDAPS or "
                         f"SegFormer head ({', '.join(f'{m}*' for _, markers in _HEAD_MARKERS for m in markers)}); "
                         f"{held}; expected a DAFormer, HRDA, MIC, EDAPS or SegFormer checkpoint")
    head = {"edaps": "decode_head.", "hrda": "decode_head.head.", "segformer": None, "daformer": "decode_head."}[kind]
    if head is None:
        classifier = "decode_head.linear_pred"
        classes = _size(state, [(f"{classifier}.weight", 0), (f"{classifier}.bias", 0)])
        channels = _size(state, [*((f"decode_head.linear_c{i}.proj.weight", 0) for i in range(1, 5)),
                                 ("decode_head.linear_fuse.conv.weight", 0), (f"{classifier}.weight", 1)])
        fusion = "mlp"
    else:
        classifier = f"{head}conv_seg"
        attention = "decode_head.scale_attention."  # HRDA: the same classes and widths as the head
        classes = _size(state, [(f"{classifier}.weight", 0), (f"{classifier}.bias", 0),
                                (f"{attention}conv_seg.weight", 0)])
        channels = _size(state, [(f"{classifier}.weight", 1), (f"{head}embed_layers.0.proj.weight", 0),
                                 (f"{attention}conv_seg.weight", 1)])
        conv1 = (f"{head}fuse_layer.conv.", f"{head}fuse_layer.bn.")  # else the released ASPP (also when missing)
        fusion = "conv1" if any(k.startswith(conv1) for k in names) else "aspp"
    found = Detected(kind, dims, depths, srs, mlps, classes or 1, channels or 1, fusion)
    if classes is None or channels is None:  # the names do not depend on these sizes: name every missing tensor
        check_complete(state, found, path, prefix)
        raise incomplete(path, kind, prefix, [f"{classifier}.weight", f"{classifier}.bias"])
    return found


_MIT_BLOCK_PARTS = ("norm1", "attn.q", "attn.kv", "attn.proj", "attn.sr", "attn.norm", "norm2", "mlp.fc1",
                    "mlp.dwconv.dwconv", "mlp.fc2")
_SEGFORMER_HEAD_NAMES = (*(f"decode_head.linear_c{i}.proj.{p}" for i in range(1, 5) for p in ("weight", "bias")),
                         "decode_head.linear_fuse.conv.weight",
                         *(f"decode_head.linear_fuse.bn.{p}" for p in ("weight", "bias", "running_mean",
                                                                       "running_var")),
                         "decode_head.linear_pred.weight", "decode_head.linear_pred.bias")  # fmt: skip
DILATIONS = (1, 6, 12, 18)  # DAFormer's ASPP (every released config)


def required_names(found: Detected) -> list[str]:
    """Every tensor (original names, no prefix) the backbone and semantic head of ``found`` are built from.

    The DAFormer / HRDA heads list what :mod:`layerseg_merge.models.mmseg_uda` loads; EDAPS's
    Mask R-CNN parts are not checked (they are not run here).
    """
    names = [f"backbone.patch_embed{s}.{part}.{p}" for s in range(1, 5) for part in ("proj", "norm")
             for p in ("weight", "bias")]
    for s, (depth, sr) in enumerate(zip(found.depths, found.sr_ratios), start=1):
        parts = [part for part in _MIT_BLOCK_PARTS if sr > 1 or part not in ("attn.sr", "attn.norm")]
        names += [f"backbone.block{s}.{j}.{part}.{p}" for j in range(depth) for part in parts
                  for p in ("weight", "bias")]
        names += [f"backbone.norm{s}.weight", f"backbone.norm{s}.bias"]
    if found.kind == "segformer":
        return names + list(_SEGFORMER_HEAD_NAMES)
    from layerseg_merge.models.mmseg_uda import DAFormerHead, HRDAHead

    with torch.device("meta"):
        head = HRDAHead(found.embed_dims, found.channels, found.num_classes, DILATIONS) if found.kind == "hrda" \
            else DAFormerHead(found.embed_dims, found.channels, found.num_classes, found.fusion, DILATIONS)
    return names + [f"decode_head.{name}" for name in head.state_dict()]


def incomplete(path: str | Path, kind: str, prefix: str, missing: list[str], shown: int = 4) -> MmsegError:
    """The refusal of a checkpoint that lacks ``missing`` (the first ``shown`` named, then a count)."""
    listed = ", ".join(prefix + name for name in missing[:shown])
    more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
    plural = "s" if len(missing) > 1 else ""
    return MmsegError(f"{path}: {len(missing)} tensor{plural} of the {KIND_NAMES[kind]} model missing: {listed}{more}; "
                      "the file is incomplete (a model built from it would hold random values there): re-save it "
                      "from the complete model or re-download it")


def check_complete(state: dict, found: Detected, path: str | Path, prefix: str = "") -> None:
    """Refuse a checkpoint that lacks tensors of its model, naming them."""
    missing = [name for name in required_names(found) if name not in state]
    if missing:
        raise incomplete(path, found.kind, prefix, missing)


# ------------------------------------------------------------------------------ names


def mit_to_transformers(state: dict, path: str | Path = "checkpoint") -> OrderedDict:
    """Original MiT names -> transformers' on-disk SegFormer names, with ``attn.kv`` split into key and value."""
    out = OrderedDict()
    for name, tensor in state.items():
        if not name.startswith("backbone."):
            out[name] = tensor
            continue
        rest = name[len("backbone."):]
        if m := re.fullmatch(r"patch_embed(\d)\.(proj|norm)\.(.+)", rest):
            part = "proj" if m[2] == "proj" else "layer_norm"
            out[f"segformer.encoder.patch_embeddings.{int(m[1]) - 1}.{part}.{m[3]}"] = tensor
        elif m := re.fullmatch(r"norm(\d)\.(.+)", rest):
            out[f"segformer.encoder.layer_norm.{int(m[1]) - 1}.{m[2]}"] = tensor
        elif m := re.fullmatch(r"block(\d)\.(\d+)\.attn\.kv\.(weight|bias)", rest):
            block = f"segformer.encoder.block.{int(m[1]) - 1}.{m[2]}.attention.self"
            half = tensor.shape[0] // 2  # rows [0, C) are the key, [C, 2C) the value (MiT reshapes kv as 2 x C)
            out[f"{block}.key.{m[3]}"] = tensor[:half].clone()
            out[f"{block}.value.{m[3]}"] = tensor[half:].clone()
        elif (m := re.fullmatch(r"block(\d)\.(\d+)\.(.+)\.(weight|bias)", rest)) and m[3] in _BLOCK_NAMES:
            out[f"segformer.encoder.block.{int(m[1]) - 1}.{m[2]}.{_BLOCK_NAMES[m[3]]}.{m[4]}"] = tensor
        else:
            raise MmsegError(f"{path}: backbone tensor {name!r} is not part of the MiT layout this importer knows")
    return out


def transformers_to_mit(tensors: dict) -> OrderedDict:
    """The inverse of :func:`mit_to_transformers`: key and value joined back into ``attn.kv``."""
    out: OrderedDict = OrderedDict()
    pending: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if not name.startswith("segformer.encoder."):
            out[name] = tensor
            continue
        rest = name[len("segformer.encoder."):]
        if m := re.fullmatch(r"patch_embeddings\.(\d)\.(proj|layer_norm)\.(.+)", rest):
            part = "proj" if m[2] == "proj" else "norm"
            out[f"backbone.patch_embed{int(m[1]) + 1}.{part}.{m[3]}"] = tensor
        elif m := re.fullmatch(r"layer_norm\.(\d)\.(.+)", rest):
            out[f"backbone.norm{int(m[1]) + 1}.{m[2]}"] = tensor
        elif m := re.fullmatch(r"block\.(\d)\.(\d+)\.attention\.self\.(key|value)\.(weight|bias)", rest):
            kv = f"backbone.block{int(m[1]) + 1}.{m[2]}.attn.kv.{m[4]}"
            pending[f"{kv}/{m[3]}"] = tensor
            if f"{kv}/key" in pending and f"{kv}/value" in pending:
                out[kv] = torch.cat([pending.pop(f"{kv}/key"), pending.pop(f"{kv}/value")], 0)
        elif (m := re.fullmatch(r"block\.(\d)\.(\d+)\.(.+)\.(weight|bias)", rest)) and m[3] in _BLOCK_NAMES_BACK:
            out[f"backbone.block{int(m[1]) + 1}.{m[2]}.{_BLOCK_NAMES_BACK[m[3]]}.{m[4]}"] = tensor
        else:
            raise MmsegError(f"tensor {name!r} is not part of the MiT layout; cannot export it")
    if pending:
        raise MmsegError(f"{sorted(pending)[0].split('/')[0]}: key or value half missing; cannot rebuild attn.kv")
    return out


def _rename(state: dict, rules) -> OrderedDict:
    out = OrderedDict()
    for name, tensor in state.items():
        for pattern, build in rules:
            if m := re.fullmatch(pattern, name):
                name = build(m)
                break
        out[name] = tensor
    return out


def _mit_order(name: str) -> tuple:
    """Original MiT registration order: per stage, patch embedding, blocks, norm; heads after the backbone."""
    if m := re.match(r"backbone\.patch_embed(\d)", name):
        return (0, int(m[1]), 0, 0, name)
    if m := re.match(r"backbone\.block(\d)\.(\d+)", name):
        return (0, int(m[1]), 1, int(m[2]), name)
    if m := re.match(r"backbone\.norm(\d)", name):
        return (0, int(m[1]), 2, 0, name)
    return (1, 0, 0, 0, name)


# ------------------------------------------------------------------------------ import / export


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def build_config(found: Detected, meta: dict, source: Path, weights: str, prefix: str,
                 num_heads: tuple[int, ...] | None, test: tuple[dict, dict | None] | None = None) -> dict:
    """config.json of an imported directory; ``test``: (test_pipeline, inference) of a DAFormer or HRDA model."""
    from transformers import SegformerConfig

    from layerseg_merge.eval.datasets import CITYSCAPES_CLASSES

    classes = list(meta.get("CLASSES") or [])
    if len(classes) != found.num_classes:  # no meta (a published file): the released models are Cityscapes ones
        classes = list(CITYSCAPES_CLASSES) if found.num_classes == 19 else [str(i) for i in range(found.num_classes)]
    heads = tuple(num_heads or MIT_HEADS)
    if any(dim % head for dim, head in zip(found.embed_dims, heads)):
        raise MmsegError(f"{source}: the MiT widths {list(found.embed_dims)} are not divisible by the attention heads "
                         f"{list(heads)}, and heads are not stored in the weights; import it with `layerseg import "
                         f"mmseg {source} DIR --num-heads H1,H2,H3,H4` (and name DIR in recipes)")
    config = SegformerConfig(
        num_channels=3, num_encoder_blocks=4, depths=list(found.depths), sr_ratios=list(found.sr_ratios),
        hidden_sizes=list(found.embed_dims), num_attention_heads=list(heads), patch_sizes=[7, 3, 3, 3],
        strides=[4, 2, 2, 2], mlp_ratios=list(found.mlp_ratios), hidden_act="gelu", layer_norm_eps=1e-6,
        decoder_hidden_size=found.channels, num_labels=found.num_classes,
        id2label=dict(enumerate(classes)), label2id={c: i for i, c in enumerate(classes)},
        architectures=[ARCHITECTURES[found.kind]],
    )
    data = config.to_dict()
    data["layerseg_mmseg"] = {
        "kind": found.kind, "variant": found.variant, "fusion": found.fusion, "channels": found.channels,
        "source": source.name, "weights": weights, "prefix": prefix, "meta": _jsonable(meta),
        "dilations": list(DILATIONS),
        **({"test_pipeline": test[0]} if test else {}),
        **({"inference": test[1]} if test and test[1] else {}),
    }  # fmt: skip
    return data


def preprocessor_config(kind: str) -> dict:
    """The papers' normalisation; DAFormer and SegFormer test at half Cityscapes size, HRDA at full size.

    For transformers tools: ``layerseg eval`` runs DAFormer and HRDA through
    ``layerseg_mmseg.test_pipeline`` (mmseg's own resize) instead.
    """
    return {
        "image_processor_type": "SegformerImageProcessor", "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD,
        "do_resize": kind not in ("hrda", "edaps"), "size": {"height": 512, "width": 1024}, "resample": 2,
        "do_reduce_labels": False,
    }  # fmt: skip


@dataclass(frozen=True)
class Imported:
    found: Detected
    weights: str
    prefix: str
    tensors: OrderedDict
    config: dict
    notes: tuple[str, ...] = ()  # what the test settings follow, for the user


def convert(path: str | Path, weights: str = "student", num_heads: tuple[int, ...] | None = None,
            config_file: str | Path | None = None, test_scale: tuple[int, int] | None = None) -> Imported:
    """Read and convert a checkpoint in memory (nothing is written).

    DAFormer / HRDA test settings (``layerseg_mmseg.test_pipeline`` and ``inference``) come from
    ``config_file``, else the checkpoint's meta config, else the released ones
    (:func:`layerseg_merge.formats.mmseg_config.read_test_settings`); ``test_scale`` (w, h) overrides img_scale.
    """
    path = Path(path)
    container = load_container(path)
    meta = container.get("meta") if isinstance(container.get("meta"), dict) else {}
    state, prefix = select_weights(container, path, weights)
    del container  # the optimizer state (and the other prefixes) are never kept
    found = detect(state, path, prefix)
    check_complete(state, found, path, prefix)
    tensors = mit_to_transformers(state, path)
    if found.kind == "segformer":
        tensors = _rename(tensors, _SEGFORMER_HEAD)
    tensors = OrderedDict((k, v.contiguous()) for k, v in tensors.items())
    test, notes = None, []
    if found.kind in ("daformer", "hrda"):
        try:
            pipeline, inference, notes = read_test_settings(found.kind, meta, config_file, test_scale, path)
        except ConfigError as error:
            raise MmsegError(str(error)) from error
        test = (pipeline, inference)
        notes = [*notes, f"test pipeline: img_scale {tuple(pipeline['img_scale'])}, keep_ratio "
                         f"{pipeline['keep_ratio']} ({pipeline['source']})"]
    elif config_file is not None or test_scale is not None:
        raise MmsegError(f"{path}: --config and --test-scale set the test pipeline of DAFormer and HRDA/MIC models; "
                         f"this is {KIND_NAMES[found.kind]}")
    config = build_config(found, meta, path, weights, prefix, num_heads, test)
    return Imported(found, weights, prefix, tensors, config, tuple(notes))


def write_model_dir(imported: Imported, directory: Path) -> None:
    """Write config.json, model.safetensors and preprocessor_config.json into ``directory``."""
    from safetensors.torch import save_file

    from layerseg_merge.io.errors import writing

    with writing(directory / "model.safetensors"):
        save_file(dict(imported.tensors), directory / "model.safetensors", metadata={"format": "pt"})
    for name, content in (("config.json", imported.config),
                          ("preprocessor_config.json", preprocessor_config(imported.found.kind))):
        with writing(directory / name):
            (directory / name).write_text(json.dumps(content, indent=2) + "\n")


def export_state(model_dir: str | Path) -> dict:
    """The mmseg checkpoint of an imported (or merged) directory: ``{meta, state_dict}`` with ``model.*`` keys."""
    from layerseg_merge.io.checkpoint import load_tensors
    from layerseg_merge.models.info import ModelInfo

    model_dir = Path(model_dir)
    settings = ModelInfo.from_dir(model_dir).mmseg
    if settings is None:
        raise MmsegError(f"{model_dir}: not an imported mmseg model (config.json has no layerseg_mmseg); only "
                         "models imported with `layerseg import mmseg` (or merges anchored on one) can be exported")
    tensors = load_tensors(model_dir)
    if settings["kind"] == "segformer":
        tensors = _rename(tensors, _SEGFORMER_HEAD_BACK)
    original = transformers_to_mit(tensors)
    ordered = OrderedDict((f"model.{k}", original[k]) for k in sorted(original, key=_mit_order))
    meta = dict(settings.get("meta") or {})
    if (model_dir / MERGE_RECIPE).is_file():
        meta = merge_meta(model_dir, meta)
    if isinstance(meta.get("CLASSES"), list):
        meta["CLASSES"] = tuple(meta["CLASSES"])  # mmseg keeps class names as a tuple
    return {"meta": meta, "state_dict": ordered}


MERGE_RECIPE = "mergekit_config.yml"  # what mergekit writes into every merged folder: the recipe it merged
# What a merge keeps of its anchor's meta: what the repositories' tools/test.py read (CLASSES, PALETTE), the model's
# config (its architecture and test pipeline, which `layerseg import mmseg` reads too) and the toolkit versions of the
# format; the anchor's training run (seed, exp_name, iter, epoch, time, env_info) does not describe the merge.
KEPT_META = ("CLASSES", "PALETTE", "config", "mmseg_version", "mmdet_version", "mmcv_version")


def merge_meta(model_dir: Path, anchor_meta: dict) -> dict:
    """The ``meta`` of a merged checkpoint: :data:`KEPT_META` of the anchor's, and under ``layerseg_merge`` the
    recipe (``mergekit_config.yml`` as merged), its inputs in recipe order, the anchor, the BatchNorm
    recalibration when there was one, and the versions that merged it."""
    from layerseg_merge.engine.recipe_yaml import RecipeError, model_paths, parse_yaml
    from layerseg_merge.eval.provenance import versions
    from layerseg_merge.io.checkpoint import read_config

    path = model_dir / MERGE_RECIPE
    fix = "restore the file mergekit wrote with the merge, or merge again"
    try:
        recipe = path.read_text(encoding="utf-8")
        data = parse_yaml(recipe, str(path))
    except OSError as error:
        raise MmsegError(f"{path}: cannot read it ({error.strerror}); {fix}") from None
    except UnicodeDecodeError:
        raise MmsegError(f"{path}: not UTF-8 text; {fix}") from None
    except RecipeError as error:
        raise MmsegError(f"{error}; {fix}") from None
    if not isinstance(data, dict):
        raise MmsegError(f"{path}: not a recipe (a YAML mapping of merge_method, models, ...); {fix}")
    merge = {"recipe": recipe, "inputs": model_paths(data), "anchor": data.get("base_model"),
             "merge_method": data.get("merge_method"),
             "recalibrated": read_config(model_dir).get("layerseg_recalibrated"),
             "versions": {name: found for name, found in versions().items() if name in ("layerseg-merge", "mergekit")}}
    return {key: anchor_meta[key] for key in KEPT_META if key in anchor_meta} | {"layerseg_merge": merge}


def content_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
