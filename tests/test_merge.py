"""layerwise_seg through mergekit: every output tensor equals DESIGN.md §3, computed here."""

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_in_process
from helpers import (
    expected_coefficients,
    mergekit_yaml,
    segformer_depths,
    tensors,
    tiny_segformer_config,
    write_recipe,
)

WEIGHTS = [1.0, 2.0, 0.5]
MERGEKIT_YAML = shutil.which("mergekit-yaml") or str(Path(sys.executable).parent / "mergekit-yaml")


def expected_merge(inputs, anchor, weights, buffers="pooled", **settings):
    """The merged state dict of DESIGN.md §3, from the input state dicts."""
    role_depth = segformer_depths(tiny_segformer_config())
    out = {}
    for name, anchor_value in inputs[anchor].items():
        if not anchor_value.is_floating_point():
            out[name] = anchor_value
            continue
        role, depth = role_depth(name)
        c = expected_coefficients(weights, anchor, role, depth, **settings)
        stats = name.endswith(("running_mean", "running_var"))
        if stats and buffers == "anchor":
            out[name] = anchor_value
            continue
        value = sum(ci * x[name].double() for ci, x in zip(c, inputs))
        if stats and buffers == "pooled" and name.endswith("running_var"):
            mean_name = name.replace("running_var", "running_mean")
            mean = sum(ci * x[mean_name].double() for ci, x in zip(c, inputs))
            value = sum(ci * (x[name].double() + (x[mean_name].double() - mean) ** 2)
                        for ci, x in zip(c, inputs))
        out[name] = value.to(anchor_value.dtype)
    return out


def assert_matches(out_dir, inputs, expected):
    got = tensors(out_dir)
    assert sorted(got) == sorted(inputs[0])  # nothing dropped, nothing invented
    for name, want in expected.items():
        assert got[name].dtype == want.dtype, name
        if want.is_floating_point():
            torch.testing.assert_close(got[name], want, rtol=1e-5, atol=1e-6, msg=name)
        else:
            assert torch.equal(got[name], want), name


SETTINGS = [
    dict(schedule=s, heads=h, buffers=b, uniform_until=u, anchor_max=a)
    for (s, h, b), (u, a) in zip(
        itertools.product(["linear", "cosine", "step"], ["anchor", "schedule", "uniform"],
                          ["pooled", "anchor", "mean"]),
        itertools.cycle([(0.5, 1.0), (0.2, 0.8), (0.0, 0.6)]),
    )
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(map(str, s.values())))
def test_in_process_merge_equals_formula(tmp_path, segformers, settings):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[1], weights=WEIGHTS, **settings)
    out = run_in_process(recipe, tmp_path / "out")
    inputs = [tensors(p) for p in segformers]
    buffers = settings.pop("buffers")
    assert_matches(out, inputs, expected_merge(inputs, 1, WEIGHTS, buffers, **settings))


@pytest.mark.parametrize(
    "settings",
    [dict(schedule="linear", heads="anchor", buffers="pooled"),
     dict(schedule="cosine", heads="schedule", buffers="anchor", uniform_until=0.25),
     dict(schedule="step", heads="uniform", buffers="mean", anchor_max=0.7)],
    ids=["linear-anchor-pooled", "cosine-schedule-anchor", "step-uniform-mean"],
)
def test_real_mergekit_yaml_executable(tmp_path, segformers, settings):
    """The first through the installed console script (the start-up hook registers us), the others in-process."""
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0], weights=WEIGHTS, **settings)
    if settings["schedule"] == "linear":
        result = subprocess.run([MERGEKIT_YAML, str(recipe), str(tmp_path / "out"), "--no-copy-tokenizer"],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        code, text = mergekit_yaml(recipe, tmp_path / "out")
        assert code == 0, text[-3000:]
    inputs = [tensors(p) for p in segformers]
    buffers = settings.pop("buffers")
    assert_matches(tmp_path / "out", inputs, expected_merge(inputs, 0, WEIGHTS, buffers, **settings))


def test_output_loads_with_transformers_and_runs(tmp_path, segformers):
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    out = run_in_process(recipe, tmp_path / "out")
    model = AutoModelForSemanticSegmentation.from_pretrained(out).eval()
    assert type(model).__name__ == "SegformerForSemanticSegmentation"
    assert AutoImageProcessor.from_pretrained(out) is not None  # preprocessor_config copied
    with torch.no_grad():
        logits = model(pixel_values=torch.randn(1, 3, 64, 64)).logits
    assert logits.shape == (1, 5, 16, 16) and torch.isfinite(logits).all()
    merged = tensors(out)
    for name, value in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            assert value.item() == merged["decode_head.batch_norm.num_batches_tracked"].item()


def test_integer_tensors_are_the_anchors_even_with_a_float_merge_dtype(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[2])
    data = yaml.safe_load(recipe.read_text())
    data["dtype"] = "float32"  # mergekit would cast and average integers here
    recipe.write_text(yaml.safe_dump(data))
    out = run_in_process(recipe, tmp_path / "out")
    name = "decode_head.batch_norm.num_batches_tracked"
    got, anchor = tensors(out)[name], tensors(segformers[2])[name]
    assert got.dtype == torch.int64 and torch.equal(got, anchor)
    assert {tensors(p)[name].item() for p in segformers} == {3, 10, 17}  # they really differ


def test_half_precision_anchor_keeps_its_dtype(tmp_path, segformers):
    from helpers import save_model
    from transformers import SegformerForSemanticSegmentation

    half = save_model(SegformerForSemanticSegmentation, tiny_segformer_config(), tmp_path / "h", 5,
                      dtype=torch.bfloat16)
    recipe = write_recipe(tmp_path / "r.yaml", [half, segformers[0]], half)
    out = tensors(run_in_process(recipe, tmp_path / "out"))
    assert out["segformer.encoder.block.0.0.mlp.dense1.weight"].dtype == torch.bfloat16
    assert out["decode_head.batch_norm.running_var"].dtype == torch.bfloat16


def test_hook_can_be_disabled(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    env = dict(os.environ, LAYERSEG_MERGE_NO_HOOK="1")
    result = subprocess.run([MERGEKIT_YAML, str(recipe), str(tmp_path / "out")],
                            capture_output=True, text=True, env=env)
    from importlib.util import find_spec

    if find_spec("mergekit.merge_methods.layerwise_seg") is not None:  # upstream patch 0011: mergekit's own
        assert result.returncode == 0, result.stderr[-2000:]
        assert "layerseg-merge" not in (tmp_path / "out" / "README.md").read_text()  # mergekit's card, not ours
        return
    assert result.returncode != 0
    assert "Unimplemented merge method layerwise_seg" in result.stderr
