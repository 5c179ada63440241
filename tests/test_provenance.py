"""Every evaluation report records what it measured (``provenance``): model and weight digests, data, split, images,
classes averaged, pipeline, versions, date."""

import datetime
import hashlib
import json
import subprocess
import sys
from importlib.metadata import version

import torch
from click.testing import CliRunner
from eval_data import CATEGORIES, coco_panoptic, semantic_folder

from layerseg_merge.cli import main
from layerseg_merge.eval.provenance import weight_digests


def evaluated(tmp_path, model, *options, data=None) -> dict:
    data = data or f"folder:{semantic_folder(tmp_path / 'data', count=3)}"
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["eval", str(model), "--data", data, "--workers", "0", "--device", "cpu",
                                       "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_a_report_records_what_it_measured(tmp_path, segformers):
    report = evaluated(tmp_path, segformers[0], "--slide", "32,24", "--batch-size", "2")
    assert {"mIoU", "aAcc", "mAcc", "per_class"} < set(report)  # DESIGN.md's keys stay as they are
    record = report["provenance"]
    assert record["model"] == {"path": str(segformers[0]), "resolved": str(segformers[0].resolve()),
                               "architecture": "SegformerForSemanticSegmentation", "in_memory": False,
                               "weights": {"model.safetensors": hashlib.sha256(
                                   (segformers[0] / "model.safetensors").read_bytes()).hexdigest()}}
    root = tmp_path / "data"
    assert record["data"] == {"spec": f"folder:{root}", "kind": "folder", "root": str(root), "paths": [str(root)],
                              "config": None, "split": None, "limit": None, "images": 3}  # a folder is read whole
    assert record["classes"] == {"averaged": [n for n, e in report["per_class"].items() if e["IoU"] is not None],
                                 "subset": None}
    assert record["pipeline"] == {"task": "semantic", "device": "cpu", "amp": "off", "slide": [32, 24],
                                  "preprocess": "auto", "preprocessing": "device", "batch_size": 2, "compile": False,
                                  "processes": 1, "mmseg": None, "test_scale": None}
    assert record["versions"]["layerseg-merge"] == version("layerseg-merge")
    assert record["versions"]["mergekit"] == version("mergekit") and record["versions"]["torch"] == torch.__version__
    age = datetime.datetime.now(datetime.UTC) - datetime.datetime.fromisoformat(record["date"])
    assert datetime.timedelta(0) <= age < datetime.timedelta(minutes=10)
    assert record["show_dir"] is None


def test_the_split_really_read_and_an_image_limit(tmp_path, segformers):
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.eval.options import DataOptions, InferenceOptions

    root = tmp_path / "cityscapes"
    for split, count in (("val", 3), ("train", 1)):
        folder = semantic_folder(tmp_path / split, count=count)
        for image in (folder / "images").rglob("*.png"):
            name = f"{image.parent.name}_{image.stem}"
            (root / "leftImg8bit" / split / "c").mkdir(parents=True, exist_ok=True)
            (root / "gtFine" / split / "c").mkdir(parents=True, exist_ok=True)
            image.rename(root / "leftImg8bit" / split / "c" / f"{name}_leftImg8bit.png")
            (folder / "labels" / image.relative_to(folder / "images")).rename(
                root / "gtFine" / split / "c" / f"{name}_gtFine_labelTrainIds.png")
    model = segformers[0]
    report = evaluate(model, DataOptions(f"cityscapes:{root}", "val", limit=2, workers=0),
                      infer=InferenceOptions("cpu"), progress=False)
    data = report["provenance"]["data"]
    assert (data["kind"], data["split"], data["limit"], data["images"]) == ("cityscapes", "val", 2, 2)
    report = evaluate(model, DataOptions(f"cityscapes:{root}", "train", workers=0), infer=InferenceOptions("cpu"),
                      progress=False)
    assert (report["provenance"]["data"]["split"], report["provenance"]["data"]["images"]) == ("train", 1)


def test_weights_given_in_memory_have_no_file_digest(tmp_path, segformers):
    from safetensors.torch import load_file

    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.eval.options import DataOptions, InferenceOptions

    data = semantic_folder(tmp_path / "data", count=1)
    tensors = load_file(segformers[0] / "model.safetensors")
    report = evaluate(segformers[0], DataOptions(f"folder:{data}", workers=0), infer=InferenceOptions("cpu"),
                      progress=False, tensors=tensors)
    assert report["provenance"]["model"]["weights"] is None and report["provenance"]["model"]["in_memory"]


def test_each_shard_has_its_digest(tmp_path):
    for name, content in (("model-00001-of-00002.safetensors", b"one"), ("model-00002-of-00002.safetensors", b"2")):
        (tmp_path / name).write_bytes(content)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    assert weight_digests(tmp_path) == {"model-00001-of-00002.safetensors": hashlib.sha256(b"one").hexdigest(),
                                        "model-00002-of-00002.safetensors": hashlib.sha256(b"2").hexdigest()}


def test_panoptic_categories_averaged(tmp_path):
    from hosts import panoptic_mask2former

    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.eval.options import DataOptions, InferenceOptions

    images, gt_json, pngs = coco_panoptic(tmp_path / "data", count=2)
    model = panoptic_mask2former(tmp_path / "m2f", CATEGORIES, {"height": 32, "width": 32})
    report = evaluate(model, DataOptions(f"coco-panoptic:{images},{gt_json},{pngs}", workers=0), "panoptic",
                      InferenceOptions("cpu"), progress=False)
    record = report["provenance"]
    averaged = [cid for cid, e in report["per_class"].items() if e["pq"] is not None]  # (evaluate names no category)
    assert averaged and record["classes"]["averaged"] == averaged
    assert record["pipeline"]["task"] == "panoptic" and record["data"]["kind"] == "coco-panoptic"


def test_averaged_categories_are_named_where_the_report_names_them():
    from layerseg_merge.eval.provenance import averaged_classes

    split = {"pq": 0.5, "sq": 0.7, "rq": 0.6, "n": 1}
    report = {"All": split, "Things": split, "Stuff": split,
              "per_class": {"7": {"name": "road", "pq": 0.5}, "8": {"pq": 0.25}, "26": {"name": "car", "pq": None}}}
    assert averaged_classes(report) == ["road (7)", "8"]
    assert averaged_classes({"mIoU": 0.5, "per_class": {"road": {"IoU": 0.5}, "sky": {"IoU": None}}}) == ["road"]


def test_an_imported_mmseg_model_records_its_test_pipeline(tmp_path):
    from mmseg_reference import import_, small_checkpoint

    checkpoint, _ = small_checkpoint(tmp_path, "daformer", seed=3)
    model, _ = import_(checkpoint, tmp_path / "daformer", "--test-scale", "64,32")
    pipeline = evaluated(tmp_path, model)["provenance"]["pipeline"]
    settings = json.loads((model / "config.json").read_text())["layerseg_mmseg"]
    assert pipeline["preprocessing"] == "mmseg" and pipeline["mmseg"]["kind"] == "daformer"
    assert pipeline["mmseg"]["test_pipeline"]["img_scale"] == [64, 32] == settings["test_pipeline"]["img_scale"]


def test_reading_the_versions_imports_no_mergekit():
    script = ("import sys; from layerseg_merge.eval.provenance import versions; found = versions(); "
              "print(found['mergekit'], 'mergekit' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == [version("mergekit"), "False"]
