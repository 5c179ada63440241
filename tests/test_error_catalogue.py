"""The README's error catalogue: each bad input gives one line naming the file and what to do (exit 1)."""

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from eval_data import coco_panoptic, semantic_folder
from helpers import assert_one_line_error, tree_digest, write_recipe
from PIL import Image

from layerseg_merge.cli import main

pytestmark = pytest.mark.usefixtures("inputs_untouched")  # every test: inputs untouched


def run(*args):
    return CliRunner().invoke(main, [*map(str, args)])


@pytest.fixture()
def copy_of(tmp_path, segformers):
    def make(index=2):
        path = tmp_path / f"copy{index}"
        shutil.copytree(segformers[index], path)
        return path
    return make


@pytest.mark.parametrize("damage,message", [
    (lambda p: p.write_bytes(b"garbage, not safetensors"), "truncated or corrupt header"),
    (lambda p: p.write_bytes(p.read_bytes()[:5000]), "truncated or corrupt header"),
    (lambda p: p.write_bytes(p.read_bytes()[:8 + int.from_bytes(p.read_bytes()[:8], "little") + 100]),
     "lies beyond the end of the file (truncated)"),
    (lambda p: p.write_bytes((10**12).to_bytes(8, "little") + b"{}"), "truncated or corrupt header"),
    (lambda p: p.write_bytes((20).to_bytes(8, "little") + b"{not json at all....}"), "corrupt safetensors header"),
])
def test_broken_weights_are_named(tmp_path, segformers, copy_of, damage, message):
    broken = copy_of()
    damage(broken / "model.safetensors")
    before = tree_digest(*segformers[:2])
    recipe = write_recipe(tmp_path / "r.yaml", [segformers[0], segformers[1], broken], segformers[0])
    assert_one_line_error(run("merge", recipe, tmp_path / "out"), str(broken / "model.safetensors"), message)
    assert tree_digest(*segformers[:2]) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("content,message", [
    ("{ not json", "config.json: not valid JSON"),
    (json.dumps({"architectures": ["SegformerForSemanticSegmentation"]}), "config.json: no `model_type`"),
    ("[" * 100000 + "]" * 100000, "config.json: nested more deeply than a model config is"),
])
def test_broken_config_is_named(tmp_path, segformers, copy_of, content, message):
    broken = copy_of()
    (broken / "config.json").write_text(content)
    recipe = write_recipe(tmp_path / "r.yaml", [segformers[0], broken], segformers[0])
    assert_one_line_error(run("merge", recipe, tmp_path / "out"), str(broken), message)
    data = semantic_folder(tmp_path / "data", count=1)
    assert_one_line_error(run("eval", broken, "--data", f"folder:{data}", "--workers", "0"), str(broken), message)


def test_missing_model_path_says_how_relative_paths_resolve(tmp_path, segformers, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path / "r.yaml", [segformers[0], "models/typo"], segformers[0])
    assert_one_line_error(run("merge", recipe, tmp_path / "out"), "model path 'models/typo' not found",
                          f"relative paths are resolved from the current directory, {tmp_path}")


def test_cuda_without_a_gpu(tmp_path, segformers, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    assert_one_line_error(run("merge", recipe, tmp_path / "out", "--cuda"), "no CUDA device")
    data = semantic_folder(tmp_path / "data", count=1)
    assert_one_line_error(run("eval", segformers[0], "--data", f"folder:{data}", "--device", "cuda"),
                          "--device cuda: this machine has no CUDA device")


@pytest.mark.parametrize("content,message", [
    ("not json", "not a report JSON"),
    (json.dumps({"accuracy": 1}), "not a layerseg report"),
    (json.dumps([1, 2]), "not a layerseg report"),
])
def test_compare_on_bad_json(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    assert_one_line_error(run("compare", tmp_path / "bad.json"), str(tmp_path / "bad.json"), message)


@pytest.mark.parametrize("count", ["0", "-3"])
def test_score_semantic_num_classes_must_be_positive(tmp_path, count):
    data = semantic_folder(tmp_path / "data", count=1)
    assert_one_line_error(run("score", "semantic", "--gt", data / "labels", "--pred", data / "labels",
                              "--num-classes", count), "--num-classes must be at least 1")


def test_score_panoptic_with_empty_categories(tmp_path):
    images, gt_json, pngs = coco_panoptic(tmp_path / "data", count=1)
    data = json.loads(gt_json.read_text())
    data["categories"] = []
    gt_json.write_text(json.dumps(data))
    assert_one_line_error(run("score", "panoptic", "--gt-json", gt_json, "--gt-folder", pngs, "--pred-json", gt_json,
                              "--pred-folder", pngs), "`categories` is empty")


def test_eval_checks_the_report_path_before_evaluating(tmp_path, segformers, monkeypatch):
    import layerseg_merge.eval.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "evaluate", lambda *a, **k: pytest.fail("evaluation ran"))
    data = semantic_folder(tmp_path / "data", count=1)
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "r.json"
    assert_one_line_error(run("eval", segformers[0], "--data", f"folder:{data}", "--out", out), "is not a folder")
    assert_one_line_error(run("eval", segformers[0], "--data", f"folder:{data}", "--out",
                              segformers[0] / "config.json"), "would be written inside the input")


@pytest.mark.parametrize("command", ["eval", "score"])
def test_dataloader_worker_errors_show_their_own_message(tmp_path, segformers, command):
    data = semantic_folder(tmp_path / "data", count=4)
    victim = sorted((data / "images").rglob("*.png"))[1]
    victim.write_bytes(b"not a png")
    if command == "eval":
        args = ["eval", segformers[0], "--data", f"folder:{data}", "--workers", "2"]
        broken = victim
    else:
        label = sorted((data / "labels").rglob("*.png"))[1]
        preds = tmp_path / "preds"
        shutil.copytree(data / "labels", preds)
        broken = preds / label.relative_to(data / "labels")
        broken.write_bytes(b"not a png")
        args = ["score", "semantic", "--gt", data / "labels", "--pred", preds, "--num-classes", "5"]
    line = assert_one_line_error(run(*args), f"{broken}: cannot read image")
    assert "Caught DatasetError" not in line and "worker process" not in line


def test_label_values_out_of_range_in_a_worker(tmp_path):
    data = semantic_folder(tmp_path / "data", count=2, classes=3)
    label = sorted((data / "labels").rglob("*.png"))[0]
    array = np.asarray(Image.open(label)).copy()
    array[0, 0] = 9
    Image.fromarray(array).save(label)
    assert_one_line_error(run("score", "semantic", "--gt", data / "labels", "--pred", data / "labels",
                              "--num-classes", "3"), "value 9 is outside [0, 2]")


@pytest.mark.parametrize("damage,detail", [
    (lambda p: p.write_bytes(b"garbage"), "Unsupported operand"),
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "failed finding central directory"),
])
def test_a_broken_pytorch_model_bin_is_named_by_eval(tmp_path, copy_of, damage, detail):
    from safetensors.torch import load_file

    model = copy_of(0)
    weights = model / "pytorch_model.bin"
    torch.save(load_file(model / "model.safetensors"), weights)
    (model / "model.safetensors").unlink()
    damage(weights)
    data = semantic_folder(tmp_path / "data", count=1)
    line = assert_one_line_error(run("eval", model, "--data", f"folder:{data}", "--workers", "0"),
                                 f"{weights}: not a PyTorch weights file, or truncated (", detail,
                                 "re-save or re-download the model")
    assert "Weights only load failed" not in line
