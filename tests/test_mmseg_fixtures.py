"""The synthetic mmseg UDA checkpoints (tests/mmseg_fixtures.py) follow the reference key lists exactly.

Reference: tests/reference/mmseg-uda-checkpoints.md (§N below) and mmseg_mitb5_uda_keys.json, copies of the
project's reference notes kept in the repository (a clone or a wheel has them); the JSON's facts are also pinned
here as checksums.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from mmseg_fixtures import (
    MIT_VARIANTS,
    TINY_MIT,
    UDA_PREFIXES,
    daformer_checkpoint,
    manifest,
    mit_backbone,
    model_state_dict,
    save_checkpoint,
)

REFERENCE_JSON = Path(__file__).resolve().parent / "reference" / "mmseg_mitb5_uda_keys.json"
# JSON lists per kind: backbone + this list; the JSON has no dtype field: int64 exactly at its int64 keys, else float32.
REFERENCE_LISTS = {"daformer": "decode_head_daformer", "hrda": "decode_head_hrda", "edaps": "edaps_non_backbone"}
# sha256 of "\n".join(sorted "name:shape:dtype" lines; shape comma-joined, empty for 0-dim), computed from the JSON.
REFERENCE_SHA256 = {
    "daformer": "cb099c485d128e8a79f38b61735de297a7e03b2a6f47be0ed586cbb891cdfa30",
    "hrda": "252e6a928c4b99bea54492f39b8c59abe4387aa6110823e3b2c817880da68a46",
    "edaps": "ace13ce46c18e4cf6448d4e25f02a4e72554ffee0cc4d1b9da7a570cbb37b5bd",
}
# (tensors, parameters without BN running stats, int64 tensors): §4.1, §4.2, §5.2.
REFERENCE_COUNTS = {"daformer": (1110, 85_155_283, 8), "hrda": (1126, 85_685_990, 9), "edaps": (1152, 104_935_187, 8)}
KINDS = list(REFERENCE_SHA256)


def sha256(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def reference() -> dict:
    return json.loads(REFERENCE_JSON.read_text())


def reference_lines(ref: dict, kind: str) -> tuple[list[str], list[str]]:
    """(names in JSON order, sorted name:shape:dtype lines) for one B5 segmentor."""
    rows = ref["backbone"] + ref[REFERENCE_LISTS[kind]]
    ints = set(ref["int64_keys_relative_to_model"][kind])
    lines = [f"{n}:{','.join(map(str, s))}:{'int64' if n in ints else 'float32'}" for n, s in rows]
    return [n for n, _ in rows], sorted(lines)


@pytest.mark.parametrize("kind", KINDS)
def test_b5_fixture_matches_pinned_reference_checksum(kind):
    ckpt = daformer_checkpoint(kind, "b5", container="training", device="meta")
    for prefix in UDA_PREFIXES:  # every copy of the raw training checkpoint (§2.2)
        part = {k.removeprefix(prefix): v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        assert sha256(manifest(part)) == REFERENCE_SHA256[kind], prefix
    sd = model_state_dict(kind, "b5", device="meta")
    assert sha256(manifest(sd)) == REFERENCE_SHA256[kind]
    params = sum(
        t.numel()
        for n, t in sd.items()
        if not n.endswith(("running_mean", "running_var")) and t.dtype.is_floating_point
    )
    ints = [n for n, t in sd.items() if t.dtype == torch.int64]
    assert (len(sd), params, len(ints)) == REFERENCE_COUNTS[kind]
    assert all(n.endswith(".bn.num_batches_tracked") and sd[n].shape == () for n in ints)


@pytest.mark.parametrize("kind", KINDS)
def test_b5_fixture_matches_reference_json_in_full(kind):
    sd = model_state_dict(kind, "b5", device="meta")
    ref = reference()
    assert sha256(manifest(sd)) == REFERENCE_SHA256[kind]
    order, lines = reference_lines(ref, kind)
    assert sha256(lines) == REFERENCE_SHA256[kind], "pinned checksum is stale"
    assert list(sd) == order  # names and registration order
    assert manifest(sd) == lines  # shapes and dtypes
    n_head = ref["counts"][f"{REFERENCE_LISTS[kind]}_keys"]
    assert len(sd) == ref["counts"]["backbone_keys"] + n_head
    assert ref["prefixes"] == list(UDA_PREFIXES) and ref["top_level_keys"] == ["meta", "state_dict", "optimizer"]


def test_mic_is_hrda():
    assert manifest(model_state_dict("mic", device="meta")) == manifest(model_state_dict("hrda", device="meta"))


@pytest.mark.parametrize("variant", sorted(MIT_VARIANTS))
def test_variant_is_recoverable_from_names_and_shapes(variant):
    """§7.3: depths by counting backbone.block{s}.{j}; widths from the stage norms."""
    sd = mit_backbone(variant, device="meta")
    depths = [len({int(m[1]) for k in sd if (m := re.match(rf"backbone\.block{s}\.(\d+)\.", k))}) for s in range(1, 5)]
    widths = [sd[f"backbone.norm{s}.weight"].shape[0] for s in range(1, 5)]
    spec = MIT_VARIANTS[variant]
    assert (tuple(depths), tuple(widths)) == (spec.depths, spec.embed_dims)
    assert [v for v in MIT_VARIANTS.values() if (v.depths, v.embed_dims) == (spec.depths, spec.embed_dims)] == [spec]


def test_tiny_training_checkpoint_layout(tmp_path):
    ckpt = daformer_checkpoint("hrda", tiny=True, seed=3)
    assert list(ckpt) == ["meta", "state_dict", "optimizer"]
    sd = ckpt["state_dict"]
    base = model_state_dict("hrda", tiny=True, device="meta")
    assert list(sd) == [p + k for p in UDA_PREFIXES for k in base]  # model., then ema_model., then imnet_model. (§2.2)
    for p in UDA_PREFIXES:
        part = {k.removeprefix(p): v for k, v in sd.items() if k.startswith(p)}
        assert manifest(part) == manifest(base)
    key = "backbone.block1.0.attn.kv.weight"
    assert sd["model." + key].shape == (2 * TINY_MIT.embed_dims[0], TINY_MIT.embed_dims[0])
    assert not torch.equal(sd["model." + key], sd["ema_model." + key])  # distinct copies
    ints = {k for k, v in sd.items() if v.dtype == torch.int64}
    assert ints == {k for k in sd if k.endswith("num_batches_tracked")} and all(sd[k].ndim == 0 for k in ints)
    assert all(v.dtype == torch.float32 for k, v in sd.items() if k not in ints)
    meta = ckpt["meta"]
    assert {"CLASSES", "PALETTE", "config", "iter", "mmcv_version"} <= set(meta) and len(meta["CLASSES"]) == 19
    assert {"state", "param_groups"} == set(ckpt["optimizer"])
    loaded = torch.load(save_checkpoint(ckpt, tmp_path / "latest.pth"), map_location="cpu", weights_only=True)
    assert all(torch.equal(loaded["state_dict"][k], v) for k, v in sd.items())
    assert loaded["meta"] == meta


def test_tiny_published_and_bare_forms_and_seeding():
    published = daformer_checkpoint("daformer", container="published", tiny=True, seed=1)
    stripped = daformer_checkpoint("daformer", container="published", prefixes=False, tiny=True, seed=1)
    assert list(published) == ["state_dict"] and all(k.startswith("model.") for k in published["state_dict"])
    assert [f"model.{k}" for k in stripped["state_dict"]] == list(published["state_dict"])
    bare = daformer_checkpoint("daformer", container="bare", tiny=True, seed=1)
    assert all(torch.equal(bare[k], v) for k, v in published["state_dict"].items())
    other = daformer_checkpoint("daformer", container="bare", tiny=True, seed=2)
    assert not torch.equal(bare["model.backbone.norm4.weight"], other["model.backbone.norm4.weight"])


def test_edaps_and_segformer_tiny_layouts():
    edaps = daformer_checkpoint("edaps", container="published", tiny=True)["state_dict"]
    assert [k.split(".")[1] for k in edaps][-1] == "decode_head"
    assert {k.split(".")[1] for k in edaps} == {"backbone", "neck", "rpn_head", "roi_head", "decode_head"}
    meta = daformer_checkpoint("edaps", tiny=True)["meta"]
    assert "PALETTE" not in meta and "mmdet_version" in meta  # §2.1
    seg = daformer_checkpoint("segformer", tiny=True)
    assert not any(k.startswith(UDA_PREFIXES) for k in seg["state_dict"])  # plain mmseg: no DACS prefixes
    heads = {re.sub(r"\.(weight|bias|running_\w+|num_batches_tracked)$", "", k) for k in seg["state_dict"]}
    heads = {k for k in heads if k.startswith("decode_head.")}
    expected = [f"linear_c{n}.proj" for n in range(1, 5)] + ["linear_fuse.conv", "linear_fuse.bn", "linear_pred"]
    assert heads == {f"decode_head.{k}" for k in [*expected, "conv_seg"]}  # §6.1 rule 8 input names (+ conv_seg)


# ---------------------------------------------------------------- §6.1: the fixtures load into transformers SegFormer

_BLOCK = {
    "norm1": "layer_norm_1", "attn.q": "attention.self.query", "attn.proj": "attention.output.dense",
    "attn.sr": "attention.self.sr", "attn.norm": "attention.self.layer_norm", "norm2": "layer_norm_2",
    "mlp.fc1": "mlp.dense1", "mlp.fc2": "mlp.dense2", "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
}  # fmt: skip


def legacy_rows(names: list[str], widths: tuple[int, ...]) -> list[tuple[str, str, tuple[int, int] | None]]:
    """§6.1 table: (HF legacy name, source name, kv row slice). A test oracle, independent of any importer."""
    out = []
    for name in names:
        stem, leaf = name.rsplit(".", 1)
        if m := re.fullmatch(r"backbone\.patch_embed(\d)\.(proj|norm)", stem):
            sub = {"proj": "proj", "norm": "layer_norm"}[m[2]]
            out.append((f"segformer.encoder.patch_embeddings.{int(m[1]) - 1}.{sub}.{leaf}", name, None))
        elif m := re.fullmatch(r"backbone\.norm(\d)", stem):
            out.append((f"segformer.encoder.layer_norm.{int(m[1]) - 1}.{leaf}", name, None))
        elif m := re.fullmatch(r"backbone\.block(\d)\.(\d+)\.(.+)", stem):
            block, c = f"segformer.encoder.block.{int(m[1]) - 1}.{m[2]}", widths[int(m[1]) - 1]
            if m[3] == "attn.kv":  # rows [:C] are the key, rows [C:] the value
                out += [(f"{block}.attention.self.key.{leaf}", name, (0, c))]
                out += [(f"{block}.attention.self.value.{leaf}", name, (c, 2 * c))]
            else:
                out.append((f"{block}.{_BLOCK[m[3]]}.{leaf}", name, None))
        else:
            raise AssertionError(name)
    return out


def test_legacy_mapping_oracle_matches_reference_json():
    ref = reference()
    sd = mit_backbone("b5", device="meta")
    mine = {
        (h, s, r, tuple(sd[s][r[0] : r[1]].shape if r else sd[s].shape))
        for h, s, r in legacy_rows(list(sd), (64, 128, 320, 512))
    }
    theirs = {(h, s, tuple(r) if r else None, tuple(shape)) for h, shape, s, r in ref["hf_segformer_legacy_backbone"]}
    assert mine == theirs and len(theirs) == ref["counts"]["hf_legacy_backbone_keys"]


def test_tiny_backbone_loads_into_transformers_segformer(tmp_path):
    from helpers import tiny_segformer_config
    from safetensors.torch import save_file
    from transformers import SegformerModel

    config = tiny_segformer_config()
    assert (tuple(config.hidden_sizes), tuple(config.depths), tuple(config.sr_ratios)) == (
        TINY_MIT.embed_dims,
        TINY_MIT.depths,
        TINY_MIT.sr_ratios,
    )
    sd = mit_backbone(TINY_MIT, torch.Generator().manual_seed(0))
    tensors = {}
    for hf, src, rows in legacy_rows(list(sd), TINY_MIT.embed_dims):
        t = sd[src][rows[0] : rows[1]] if rows else sd[src]
        tensors[hf.removeprefix("segformer.")] = t.contiguous()
    config.save_pretrained(tmp_path)
    save_file(tensors, tmp_path / "model.safetensors")
    model, info = SegformerModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    loaded = model.state_dict()
    key = "encoder.block.0.0.attention.self.value.weight"
    c = TINY_MIT.embed_dims[0]
    v = next(t for n, t in loaded.items() if n.endswith(("stages.0.blocks.0.attention.v_proj.weight", key)))
    assert torch.equal(v, sd["backbone.block1.0.attn.kv.weight"][c:])
