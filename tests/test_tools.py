"""layerseg analyze / sweep / recalibrate, and the in-memory merges the sweep runs on."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import run_in_process
from eval_data import semantic_folder
from helpers import tensors, write_recipe
from PIL import Image

from layerseg_merge.architectures import layout_of
from layerseg_merge.cli import main
from layerseg_merge.engine.in_memory import Candidate, LoadedInputs
from layerseg_merge.engine.settings import ScheduleSettings


def run(*args):
    return CliRunner().invoke(main, [*map(str, args)])


# ----------------------------------------------------------------------------------------- analyze


def test_analyze_equals_a_direct_computation(tmp_path, segformers):
    result = run("analyze", segformers[1], segformers[0], segformers[2], "--out", tmp_path / "a.json",
                 "--plot", tmp_path / "a.png")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["anchor"] == str(segformers[1]) and Image.open(tmp_path / "a.png").format == "PNG"
    states = {str(p): tensors(p) for p in segformers}
    layout = layout_of(str(segformers[1]))

    def weights(info):
        return info.dtype.is_floating_point and not info.name.endswith(("running_mean", "running_var"))

    heads = [t.name for t in layout.heads if weights(t)]
    for entry in report["layers"]:
        group = heads if entry["role"] == "head" else [t.name for t in layout.layers[entry["layer"]] if weights(t)]
        flat = {m: torch.cat([s[n].double().flatten() for n in group]) for m, s in states.items()}
        mean = torch.stack(list(flat.values())).mean(0)
        a = flat[str(segformers[1])]
        assert entry["parameters"] == a.numel()
        for model, vector in flat.items():
            for key, reference in (("to_anchor", a), ("to_mean", mean)):
                if key == "to_anchor" and model == str(segformers[1]):
                    continue
                got = entry[key][model]
                assert got["relative_l2"] == pytest.approx(float((vector - reference).norm() / reference.norm()),
                                                           rel=1e-9)
                assert got["cosine"] == pytest.approx(float(vector @ reference / (vector.norm() * reference.norm())),
                                                      rel=1e-9)
    assert [e["depth"] for e in report["layers"] if e["role"] == "backbone"] == sorted(
        {t.depth for layer in layout.layers for t in layer})


def test_task_vectors_against_a_base_equal_a_direct_computation(tmp_path, segformers):
    """--base: each layer's task vectors (w - base) against the anchor's: cosine and size relative to the base."""
    result = run("analyze", segformers[1], segformers[2], "--base", segformers[0], "--out", tmp_path / "a.json")
    assert result.exit_code == 0, result.output
    assert "task vectors (w - " in result.output
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["base"] == str(segformers[0])
    states = {str(p): tensors(p) for p in segformers}
    layout = layout_of(str(segformers[1]))

    def weights(info):
        return info.dtype.is_floating_point and not info.name.endswith(("running_mean", "running_var"))

    for entry in report["layers"]:
        group = [t.name for t in (layout.heads if entry["role"] == "head" else layout.layers[entry["layer"]])
                 if weights(t)]
        flat = {m: torch.cat([s[n].double().flatten() for n in group]) for m, s in states.items()}
        base, anchor = flat[str(segformers[0])], flat[str(segformers[1])] - flat[str(segformers[0])]
        vector = flat[str(segformers[2])] - base
        got = entry["task_vectors"][str(segformers[2])]
        assert got["cosine_to_anchor"] == pytest.approx(float(vector @ anchor / (vector.norm() * anchor.norm())),
                                                        rel=1e-9)
        assert got["relative_norm"] == pytest.approx(float(vector.norm() / base.norm()), rel=1e-9)
        assert entry["task_vectors"][str(segformers[1])]["cosine_to_anchor"] == pytest.approx(1.0)


def test_interpolation_runs_from_the_anchor_to_each_model(tmp_path):
    """--interpolate: the line's ends are the two models as they are (the same numbers as evaluating them)."""
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.eval.options import DataOptions, InferenceOptions
    from layerseg_merge.resources import DEMO_ASSETS

    models = DEMO_ASSETS / "models"
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for image in sorted((DEMO_ASSETS / "target_test" / "images").glob("*.png"))[:6]:
        shutil.copy(image, data / "images" / image.name)
        shutil.copy(DEMO_ASSETS / "target_test" / "labels" / image.name, data / "labels" / image.name)
    shutil.copy(DEMO_ASSETS / "target_test" / "classes.txt", data / "classes.txt")
    result = run("analyze", models / "dacs", models / "dr", models / "mic", "--interpolate", f"folder:{data}",
                 "--steps", "3", "--out", tmp_path / "a.json", "--plot", tmp_path / "a.png", "--device", "cpu")
    assert result.exit_code == 0, result.output
    line = json.loads((tmp_path / "a.json").read_text())["interpolation"]
    assert line["steps"] == [0.0, 0.5, 1.0] and line["metric"] == "mIoU"
    dr, mic = line["curves"][str(models / "dr")], line["curves"][str(models / "mic")]
    assert dr["heads"] == "uniform" and mic["heads"] == "anchor"  # MIC's wider head cannot be interpolated

    def miou(name):
        return evaluate(models / name, DataOptions(f"folder:{data}", workers=0), infer=InferenceOptions("cpu"),
                        progress=False)["mIoU"]

    assert dr["values"][0] == mic["values"][0] == miou("dacs") and dr["values"][-1] == miou("dr")
    assert Image.open(tmp_path / "a-interpolation.png").format == "PNG"


# ----------------------------------------------------------------------------------------- in memory


@pytest.mark.parametrize("settings", [
    dict(schedule="linear", heads="anchor", buffers="pooled", uniform_until=0.5, anchor_max=1.0),
    dict(schedule="cosine", heads="schedule", buffers="anchor", uniform_until=0.2, anchor_max=0.8),
    dict(schedule="step", heads="uniform", buffers="mean", uniform_until=0.0, anchor_max=0.6),
    dict(schedule="cosine", heads="uniform", buffers="pooled", uniform_until=0.25, anchor_max=0.9),
])
def test_in_memory_merges_equal_layerseg_merge_tensor_by_tensor(tmp_path, segformers, settings):
    weights = [1.0, 2.0, 0.5]
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[1], weights=weights, **settings)
    assert run("merge", recipe, tmp_path / "out").exit_code == 0
    on_disk = tensors(tmp_path / "out")
    buffers = settings.pop("buffers")
    merged = LoadedInputs([str(p) for p in segformers], weights).merge(
        Candidate(1, ScheduleSettings(**settings, buffers=buffers)))
    assert merged.keys() == on_disk.keys()
    for name, value in on_disk.items():
        assert merged[name].dtype == value.dtype and torch.equal(merged[name], value), name


def test_in_memory_merge_across_hosts_equals_mergekit(tmp_path):
    from hosts import build

    paths = [build(host, tmp_path / f"{host}{i}", seed=i)
             for i, host in enumerate(("mask2former_swin", "upernet_swin", "mask2former_swin"))]
    recipe = write_recipe(tmp_path / "r.yaml", paths, paths[0], heads="uniform", uniform_until=0.25)
    on_disk = tensors(run_in_process(recipe, tmp_path / "out"))
    merged = LoadedInputs([str(p) for p in paths]).merge(
        Candidate(0, ScheduleSettings(uniform_until=0.25, heads="uniform")))
    assert merged.keys() == on_disk.keys()
    assert all(torch.equal(merged[n], on_disk[n]) for n in on_disk)


# ----------------------------------------------------------------------------------------- sweep


def test_sweep_finds_a_known_optimum_and_never_reads_the_test_split(tmp_path, monkeypatch):
    from layerseg_merge.cli.demo import recipe_for
    from layerseg_merge.eval import images as images_module
    from layerseg_merge.eval.inference import Segmenter
    from layerseg_merge.eval.options import InferenceOptions
    from layerseg_merge.resources import DEMO_ASSETS

    # The demo's trained models (their predictions differ from one setting to the next). Validation
    # labels are the predictions of one candidate: that candidate, and only it, scores 1.
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(recipe_for("miniature_different_heads", False, DEMO_ASSETS)))
    models = yaml.safe_load(recipe.read_text())["models"]
    dr = models[1]["model"]
    target = dict(schedule="cosine", uniform_until=0.25, anchor_max=0.75)
    target_recipe = write_recipe(tmp_path / "target.yaml", [m["model"] for m in models], dr, **target)
    assert run("merge", target_recipe, tmp_path / "target_model").exit_code == 0
    val = tmp_path / "val"
    shutil.copytree(DEMO_ASSETS / "target_val" / "images", val / "images")
    (val / "labels").mkdir()
    for path in sorted((val / "images").glob("*.png"))[8:]:
        path.unlink()
    segmenter = Segmenter(tmp_path / "target_model", InferenceOptions("cpu"))
    for path in sorted((val / "images").glob("*.png")):
        image = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        (prediction,) = segmenter.semantic(image[None], [tuple(image.shape[1:])])
        Image.fromarray(prediction.to(torch.uint8).numpy()).save(val / "labels" / path.name)
    test = DEMO_ASSETS / "target_test"
    read = []
    decode = images_module._decode
    monkeypatch.setattr(images_module, "_decode", lambda path, mode: read.append(str(path)) or decode(path, mode))

    result = run("sweep", recipe, "--data", f"folder:{val}", "--out", tmp_path / "sweep", "--device", "cpu",
                 "--workers", "0", "--grid", "uniform_until=0,0.25,1", "--grid", "anchor_max=0.75,1",
                 "--grid", "schedule=linear,cosine")
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "sweep" / "candidates.json").read_text())
    # per anchor 8 merges, 1 with uniform_until 1, and the anchor alone; plus the recipe's own setting
    assert len(found["candidates"]) == 3 * (2 * 2 * 2 + 1 + 1) + 1
    best, second = found["candidates"][:2]
    assert best["score"] == 1.0 and second["score"] < 1.0
    assert (best["anchor"], best["uniform_until"], best["anchor_max"], best["schedule"]) == (dr, 0.25, 0.75, "cosine")
    chosen = yaml.safe_load((tmp_path / "sweep" / "best_recipe.yaml").read_text())
    assert chosen["base_model"] == dr
    assert {k: chosen["parameters"][k] for k in target} == target
    assert read and not any(path.startswith(str(test)) for path in read)
    assert (tmp_path / "sweep" / "candidates.png").exists()
    assert "| 1 |" in (tmp_path / "sweep" / "candidates.md").read_text()


def test_unsupervised_sweep_ranks_without_labels(tmp_path, models):
    images = tmp_path / "unlabelled"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / f"{i}.png")
    recipe = write_recipe(tmp_path / "r.yaml", models, models[0])
    result = run("sweep", recipe, "--data", f"images:{images}", "--unsupervised", "--out", tmp_path / "sweep",
                 "--device", "cpu", "--workers", "0", "--grid", "uniform_until=0,1", "--grid", "anchor_max=1",
                 "--grid", "schedule=linear", "--grid", "anchor=0", "--cache-gb", "inf",  # inf: no limit
                 "--selector", "agreement-entropy")
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "sweep" / "candidates.json").read_text())
    assert found["metric"] == "label-free: agreement-entropy"
    for row in found["candidates"]:
        assert 0 <= row["entropy"] <= 1 and 0 <= row["agreement"] <= 1
        assert row["score"] == pytest.approx(row["agreement"] - row["entropy"])
    assert "by agreement-entropy (label-free)" in (tmp_path / "sweep" / "best_recipe.yaml").read_text()


# ----------------------------------------------------------------------------------------- recalibrate


def test_recalibration_equals_hand_computed_statistics(tmp_path, models):
    from layerseg_merge.eval.inference import Segmenter
    from layerseg_merge.eval.options import InferenceOptions

    data = semantic_folder(tmp_path / "data", count=5, size=(48, 40))
    out = tmp_path / "recalibrated"
    result = run("recalibrate", models[0], "--data", f"folder:{data}", "--out", out, "--batch-size", "2",
                 "--workers", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "1 BatchNorm layers re-estimated on 5 images (3 batches)" in result.output
    # By hand: the BatchNorm's inputs per batch (dataset order, batches of 2), their means and unbiased
    # variances, averaged over the batches (PyTorch's cumulative average).
    segmenter = Segmenter(models[0], InferenceOptions("cpu"))
    captured = []
    segmenter.model.decode_head.batch_norm.register_forward_hook(lambda m, args, out: captured.append(args[0]))
    paths = sorted((data / "images").rglob("*.png"))
    pictures = [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths]
    with torch.no_grad():
        for first in range(0, len(pictures), 2):
            segmenter.model(**segmenter.inputs(torch.stack(pictures[first:first + 2])))
    means = torch.stack([x.mean((0, 2, 3)) for x in captured]).mean(0)
    variances = torch.stack([x.transpose(0, 1).flatten(1).var(1, unbiased=True) for x in captured]).mean(0)
    before, after = tensors(models[0]), tensors(out)
    torch.testing.assert_close(after["decode_head.batch_norm.running_mean"], means, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(after["decode_head.batch_norm.running_var"], variances, rtol=1e-5, atol=1e-6)
    assert int(after["decode_head.batch_norm.num_batches_tracked"]) == 3
    assert before.keys() == after.keys()
    statistics = {f"decode_head.batch_norm.{b}" for b in ("running_mean", "running_var", "num_batches_tracked")}
    for name in before.keys() - statistics:
        assert before[name].dtype == after[name].dtype and torch.equal(before[name], after[name]), name
    assert json.loads((out / "config.json").read_text())["layerseg_recalibrated"]["images"] == 5


def test_a_model_without_batchnorm_is_a_clear_no_op(tmp_path):
    from hosts import mask2former
    from transformers import Mask2FormerImageProcessor

    path = tmp_path / "m2f"
    mask2former().save_pretrained(path)
    Mask2FormerImageProcessor(size={"shortest_edge": 32, "longest_edge": 64}).save_pretrained(path)
    data = semantic_folder(tmp_path / "data", count=2)
    result = run("recalibrate", path, "--data", f"folder:{data}", "--out", tmp_path / "out", "--device", "cpu",
                 "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "has no BatchNorm layers: there is nothing to recalibrate; nothing was written" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "m2f"]


def test_merge_recalibrate_re_estimates_the_merge(tmp_path, models, monkeypatch):
    data = semantic_folder(tmp_path / "data", count=3, size=(48, 40))
    recipe = write_recipe(tmp_path / "r.yaml", models, models[0])
    assert run("merge", recipe, tmp_path / "plain").exit_code == 0
    # the same torch threads both ways (the thread policy honours OMP_NUM_THREADS): a thread count can move a
    # float sum by a rounding step
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = run("merge", recipe, tmp_path / "recal", "--recalibrate", f"folder:{data}")
    assert result.exit_code == 0, result.output
    assert "BatchNorm statistics re-estimated on 3 images" in result.output
    plain, recal = tensors(tmp_path / "plain"), tensors(tmp_path / "recal")
    assert plain.keys() == recal.keys()
    changed = {n for n in plain if not torch.equal(plain[n], recal[n])}
    assert changed == {f"decode_head.batch_norm.{b}" for b in ("running_mean", "running_var", "num_batches_tracked")}
    assert run("recalibrate", tmp_path / "plain", "--data", f"folder:{data}", "--out", tmp_path / "again",
               "--device", "cpu", "--workers", "0", "--batch-size", "8").exit_code == 0
    again = tensors(tmp_path / "again")
    assert all(torch.equal(again[n], recal[n]) for n in changed)


def test_sweep_and_recalibrate_guard_only_real_dataset_paths():
    """`acdc:ROOT,night`: ROOT is an input the output may not touch, `night` is a condition, not a folder."""
    from layerseg_merge.cli.tools import _data_paths

    assert _data_paths("acdc:/data/acdc,night,snow") == ["/data/acdc"]
    assert _data_paths("coco-panoptic:/i,/p.json,/png") == ["/i", "/p.json", "/png"]
