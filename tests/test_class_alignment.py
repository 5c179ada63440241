"""`eval` and `sweep` match the model's classes to the dataset's by name (issue: a model whose id2label lists the
classes in another order scored mIoU 0 with exit 0; a 16-class head was scored index by index on 19 train ids)."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error
from PIL import Image

from layerseg_merge.cli import main
from layerseg_merge.eval.class_alignment import ClassMismatch, align_classes
from layerseg_merge.resources import DEMO_ASSETS

NAMES = ["road", "sky", "building", "vegetation", "car", "person"]  # the shipped miniature models' classes


def test_names_equal_in_order_are_scored_index_by_index():
    assert align_classes(NAMES, NAMES).identity
    assert align_classes(NAMES, [n.upper() for n in NAMES]).identity
    assert align_classes(["traffic_light"], ["Traffic Light"]).identity
    assert align_classes(NAMES, None).identity  # a dataset without class names: nothing to compare
    assert align_classes([f"LABEL_{i}" for i in range(6)], NAMES).identity  # a model without class names


def test_another_order_subsets_and_supersets_map_by_name():
    shuffled = align_classes(NAMES[::-1], NAMES)
    assert shuffled.names == tuple(NAMES[::-1])  # the model's order
    assert shuffled.from_prediction == (0, 1, 2, 3, 4, 5) and shuffled.from_label == (5, 4, 3, 2, 1, 0)
    fewer = align_classes(["car", "Road", "sky"], NAMES)  # the model's 3 of the dataset's 6
    assert fewer.names == ("car", "road", "sky")  # the dataset's spelling
    assert fewer.from_label == (1, 2, None, None, 0, None) and fewer.from_prediction == (0, 1, 2)
    assert "ground truth of the dataset's building, vegetation, person ignored" in fewer.note
    more = align_classes(NAMES, ["person", "road"])  # the dataset's 2 of the model's 6
    assert more.names == ("road", "person")
    assert more.from_label == (1, 0) and more.from_prediction == (0, None, None, None, None, 1)


@pytest.mark.parametrize("model,dataset,fragments", [
    (["road", "tree"], NAMES, ["tree is not among the dataset's", "sky, building, vegetation, car, person not among "
                                                                    "the model's"]),
    (["a", "b"], NAMES, ["a, b are not among the dataset's"]),
    (["road", "road"], NAMES, ["names class 'road' twice"]),
])
def test_names_that_do_not_line_up_are_refused_naming_both_sets(model, dataset, fragments):
    with pytest.raises(ClassMismatch) as error:
        align_classes(model, dataset, "the model M", "the dataset D")
    for fragment in fragments:
        assert fragment in str(error.value)


def _relabelled(root, order, keep=None):
    """A copy of the miniature target split whose classes.txt lists ``order`` (a permutation or subset of NAMES)
    and whose label PNGs use that order; the classes outside ``keep`` (default all) become 255."""
    source = DEMO_ASSETS / "target_val"
    for image in sorted((source / "images").rglob("*.png"))[:16]:
        (root / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, root / "images" / image.name)
    table = np.full(256, 255, dtype=np.uint8)
    for index, name in enumerate(NAMES):
        if name in order and (keep is None or name in keep):
            table[index] = order.index(name)
    for label in sorted((source / "labels").rglob("*.png"))[:16]:
        target = root / "labels" / label.relative_to(source / "labels")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(table[np.asarray(Image.open(label))]).save(target)
    (root / "classes.txt").write_text("\n".join(order) + "\n")
    return root


def _eval(model, data, *options):
    result = CliRunner().invoke(main, ["eval", str(model), "--data", f"folder:{data}", "--workers", "0",
                                       "--device", "cpu", "--batch-size", "16", *options])
    assert result.exit_code == 0, result.output
    return result


def test_eval_of_a_dataset_in_another_class_order_equals_the_models_order(tmp_path):
    model = DEMO_ASSETS / "models" / "dacs"
    ordered = _relabelled(tmp_path / "ordered", NAMES)
    shuffled = _relabelled(tmp_path / "shuffled", ["person", "car", "road", "building", "sky", "vegetation"])
    reports = []
    for data in (ordered, shuffled):
        _eval(model, data, "--out", str(tmp_path / f"{data.name}.json"))
        reports.append(json.loads((tmp_path / f"{data.name}.json").read_text()))
    assert reports[0]["mIoU"] > 0.3  # a trained model, scored as it should be
    assert reports[1]["mIoU"] == reports[0]["mIoU"] and reports[1]["aAcc"] == reports[0]["aAcc"]
    assert list(reports[1]["per_class"].items()) == list(reports[0]["per_class"].items())
    assert "another order" in reports[1]["class_alignment"]


def test_a_head_with_fewer_classes_is_scored_on_its_classes(tmp_path):
    """A model of 4 classes on data of 6: its 4 classes scored, ground truth of the other 2 ignored; equal to the
    same model on data where those 2 classes are the ignore index."""
    from safetensors.torch import load_file, save_file

    model = tmp_path / "four"
    shutil.copytree(DEMO_ASSETS / "models" / "dacs", model)
    state = load_file(model / "model.safetensors")
    for name in [n for n in state if n.startswith("decode_head.classifier.")]:
        state[name] = state[name][:4].clone()  # a head of the first 4 classes
    save_file(state, model / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((model / "config.json").read_text())
    config["id2label"] = {str(i): name for i, name in enumerate(NAMES[:4])}
    config["label2id"] = {name: i for i, name in enumerate(NAMES[:4])}
    (model / "config.json").write_text(json.dumps(config))
    full = _relabelled(tmp_path / "full", NAMES)
    only_four = _relabelled(tmp_path / "four_data", NAMES[:4], keep=NAMES[:4])
    _eval(model, full, "--out", str(tmp_path / "full.json"))
    _eval(model, only_four, "--out", str(tmp_path / "four.json"))
    got, want = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("full", "four"))
    assert list(got["per_class"]) == NAMES[:4]
    assert got["mIoU"] == want["mIoU"] and got["per_class"] == want["per_class"]
    assert "ground truth of the dataset's car, person ignored" in got["class_alignment"]


def test_a_dataset_with_fewer_classes_counts_other_predictions_as_wrong(tmp_path):
    from layerseg_merge.eval.datasets import open_dataset
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.eval.inference import Segmenter
    from layerseg_merge.eval.options import DataOptions, InferenceOptions

    model = DEMO_ASSETS / "models" / "dacs"
    order = ["car", "road", "person"]  # the dataset names 3 of the model's 6, in its own order
    data = _relabelled(tmp_path / "three", order, keep=order)
    report = evaluate(model, DataOptions(f"folder:{data}", workers=0), infer=InferenceOptions("cpu", 16),
                      progress=False)
    assert list(report["per_class"]) == ["road", "car", "person"]  # the model's order
    # independently: predictions of classes the dataset lacks can never be right
    segmenter = Segmenter(model, InferenceOptions("cpu", 16))
    dataset = open_dataset(f"folder:{data}")
    inter, predicted, labelled = np.zeros(3), np.zeros(3), np.zeros(3)
    to_dataset = {NAMES.index(name): i for i, name in enumerate(order)}  # label (dataset) indices
    for sample in (dataset[i] for i in range(len(dataset))):
        import torch

        image = torch.from_numpy(sample["image"]).permute(2, 0, 1)[None]
        prediction = segmenter.semantic(image, [tuple(sample["label"].shape)])[0].numpy()
        prediction = np.vectorize(lambda p: to_dataset.get(int(p), 255))(prediction)
        label = sample["label"].numpy()
        keep = label != 255
        for c in range(3):
            inter[c] += ((prediction == c) & (label == c) & keep).sum()
            predicted[c] += ((prediction == c) & keep).sum()
            labelled[c] += ((label == c) & keep).sum()
    iou = inter / (predicted + labelled - inter)
    assert report["mIoU"] == pytest.approx(float(np.nanmean(iou)), abs=1e-12)


def test_labels_that_do_not_line_up_are_refused_by_eval_and_sweep(tmp_path):
    data = _relabelled(tmp_path / "data", NAMES)
    (data / "classes.txt").write_text("\n".join(["road", "sky", "building", "tree", "car", "pedestrian"]) + "\n")
    line = assert_one_line_error(
        CliRunner().invoke(main, ["eval", str(DEMO_ASSETS / "models" / "dacs"), "--data", f"folder:{data}",
                                  "--workers", "0", "--device", "cpu"]),
        "vegetation, person are not among the dataset's", "tree, pedestrian not among the model's")
    assert "the classes of the model" in line
    recipe = tmp_path / "r.yaml"
    recipe.write_text(CliRunner().invoke(main, ["recipes", "miniature_different_sources"]).output)
    assert_one_line_error(
        CliRunner().invoke(main, ["sweep", str(recipe), "--data", f"folder:{data}", "--workers", "0", "--budget",
                                  "1", "--device", "cpu", "--out", str(tmp_path / "sweep")]),
        "vegetation, person are not among the dataset's")


def test_sweep_scores_a_dataset_in_another_class_order_as_in_the_models_order(tmp_path):
    from layerseg_merge.eval.options import DataOptions
    from layerseg_merge.resources import recipe_files, recipe_text
    from layerseg_merge.tools.sweep import SweepOptions, read_recipe, run_sweep

    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(recipe_files()["miniature_different_sources"]))
    setup = read_recipe(recipe, log=lambda message: None)
    scores = []
    for name, order in (("ordered", NAMES), ("shuffled", NAMES[::-1])):
        data = _relabelled(tmp_path / name, order)
        result = run_sweep(setup, DataOptions(f"folder:{data}", workers=0, limit=8), SweepOptions(budget=2),
                           progress=False)
        scores.append([row["score"] for row in result["candidates"]])
    assert scores[0] == scores[1] and scores[0][0] > 0.3


def test_a_panoptic_model_whose_classes_the_ground_truth_lacks_is_refused(tmp_path):
    from eval_data import CATEGORIES, coco_panoptic
    from hosts import panoptic_mask2former

    other = [dict(c) for c in CATEGORIES]
    other[3]["name"] = "tree"  # the model predicts 'tree' where the ground truth knows 'person'
    model = panoptic_mask2former(tmp_path / "m2f", other, {"height": 64, "width": 64})
    images, gt_json, pngs = coco_panoptic(tmp_path / "data", count=1)
    assert_one_line_error(
        CliRunner().invoke(main, ["eval", str(model), "--task", "panoptic", "--workers", "0", "--device", "cpu",
                                  "--data", f"coco-panoptic:{images},{gt_json},{pngs}"]),
        "tree is not among the dataset's", "person not among the model's")
