"""`layerseg predict`: predictions as files, each benchmark server's layout on a tiny tree laid out as the download
is, the round trip predict -> score = eval, atomic output, torchrun."""

import fnmatch
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from eval_data import CITYSCAPES_LABELS, semantic_folder
from helpers import assert_one_line_error, free_port
from PIL import Image

from layerseg_merge.cli import main
from layerseg_merge.resources import DEMO_ASSETS

TEST = DEMO_ASSETS / "target_test"
CITYSCAPES_NAMES = [row[0] for row in CITYSCAPES_LABELS]
WORKER = Path(__file__).with_name("cli_worker.py")


def run(*args):
    return CliRunner().invoke(main, [*map(str, args)])


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def save_image(path: Path, seed: int, size=(48, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def cityscapes_model(tmp_path_factory):
    """A tiny SegFormer of the 19 Cityscapes classes, its id2label in another order than the train ids (the output
    must be matched by name), plus a center/offset panoptic head."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    order = list(np.random.default_rng(1).permutation(19))
    names = [CITYSCAPES_NAMES[i] for i in order]
    path = tmp_path_factory.mktemp("cityscapes_model")
    torch.manual_seed(0)
    config = SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 2, 2],
                             decoder_hidden_size=16, num_labels=22,
                             id2label={**dict(enumerate(names)), 19: "center", 20: "offset_y", 21: "offset_x"})
    config.panoptic_head = {"type": "center_offset", "num_classes": 19, "offset_scale": 4.0,
                            "thing_ids": [k for k, name in enumerate(names) if CITYSCAPES_NAMES.index(name) >= 11]}
    model = SegformerForSemanticSegmentation(config)
    with torch.no_grad():
        model.decode_head.classifier.bias[19] += 2.0  # some centers
    model.save_pretrained(path)
    SegformerImageProcessor(size={"height": 32, "width": 48}).save_pretrained(path)
    return path, names


def model_classes(model: Path, images: Path, tmp_path: Path) -> dict[str, np.ndarray]:
    """The model's own class indices per image name (images: data names no class, so nothing is mapped)."""
    out = tmp_path / "raw"
    result = run("predict", model, "--data", f"images:{images}", "--out", out, "--device", "cpu", "--workers", 0)
    assert result.exit_code == 0, result.output
    return {str(p.relative_to(out)): png(p) for p in out.rglob("*.png")}


# ------------------------------------------------------------------------------------------------ round trip


def test_predict_then_score_equals_eval_semantic(tmp_path):
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.eval.options import DataOptions, InferenceOptions

    model, out = DEMO_ASSETS / "models" / "dacs", tmp_path / "pred"
    result = run("predict", model, "--data", f"folder:{TEST}", "--split", "test", "--out", out, "--device", "cpu",
                 "--workers", 0)
    assert result.exit_code == 0, result.output
    scored = tmp_path / "scored.json"
    result = run("score", "semantic", "--gt", TEST / "labels", "--pred", out, "--num-classes", 6, "--class-names",
                 TEST / "classes.txt", "--workers", 0, "--out", scored)
    assert result.exit_code == 0, result.output
    report = evaluate(model, DataOptions(f"folder:{TEST}", workers=0), "semantic", InferenceOptions("cpu"),
                      progress=False)
    score = json.loads(scored.read_text())
    for key in ("mIoU", "aAcc", "mAcc", "per_class"):
        assert score[key] == report[key], key
    manifest = json.loads((out / "layerseg_predict.json").read_text())
    assert manifest["images"] == 48 and manifest["format"] == "train-ids" and len(manifest["files"]) == 48


def test_predict_then_score_equals_eval_panoptic(tmp_path):
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.eval.options import DataOptions, InferenceOptions

    model, out = DEMO_ASSETS / "models" / "panoptic", tmp_path / "pred"
    data = f"coco-panoptic:{TEST / 'images'},{TEST / 'panoptic.json'},{TEST / 'panoptic'}"
    result = run("predict", model, "--task", "panoptic", "--data", data, "--out", out, "--device", "cpu",
                 "--workers", 0)
    assert result.exit_code == 0, result.output
    scored = tmp_path / "scored.json"
    result = run("score", "panoptic", "--gt-json", TEST / "panoptic.json", "--gt-folder", TEST / "panoptic",
                 "--pred-json", out / "panoptic.json", "--pred-folder", out / "panoptic", "--workers", 0,
                 "--out", scored)
    assert result.exit_code == 0, result.output
    report = evaluate(model, DataOptions(data, workers=0), "panoptic", InferenceOptions("cpu"), progress=False)
    score = json.loads(scored.read_text())
    assert all(score[split] == report[split] for split in ("All", "Things", "Stuff"))
    assert {cid: {k: v for k, v in entry.items() if k != "name"} for cid, entry in score["per_class"].items()} \
        == report["per_class"]
    assert score["All"]["n"] == 6


# ------------------------------------------------------------------------------------------------ server formats


def test_label_id_table_is_cityscapes_scripts(cityscapes_model):
    from layerseg_merge.eval.split_images import cityscapes_categories
    from layerseg_merge.eval.submission import TRAIN_TO_LABEL_ID

    for name, label_id, train_id, _, instances, _ in CITYSCAPES_LABELS:
        assert TRAIN_TO_LABEL_ID[train_id] == label_id, name
        assert cityscapes_categories()[label_id] == {"id": label_id, "name": name, "isthing": int(instances)}
    assert TRAIN_TO_LABEL_ID[255] == 0  # outside the 19: unlabeled


def test_cityscapes_test_split_in_label_ids_as_the_server_matches_them(tmp_path, cityscapes_model):
    model, names = cityscapes_model
    root = tmp_path / "cityscapes_root"
    images = ["berlin/berlin_000000_000019", "berlin/berlin_000001_000019", "bonn/bonn_000004_000019"]
    for seed, stem in enumerate(images):
        save_image(root / "leftImg8bit" / "test" / f"{stem}_leftImg8bit.png", seed)
    raw = model_classes(model, root / "leftImg8bit" / "test", tmp_path)
    for form in ("train-ids", "cityscapes"):
        result = run("predict", model, "--data", f"cityscapes:{root}", "--split", "test", "--format", form,
                     "--out", tmp_path / form, "--device", "cpu", "--workers", 0, "--zip")
        assert result.exit_code == 0, result.output
    label_ids = {name: label for name, label, *_ in CITYSCAPES_LABELS}
    train_ids = {name: train for name, _, train, *_ in CITYSCAPES_LABELS}
    walk = [(folder, files) for folder, _, files in os.walk(tmp_path / "cityscapes")]
    for stem in images:
        name = f"{stem}_leftImg8bit.png"
        expected = np.array([label_ids[n] for n in names])[raw[name]]
        city, seq, frame = Path(stem).name.split("_")
        matches = [f for _, files in walk for f in fnmatch.filter(files, f"{city}_{seq}_{frame}*.png")]
        assert matches == [Path(name).name]  # cityscapesScripts getPrediction: exactly one file per image
        written = png(tmp_path / "cityscapes" / Path(name).name)
        assert written.dtype == np.uint8 and written.shape == (32, 48) and (written == expected).all()
        trained = png(tmp_path / "train-ids" / name)
        assert (trained == np.array([train_ids[n] for n in names])[raw[name]]).all()
    with zipfile.ZipFile(tmp_path / "cityscapes" / "submission.zip") as bundle:
        assert sorted(bundle.namelist()) == sorted(Path(f"{s}_leftImg8bit.png").name for s in images)
        member = bundle.read(Path(f"{images[0]}_leftImg8bit.png").name)
    assert member == (tmp_path / "cityscapes" / Path(f"{images[0]}_leftImg8bit.png").name).read_bytes()


def test_acdc_and_dark_zurich_test_splits_as_their_servers_take_them(tmp_path, cityscapes_model):
    model, names = cityscapes_model
    acdc = tmp_path / "acdc_root"
    acdc_names = [f"{condition}/{sequence}/{sequence}_frame_{frame}_rgb_anon.png" for condition, sequence, frame in (
        ("fog", "GOPR0475", "000041"), ("night", "GP010594", "000100"), ("rain", "GOPR0572", "000145"),
        ("snow", "GP010176", "000643"))]
    for seed, name in enumerate(acdc_names):
        condition, rest = name.split("/", 1)
        save_image(acdc / "rgb_anon" / condition / "test" / rest, seed)
    dz = tmp_path / "darkzurich_root"
    save_image(dz / "rgb_anon" / "test" / "night" / "GOPR0364" / "GOPR0364_frame_000001_rgb_anon.png", 5)
    save_image(dz / "rgb_anon" / "test" / "night" / "GOPR0364" / "GOPR0364_frame_000026_rgb_anon.png", 6)
    for data, form in ((f"acdc:{acdc}", "acdc"), (f"darkzurich:{dz}", "darkzurich")):
        result = run("predict", model, "--data", data, "--split", "test", "--format", form, "--out", tmp_path / form,
                     "--device", "cpu", "--workers", 0, "--zip")
        assert result.exit_code == 0, result.output
    train_ids = np.array([CITYSCAPES_NAMES.index(n) for n in names])
    raw = model_classes(model, acdc / "rgb_anon", tmp_path)
    for name in acdc_names:
        condition, rest = name.split("/", 1)
        written = png(tmp_path / "acdc" / "labelTrainIds" / Path(name).name)
        assert (written == train_ids[raw[f"{condition}/test/{rest}"]]).all()
    with zipfile.ZipFile(tmp_path / "acdc" / "submission.zip") as bundle:
        assert sorted(bundle.namelist()) == sorted(f"labelTrainIds/{Path(n).name}" for n in acdc_names)
    out = tmp_path / "darkzurich"
    with zipfile.ZipFile(out / "submission.zip") as bundle:
        assert {member.split("/")[0] for member in bundle.namelist()} == {
            "labelTrainIds", "labelTrainIds_invalid", "confidence"}
        assert len(bundle.namelist()) == 6
    for frame in ("000001", "000026"):
        name = f"GOPR0364_frame_{frame}_rgb_anon.png"
        labels, invalid = png(out / "labelTrainIds" / name), png(out / "labelTrainIds_invalid" / name)
        confidence = np.asarray(Image.open(out / "confidence" / name)).astype(np.int64)
        assert labels.shape == confidence.shape == (32, 48) and labels.max() < 19 and (invalid == labels).all()
        assert Image.open(out / "confidence" / name).mode.startswith("I;16")
        # the softmax probability of the predicted class: at least 1/19, at most 1, not constant
        assert confidence.min() >= 65535 // 19 and confidence.max() <= 65535 and len(np.unique(confidence)) > 1


def test_cityscapes_panoptic_test_split_in_the_servers_json(tmp_path, cityscapes_model):
    from layerseg_merge.eval.coco_json import read_coco_panoptic
    from layerseg_merge.eval.images import read_panoptic_ids

    model, _ = cityscapes_model
    root = tmp_path / "cityscapes_root"
    for seed, stem in enumerate(["mainz/mainz_000000_000093", "munich/munich_000001_000019"]):
        save_image(root / "leftImg8bit" / "test" / f"{stem}_leftImg8bit.png", seed, size=(64, 48))
    out = tmp_path / "out"
    result = run("predict", model, "--data", f"cityscapes-panoptic:{root}", "--split", "test", "--format",
                 "cityscapes-panoptic", "--out", out, "--device", "cpu", "--workers", 0, "--zip")
    assert result.exit_code == 0, result.output
    data = read_coco_panoptic(out / "cityscapes_panoptic_test.json")
    assert [c["id"] for c in data["categories"]] == [row[1] for row in CITYSCAPES_LABELS]
    assert [a["image_id"] for a in data["annotations"]] == ["mainz_000000_000093", "munich_000001_000019"]
    segments = 0
    for annotation in data["annotations"]:
        assert annotation["file_name"] == f"{annotation['image_id']}_panoptic.png"
        ids = read_panoptic_ids(out / "cityscapes_panoptic_test" / annotation["file_name"])
        assert ids.shape == (48, 64)
        for segment in annotation["segments_info"]:
            assert segment["category_id"] in {row[1] for row in CITYSCAPES_LABELS}
            assert segment["area"] == int((ids == segment["id"]).sum()) > 0
            segments += 1
        assert set(np.unique(ids)) - {0} == {s["id"] for s in annotation["segments_info"]}
    assert segments > 0
    with zipfile.ZipFile(out / "submission.zip") as bundle:
        assert sorted(bundle.namelist()) == ["cityscapes_panoptic_test.json",
                                             "cityscapes_panoptic_test/mainz_000000_000093_panoptic.png",
                                             "cityscapes_panoptic_test/munich_000001_000019_panoptic.png"]


# ------------------------------------------------------------------------------------------------ errors


def test_server_formats_refuse_images_the_server_cannot_match(tmp_path, cityscapes_model):
    model, _ = cityscapes_model
    data = semantic_folder(tmp_path / "data", count=2)
    result = run("predict", model, "--data", f"folder:{data}", "--format", "cityscapes", "--out", tmp_path / "o",
                 "--device", "cpu")
    assert_one_line_error(result, "img", "not named as the cityscapes server expects",
                          "CITY_SEQ_FRAME_leftImg8bit.png", "--data cityscapes:ROOT")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, fragments", [
    (["--format", "acdc", "--task", "panoptic"], ["--format acdc holds semantic predictions, not panoptic"]),
    (["--task", "panoptic"], ["a semantic model; --task panoptic needs"]),
])
def test_impossible_requests_are_refused_before_the_work(tmp_path, args, fragments):
    result = run("predict", DEMO_ASSETS / "models" / "dacs", "--data", f"folder:{TEST}", "--out", tmp_path / "o", *args)
    assert_one_line_error(result, *fragments)


@pytest.mark.parametrize("names, args, fragments", [
    (CITYSCAPES_NAMES, ["--format", "darkzurich"], ["the darkzurich format's confidence maps need per-pixel class "
                                                    "scores", "universal"]),
    (["tree", "bush"], ["--task", "panoptic"], ["its classes (tree, bush) are not Cityscapes classes", "no panoptic "
                                                "categories", "coco-panoptic:, cityscapes-panoptic:"]),
])
def test_what_a_universal_model_cannot_give_is_refused_before_it_is_loaded(tmp_path, names, args, fragments):
    model = tmp_path / "m2f"  # config.json alone: refused before the weights are looked for
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "mask2former", "id2label": dict(enumerate(names)),
                                                   "architectures": ["Mask2FormerForUniversalSegmentation"]}))
    data = tmp_path / "darkzurich"
    save_image(data / "rgb_anon" / "test" / "night" / "GOPR0364" / "GOPR0364_frame_000001_rgb_anon.png", 0)
    kind = "darkzurich" if "darkzurich" in args else "images"
    result = run("predict", model, "--data", f"{kind}:{data}", "--split", "test", "--out", tmp_path / "o", *args)
    assert_one_line_error(result, *fragments)


def test_output_inside_an_input_or_the_current_directory_is_refused(tmp_path, monkeypatch):
    data = semantic_folder(tmp_path / "data", count=2)
    model = DEMO_ASSETS / "models" / "dacs"
    result = run("predict", model, "--data", f"images:{data}", "--out", data / "predictions", "--device", "cpu")
    assert_one_line_error(result, "lies inside the input", str(data))
    monkeypatch.chdir(tmp_path)
    result = run("predict", model, "--data", f"images:{data}", "--out", ".", "--device", "cpu")
    assert_one_line_error(result, "is the current directory")


def test_classes_that_do_not_line_up_are_refused(tmp_path):
    data = semantic_folder(tmp_path / "data", count=2, classes=6)
    (data / "classes.txt").write_text("\n".join(["road", "sky", "building", "tree", "car", "pedestrian"]))
    result = run("predict", DEMO_ASSETS / "models" / "dacs", "--data", f"folder:{data}", "--out", tmp_path / "o")
    assert_one_line_error(result, "do not line up", "tree, pedestrian not among the model's")


def test_a_test_split_that_is_not_there_is_named(tmp_path, cityscapes_model):
    model, _ = cityscapes_model
    result = run("predict", model, "--data", f"darkzurich:{tmp_path}", "--split", "test", "--format", "darkzurich",
                 "--out", tmp_path / "o")
    assert_one_line_error(result, str(tmp_path / "rgb_anon" / "test"), "missing", "Dark_Zurich_test_anon_withoutGt")


# ------------------------------------------------------------------------------------------------ safe output


def test_output_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    from layerseg_merge.eval import predict as predict_module

    data = semantic_folder(tmp_path / "data", count=6)
    model, out = DEMO_ASSETS / "models" / "dacs", tmp_path / "out"
    command = ["predict", model, "--data", f"images:{data}", "--out", out, "--device", "cpu", "--workers", 0,
               "--batch-size", 2]
    assert run(*command).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert_one_line_error(run(*command), "is not empty", "--overwrite")
    saved = predict_module._save_png
    calls = []

    def failing(path, pixels):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(28, "No space left on device", str(path))
        saved(path, pixels)

    monkeypatch.setattr(predict_module, "_save_png", failing)
    result = run(*command, "--overwrite")
    assert_one_line_error(result, "no space left on the device")
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the old output, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]  # no staging left behind
    monkeypatch.setattr(predict_module, "_save_png", saved)
    assert run(*command, "--overwrite").exit_code == 0
    (out / "notes.txt").write_text("mine")
    assert_one_line_error(run(*command, "--overwrite"), "holds files this command did not write")
    assert (out / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------ torchrun


def test_predict_and_painting_under_torchrun_equal_one_process(tmp_path):
    data = semantic_folder(tmp_path / "data", count=5, classes=6)
    (data / "classes.txt").write_text((TEST / "classes.txt").read_text())
    ground_truth = json.loads((TEST / "panoptic.json").read_text())
    ground_truth["annotations"] = ground_truth["annotations"][:5]
    (tmp_path / "five.json").write_text(json.dumps(ground_truth))
    panoptic = f"coco-panoptic:{TEST / 'images'},{tmp_path / 'five.json'},{TEST / 'panoptic'}"
    common = ["--device", "cpu", "--workers", "0", "--batch-size", "1"]

    def commands(tag: str) -> list[list[str]]:
        return [["predict", str(DEMO_ASSETS / "models" / "dacs"), "--data", f"folder:{data}", "--out",
                 str(tmp_path / f"semantic_{tag}"), "--zip", *common],
                ["predict", str(DEMO_ASSETS / "models" / "panoptic"), "--task", "panoptic", "--data", panoptic,
                 "--out", str(tmp_path / f"panoptic_{tag}"), *common],
                ["eval", str(DEMO_ASSETS / "models" / "dacs"), "--data", f"folder:{data}", "--show-dir",
                 str(tmp_path / f"painted_{tag}"), "--show", "3", *common]]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the torchrun processes below: the same kernels, the same bits
    try:
        for command in commands("one"):
            result = run(*command)
            assert result.exit_code == 0, result.output
    finally:
        torch.set_num_threads(threads)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
              str(free_port()), str(WORKER)]
    for command in commands("two"):
        launch += [*command, "--then"]
    done = subprocess.run(launch[:-1], capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    for name in ("semantic", "panoptic", "painted"):
        one, two = tmp_path / f"{name}_one", tmp_path / f"{name}_two"
        files = sorted(str(p.relative_to(one)) for p in one.rglob("*") if p.is_file())
        assert files == sorted(str(p.relative_to(two)) for p in two.rglob("*") if p.is_file())
        for file in files:
            if file == "layerseg_predict.json":
                first, second = (json.loads((folder / file).read_text()) for folder in (one, two))
                assert (first.pop("ranks"), second.pop("ranks")) == (1, 2)
                first.pop("seconds"), second.pop("seconds")
                assert first == second
            else:
                assert (one / file).read_bytes() == (two / file).read_bytes(), (name, file)
    index = json.loads((tmp_path / "painted_two" / "index.json").read_text())
    assert [entry["name"] for entry in index["images"]] == ["a/img1.png", "b/img0.png", "b/img4.png"]
    assert len(json.loads((tmp_path / "panoptic_two" / "panoptic.json").read_text())["annotations"]) == 5
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left behind
