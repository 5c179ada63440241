"""Synthetic mmseg 0.x UDA checkpoints: DAFormer, HRDA/MIC, EDAPS (MiT backbone), plus a plain SegFormer.

Names, shapes, dtypes and order follow tests/reference/mmseg-uda-checkpoints.md (cited as §N) and
its companion ``mmseg_mitb5_uda_keys.json``; the B5 builders reproduce that JSON exactly (tests/test_mmseg_fixtures.py).
Values are random (seeded ``torch.Generator``); ``device="meta"`` builds names/shapes/dtypes without allocating.

Not from the reference (marked where used): the MiT-B0..B4 hyper-parameters, the SegFormerHead shapes and order,
the Cityscapes CLASSES/PALETTE values and all concrete meta/optimizer values. The first three were read from the
upstream sources (lhoyer/DAFormer ``mix_transformer.py``, ``cityscapes.py``; NVlabs/SegFormer ``segformer_head.py``).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

Kind = Literal["daformer", "hrda", "mic", "edaps", "segformer"]
Container = Literal["training", "published", "bare"]
Entry = tuple[str, tuple[int, ...], str]  # name, shape, init: w (weight), b (bias), g (norm gain), rm, rv, n (counter)
StateDict = OrderedDict[str, torch.Tensor]

UDA_PREFIXES = ("model.", "ema_model.", "imnet_model.")  # §2.2, in state-dict order


@dataclass(frozen=True)
class MiTSpec:
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]  # no effect on shapes; kept for configs
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    mlp_ratios: tuple[int, ...] = (4, 4, 4, 4)


_HEADS, _WIDE = (1, 2, 5, 8), (64, 128, 320, 512)
# B5 is §3; B0..B4 are NOT in the reference (upstream mix_transformer.py: mit_b0..mit_b4).
MIT_VARIANTS: dict[str, MiTSpec] = {
    "b0": MiTSpec((32, 64, 160, 256), (2, 2, 2, 2), _HEADS),
    "b1": MiTSpec(_WIDE, (2, 2, 2, 2), _HEADS),
    "b2": MiTSpec(_WIDE, (3, 4, 6, 3), _HEADS),
    "b3": MiTSpec(_WIDE, (3, 4, 18, 3), _HEADS),
    "b4": MiTSpec(_WIDE, (3, 8, 27, 3), _HEADS),
    "b5": MiTSpec(_WIDE, (3, 6, 40, 3), _HEADS),
}
# Same dims as tests/helpers.py:tiny_segformer_config; stages 3-4 have no spatial reduction (sr=1).
TINY_MIT = MiTSpec((8, 16, 24, 32), (1, 2, 1, 1), (1, 1, 2, 2), (4, 2, 1, 1), (2, 2, 2, 2))


@dataclass(frozen=True)
class HeadSizes:
    """Head widths. Defaults are the released models' (§4.1, §4.2, §5.2)."""

    channels: int = 256  # DAFormer `channels` == `embed_dims` (also HRDA's attention_embed_dim)
    num_classes: int = 19
    fpn_channels: int = 256  # EDAPS neck/RPN/mask head width
    roi_fc_channels: int = 1024  # EDAPS Shared2FCBBoxHead
    roi_size: int = 7
    num_thing_classes: int = 8  # EDAPS num_instance_classes
    num_anchors: int = 3
    segformer_embed_dim: int = 768  # §6.3 "SegFormer-B5 decoder width is 768"
    segformer_channels: int = 128  # width of SegFormerHead's unused conv_seg (upstream config; not in reference)


TINY_HEADS = HeadSizes(channels=16, fpn_channels=16, roi_fc_channels=32, segformer_embed_dim=16, segformer_channels=8)

CITYSCAPES_CLASSES = (  # not in the reference (§2.1 only says "tuple of 19 names"); upstream cityscapes.py
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_PALETTE = [
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153], [153, 153, 153],
    [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152], [70, 130, 180], [220, 20, 60], [255, 0, 0],
    [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32],
]  # fmt: skip


# ---------------------------------------------------------------- specs (names, shapes, init kind; no tensors)


def _linear(name: str, out: int, inp: int, bias: bool = True) -> list[Entry]:
    return [(f"{name}.weight", (out, inp), "w")] + ([(f"{name}.bias", (out,), "b")] if bias else [])


def _conv(name: str, out: int, inp: int, k: int, bias: bool = True) -> list[Entry]:
    return [(f"{name}.weight", (out, inp, k, k), "w")] + ([(f"{name}.bias", (out,), "b")] if bias else [])


def _ln(name: str, n: int) -> list[Entry]:
    return [(f"{name}.weight", (n,), "g"), (f"{name}.bias", (n,), "b")]


def _bn(name: str, n: int) -> list[Entry]:  # §4: 4 float32 [C] + num_batches_tracked int64 []
    return _ln(name, n) + [(f"{name}.running_mean", (n,), "rm"), (f"{name}.running_var", (n,), "rv"),
                           (f"{name}.num_batches_tracked", (), "n")]  # fmt: skip


def _conv_module(name: str, out: int, inp: int, k: int, norm: bool) -> list[Entry]:
    """mmcv ConvModule: `conv` (+ `bn`; no conv bias when normed), §4."""
    return _conv(f"{name}.conv", out, inp, k, bias=not norm) + (_bn(f"{name}.bn", out) if norm else [])


def mit_spec(variant: str | MiTSpec) -> MiTSpec:
    if isinstance(variant, MiTSpec):
        return variant
    key = variant.lower().removeprefix("mit_").removeprefix("mit-").removeprefix("mit")
    if key not in MIT_VARIANTS:
        raise ValueError(f"unknown MiT variant {variant!r}; expected one of {sorted(MIT_VARIANTS)} or a MiTSpec")
    return MIT_VARIANTS[key]


def mit_backbone_spec(variant: str | MiTSpec = "b5", prefix: str = "backbone.") -> list[Entry]:
    """Original NVlabs MiT names (§3.1): patch_embed1..4, then block{s}.{j}.* and norm{s} per stage."""
    m, p = mit_spec(variant), prefix
    out: list[Entry] = []
    for s, c in enumerate(m.embed_dims, 1):
        inp, k = (3, 7) if s == 1 else (m.embed_dims[s - 2], 3)
        out += _conv(f"{p}patch_embed{s}.proj", c, inp, k) + _ln(f"{p}patch_embed{s}.norm", c)
    for s, (c, depth, sr, r) in enumerate(zip(m.embed_dims, m.depths, m.sr_ratios, m.mlp_ratios), 1):
        hidden = c * r
        for j in range(depth):
            b = f"{p}block{s}.{j}"
            out += _ln(f"{b}.norm1", c) + _linear(f"{b}.attn.q", c, c) + _linear(f"{b}.attn.kv", 2 * c, c)
            out += _linear(f"{b}.attn.proj", c, c)
            if sr > 1:
                out += _conv(f"{b}.attn.sr", c, c, sr) + _ln(f"{b}.attn.norm", c)
            out += _ln(f"{b}.norm2", c) + _linear(f"{b}.mlp.fc1", hidden, c)
            out += [
                (f"{b}.mlp.dwconv.dwconv.weight", (hidden, 1, 3, 3), "w"),
                (f"{b}.mlp.dwconv.dwconv.bias", (hidden,), "b"),
            ]
            out += _linear(f"{b}.mlp.fc2", c, hidden)
        out += _ln(f"{p}norm{s}", c)
    return out


def daformer_head_spec(
    in_channels: Sequence[int], sizes: HeadSizes = HeadSizes(), fusion: str = "aspp", prefix: str = "decode_head."
) -> list[Entry]:
    """DAFormerHead (§4.1): conv_seg, embed_layers.{i}.proj, fuse_layer = sep-ASPP (1,6,12,18) + 3x3 bottleneck.

    fusion="conv1": the 1x1 ConvModule fusion of daformer_conv1_mitb5 / HRDA's scale_attention (§4.2, §4.3).
    """
    c, p, cat = sizes.channels, prefix, sizes.channels * len(in_channels)
    out = _conv(f"{p}conv_seg", sizes.num_classes, c, 1)
    for i, cin in enumerate(in_channels):
        out += _linear(f"{p}embed_layers.{i}.proj", c, cin)
    if fusion == "conv1":
        return out + _conv_module(f"{p}fuse_layer", c, cat, 1, norm=True)
    if fusion != "aspp":
        raise ValueError(f"fusion must be 'aspp' or 'conv1', not {fusion!r}")
    out += _conv_module(f"{p}fuse_layer.aspp_modules.0", c, cat, 1, norm=True)
    for i in (1, 2, 3):
        a = f"{p}fuse_layer.aspp_modules.{i}"
        out += _conv_module(f"{a}.depthwise_conv", cat, 1, 3, norm=True)
        out += _conv_module(f"{a}.pointwise_conv", c, cat, 1, norm=True)
    return out + _conv_module(f"{p}fuse_layer.bottleneck", c, 4 * c, 3, norm=True)


def hrda_head_spec(
    in_channels: Sequence[int], sizes: HeadSizes = HeadSizes(), prefix: str = "decode_head."
) -> list[Entry]:
    """HRDAHead (§4.2): `head.*` (full DAFormerHead) + `scale_attention.*` (conv1 fusion, classwise)."""
    return daformer_head_spec(in_channels, sizes, "aspp", f"{prefix}head.") + daformer_head_spec(
        in_channels, sizes, "conv1", f"{prefix}scale_attention."
    )


def edaps_parts_spec(in_channels: Sequence[int], sizes: HeadSizes = HeadSizes()) -> list[Entry]:
    """EDAPS MaskRCNNPanoptic minus backbone (§5.2): neck, rpn_head, roi_head, then the DAFormer decode_head."""
    f, fc, t, a = sizes.fpn_channels, sizes.roi_fc_channels, sizes.num_thing_classes, sizes.num_anchors
    out: list[Entry] = []
    for i, cin in enumerate(in_channels):
        out += _conv(f"neck.lateral_convs.{i}.conv", f, cin, 1)
    for i in range(len(in_channels)):
        out += _conv(f"neck.fpn_convs.{i}.conv", f, f, 3)
    out += (
        _conv("rpn_head.rpn_conv", f, f, 3)
        + _conv("rpn_head.rpn_cls", a, f, 1)
        + _conv("rpn_head.rpn_reg", 4 * a, f, 1)
    )
    bb = "roi_head.bbox_head"
    out += _linear(f"{bb}.fc_cls", t + 1, fc) + _linear(f"{bb}.fc_reg", 4 * t, fc)
    out += _linear(f"{bb}.shared_fcs.0", fc, f * sizes.roi_size**2) + _linear(f"{bb}.shared_fcs.1", fc, fc)
    for i in range(4):
        out += _conv(f"roi_head.mask_head.convs.{i}.conv", f, f, 3)
    out += _conv("roi_head.mask_head.upsample", f, f, 2) + _conv("roi_head.mask_head.conv_logits", t, f, 1)
    return out + daformer_head_spec(in_channels, sizes, "aspp")


def segformer_head_spec(
    in_channels: Sequence[int], sizes: HeadSizes = HeadSizes(), prefix: str = "decode_head."
) -> list[Entry]:
    """NVlabs SegFormerHead. Names: §6.1 rule 8 only; shapes/order are NOT in the reference (upstream source):
    conv_seg (unused, BaseDecodeHead), linear_c4..linear_c1 (.proj), linear_fuse (ConvModule+BN), linear_pred."""
    e, p = sizes.segformer_embed_dim, prefix
    out = _conv(f"{p}conv_seg", sizes.num_classes, sizes.segformer_channels, 1)
    for n in range(len(in_channels), 0, -1):
        out += _linear(f"{p}linear_c{n}.proj", e, in_channels[n - 1])
    return (
        out
        + _conv_module(f"{p}linear_fuse", e, e * len(in_channels), 1, norm=True)
        + _conv(f"{p}linear_pred", sizes.num_classes, e, 1)
    )


def model_spec(kind: Kind, variant: str | MiTSpec = "b5", sizes: HeadSizes = HeadSizes()) -> list[Entry]:
    """All tensors of one segmentor (= one UDA prefix), in state-dict order."""
    mit = mit_spec(variant)
    heads = {
        "daformer": lambda: daformer_head_spec(mit.embed_dims, sizes),
        "hrda": lambda: hrda_head_spec(mit.embed_dims, sizes),
        "mic": lambda: hrda_head_spec(mit.embed_dims, sizes),  # §4.2: MIC(HRDA) == HRDA
        "edaps": lambda: edaps_parts_spec(mit.embed_dims, sizes),
        "segformer": lambda: segformer_head_spec(mit.embed_dims, sizes),
    }
    if kind not in heads:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(heads)}")
    return mit_backbone_spec(mit) + heads[kind]()


# ---------------------------------------------------------------- tensors


def materialize(
    spec: Sequence[Entry], generator: torch.Generator | None = None, device: str | torch.device | None = None
) -> StateDict:
    """Random tensors for `spec`: float32 everywhere, int64 0-dim for `num_batches_tracked` (§0, §4).

    On the meta device nothing is allocated (names, shapes and dtypes only)."""
    device = torch.device(device or "cpu")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    out: StateDict = OrderedDict()
    for name, shape, init in spec:
        dtype = torch.int64 if init == "n" else torch.float32
        if device.type == "meta":
            out[name] = torch.empty(shape, dtype=dtype, device=device)
            continue
        if init == "n":
            t = torch.randint(1, 100_000, (), generator=g, dtype=torch.int64)
        elif init == "rv":
            t = torch.rand(shape, generator=g) + 0.5
        else:
            fan_in = max(1, math.prod(shape[1:])) if init == "w" else 1
            scale = {"w": fan_in**-0.5, "b": 0.02, "g": 0.1, "rm": 0.1}[init]
            t = torch.randn(shape, generator=g) * scale + (1.0 if init == "g" else 0.0)
        out[name] = t.to(device)
    return out


def _gen(generator: torch.Generator | None, seed: int) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(seed)


def mit_backbone(
    variant: str | MiTSpec = "b5", generator: torch.Generator | None = None, device: str | torch.device | None = None,
    prefix: str = "backbone.",
) -> StateDict:  # fmt: skip
    return materialize(mit_backbone_spec(variant, prefix), _gen(generator, 0), device)


def daformer_head(
    in_channels: Sequence[int] = _WIDE, sizes: HeadSizes = HeadSizes(), generator: torch.Generator | None = None,
    device: str | torch.device | None = None, fusion: str = "aspp", prefix: str = "decode_head.",
) -> StateDict:  # fmt: skip
    return materialize(daformer_head_spec(in_channels, sizes, fusion, prefix), _gen(generator, 0), device)


def hrda_head(
    in_channels: Sequence[int] = _WIDE, sizes: HeadSizes = HeadSizes(), generator: torch.Generator | None = None,
    device: str | torch.device | None = None, prefix: str = "decode_head.",
) -> StateDict:  # fmt: skip
    return materialize(hrda_head_spec(in_channels, sizes, prefix), _gen(generator, 0), device)


def edaps_parts(
    in_channels: Sequence[int] = _WIDE, sizes: HeadSizes = HeadSizes(), generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> StateDict:  # fmt: skip
    return materialize(edaps_parts_spec(in_channels, sizes), _gen(generator, 0), device)


def segformer_head(
    in_channels: Sequence[int] = _WIDE, sizes: HeadSizes = HeadSizes(), generator: torch.Generator | None = None,
    device: str | torch.device | None = None, prefix: str = "decode_head.",
) -> StateDict:  # fmt: skip
    return materialize(segformer_head_spec(in_channels, sizes, prefix), _gen(generator, 0), device)


def _resolve(
    variant: str | MiTSpec, tiny: bool, sizes: HeadSizes | None, num_classes: int | None
) -> tuple[MiTSpec, HeadSizes]:
    mit = variant if isinstance(variant, MiTSpec) else (TINY_MIT if tiny else mit_spec(variant))
    sizes = sizes or (TINY_HEADS if tiny else HeadSizes())
    return mit, (sizes if num_classes is None else replace(sizes, num_classes=num_classes))


def model_state_dict(
    kind: Kind = "daformer", variant: str | MiTSpec = "b5", *, tiny: bool = False, seed: int = 0,
    device: str | torch.device | None = None, sizes: HeadSizes | None = None, num_classes: int | None = None,
) -> StateDict:  # fmt: skip
    """One segmentor's state dict without UDA prefix (`backbone.*`, `decode_head.*`, EDAPS `neck.*` ...)."""
    mit, sizes = _resolve(variant, tiny, sizes, num_classes)
    return materialize(model_spec(kind, mit, sizes), torch.Generator().manual_seed(seed), device)


# ---------------------------------------------------------------- containers (§2)


def _config_text(kind: Kind, mit: MiTSpec, sizes: HeadSizes) -> str:
    variant = next((f"mit_{k}" for k, v in MIT_VARIANTS.items() if v == mit), None)
    backbone = f"dict(type='{variant}', style='pytorch')" if variant else f"dict(type='MixVisionTransformer', {mit})"
    head = {
        "daformer": "DAFormerHead", "hrda": "HRDAHead", "mic": "HRDAHead", "edaps": "DAFormerHead",
        "segformer": "SegFormerHead",
    }[kind]  # fmt: skip
    segmentor = {"hrda": "HRDAEncoderDecoder", "mic": "HRDAEncoderDecoder", "edaps": "MaskRCNNPanoptic"}
    return (
        f"model = dict(type='{segmentor.get(kind, 'EncoderDecoder')}', backbone={backbone}, "
        f"decode_head=dict(type='{head}', in_channels={list(mit.embed_dims)}, channels={sizes.channels}, "
        f"num_classes={sizes.num_classes}, dropout_ratio=0.1, align_corners=False))\n"
    )


def make_meta(kind: Kind, mit: MiTSpec, sizes: HeadSizes, seed: int = 0, iteration: int = 40000) -> dict[str, Any]:
    """meta keys of §2.1 (values illustrative): train.py keys + iter/epoch/mmcv_version/time added when saving."""
    classes = CITYSCAPES_CLASSES[: sizes.num_classes] + tuple(f"class{i}" for i in range(19, sizes.num_classes))
    saved = {"iter": iteration, "epoch": 1, "mmcv_version": "1.3.7", "time": time.asctime(time.gmtime(0))}
    if kind == "edaps":  # EDAPS tools/train_mmdet.py: mmdet_version, config, CLASSES, no PALETTE
        return {"mmdet_version": "2.17.0", "config": _config_text(kind, mit, sizes), "CLASSES": classes, **saved}
    palette = [list(c) for c in CITYSCAPES_PALETTE[: sizes.num_classes]]
    palette += [[i % 256, (7 * i) % 256, (13 * i) % 256] for i in range(len(palette), sizes.num_classes)]
    return {
        "env_info": "sys.platform: linux\nPython: 3.8.5\nPyTorch: 1.7.1\nMMSegmentation: 0.16.0",
        "seed": seed, "exp_name": f"synthetic_{kind}_s{seed}", "mmseg_version": "0.16.0",
        "config": _config_text(kind, mit, sizes), "CLASSES": classes, "PALETTE": palette, **saved,
    }  # fmt: skip


def make_optimizer_state(state_dict: StateDict, generator: torch.Generator, n_state: int = 2) -> dict[str, Any]:
    """A small AdamW `state_dict()` (§2.1): moments for the first `n_state` parameters only, torch-1.7 int steps."""
    params = [
        n for n, t in state_dict.items() if t.is_floating_point() and not n.endswith(("running_mean", "running_var"))
    ]
    state: dict[int, dict[str, Any]] = {}
    for i, name in enumerate(params[:n_state]):
        t = state_dict[name]
        moments = [torch.empty_like(t) if t.is_meta else torch.randn(t.shape, generator=generator) * 1e-3 for _ in "ab"]
        state[i] = {"step": 40000, "exp_avg": moments[0], "exp_avg_sq": moments[1].abs()}
    group = {"betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0.01, "amsgrad": False}
    heads = [i for i, n in enumerate(params) if "head" in n]
    return {
        "state": state,
        "param_groups": [
            {
                **group,
                "lr": 6e-05,
                "initial_lr": 6e-05,
                "params": [i for i in range(len(params)) if i not in set(heads)],
            },
            {**group, "lr": 6e-04, "initial_lr": 6e-04, "params": heads},  # paramwise head lr_mult=10
        ],
    }


def daformer_checkpoint(
    kind: Kind = "daformer", variant: str | MiTSpec = "b5", container: Container = "training",
    prefixes: bool | None = None, *, tiny: bool = False, seed: int = 0, device: str | torch.device | None = None,
    copies: Sequence[str] = UDA_PREFIXES, sizes: HeadSizes | None = None, num_classes: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A whole checkpoint as torch.load would return it.

    container="training":  {meta, state_dict, optimizer} (mmcv save_checkpoint, §2.1); with prefixes the state dict
                           holds every prefix in `copies` (default model., ema_model., imnet_model.; in that order,
                           §2.2), each a distinct random copy.
    container="published": {state_dict} after tools/publish_model.py (§2.5): `model.*` only, or bare names with
                           prefixes=False (already stripped, §7.2).
    container="bare":      the published state dict itself, no wrapper (mmcv's loader accepts it, §2.5).
    prefixes defaults to True for the UDA kinds and False for "segformer" (a plain mmseg EncoderDecoder, no DACS).
    """
    if container not in ("training", "published", "bare"):
        raise ValueError(f"container must be 'training', 'published' or 'bare', not {container!r}")
    mit, sizes = _resolve(variant, tiny, sizes, num_classes)
    use_prefixes = kind != "segformer" if prefixes is None else prefixes
    g = torch.Generator().manual_seed(seed)
    spec = model_spec(kind, mit, sizes)
    names = (tuple(copies) if container == "training" else ("model.",)) if use_prefixes else ("",)
    state: StateDict = OrderedDict()
    for prefix in names:
        state.update((prefix + k, v) for k, v in materialize(spec, g, device).items())
    if container == "bare":
        return state
    if container == "published":
        return {"state_dict": state}
    student = OrderedDict((k, v) for k, v in state.items() if k.startswith(names[0]))
    return {
        "meta": make_meta(kind, mit, sizes, seed),
        "state_dict": state,
        "optimizer": make_optimizer_state(student, g),
    }


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """torch.save in the zip format (as torch>=1.6 and the papers' torch 1.7.1 write it, §2.1)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def manifest(state_dict: dict[str, torch.Tensor], strip: str = "") -> list[str]:
    """Sorted `name:shape:dtype` lines (shape comma-joined, empty for 0-dim), e.g. for checksums."""
    return sorted(
        f"{k.removeprefix(strip)}:{','.join(map(str, v.shape))}:{str(v.dtype).removeprefix('torch.')}"
        for k, v in state_dict.items()
    )
