"""`layerseg eval --show-dir`: painted predictions (palette, panels, error map, panoptic shades and outlines, the
legend), spread over the split, with eval's numbers unchanged."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from eval_data import CITYSCAPES_LABELS, semantic_folder
from helpers import assert_one_line_error
from PIL import Image

from layerseg_merge.cli import main
from layerseg_merge.eval import painting
from layerseg_merge.eval.metrics import Segment
from layerseg_merge.eval.palette import class_colours, distinct_colour
from layerseg_merge.resources import DEMO_ASSETS

TEST = DEMO_ASSETS / "target_test"


def run(*args):
    return CliRunner().invoke(main, [*map(str, args)])


def test_cityscapes_classes_take_cityscapes_scripts_colours_and_others_distinct_ones():
    names = [row[0] for row in CITYSCAPES_LABELS]
    assert class_colours(names) == [row[5] for row in CITYSCAPES_LABELS]
    assert class_colours(["Traffic_Light", "road"]) == [(250, 170, 30), (128, 64, 128)]  # matched as eval matches
    others = class_colours([f"class {k}" for k in range(40)])
    assert len(set(others)) == 40 and others == class_colours([f"class {k}" for k in range(40)])
    mixed = class_colours(["road", "tree", "pedestrian"])
    assert mixed[0] == (128, 64, 128) and len(set(mixed)) == 3 and distinct_colour(0) == mixed[1]


@pytest.mark.parametrize("count, total, chosen", [(3, 5, [0, 2, 4]), (1, 7, [0]), (4, 48, [0, 16, 31, 47]),
                                                  (None, 3, [0, 1, 2]), (9, 3, [0, 1, 2])])
def test_show_spreads_the_images_over_the_split(count, total, chosen):
    assert painting.spread(count, total) == chosen


def semantic_painter(tmp_path, names=("road", "sky", "car")):
    painter = painting.Painter(tmp_path, [0])
    painter.bind(SimpleNamespace(alignment=SimpleNamespace(names=names), metric=SimpleNamespace(ignore_index=255)))
    return painter


def test_semantic_panels_blend_the_palette_and_mark_errors(tmp_path):
    painter = semantic_painter(tmp_path)
    image = torch.full((3, 2, 3), 100, dtype=torch.uint8)
    prediction = torch.tensor([[0, 1, 2], [0, 0, 2]])
    label = torch.tensor([[0, 2, 2], [255, 1, 2]])
    canvas = painter.paint_semantic(image, prediction, label)
    factor = -(-painting.MIN_HEIGHT // 2)  # a tiny image is enlarged by a whole factor
    width = 3 * factor
    assert canvas.shape[1] == 3 * width + 2 * painting.SEPARATOR and canvas.shape[0] > 2 * factor

    def pixel(panel: int, y: int, x: int):
        return tuple(canvas[y * factor, panel * (width + painting.SEPARATOR) + x * factor])

    road, sky, car = (128, 64, 128), (70, 130, 180), (0, 0, 142)
    assert pixel(0, 0, 1) == tuple((100 + c + 1) // 2 for c in sky)  # prediction: sky blended in, half and half
    assert pixel(1, 0, 1) == tuple((100 + c + 1) // 2 for c in car)  # ground truth: car
    assert pixel(1, 1, 0) == (50, 50, 50)  # an ignored label: no colour
    assert pixel(2, 0, 1) == painting.WRONG and pixel(2, 1, 1) == painting.WRONG
    assert pixel(2, 1, 0) == painting.IGNORED
    assert pixel(2, 0, 0) == (40, 40, 40)  # correct: the image, grey and dimmed
    assert pixel(0, 0, 0) == tuple((100 + c + 1) // 2 for c in road)
    legend = canvas[2 * factor:]
    assert (legend == 255).all(axis=-1).mean() > 0.5 and any((legend == c).all(-1).any() for c in (road, sky, car))


def test_panoptic_segments_get_shades_of_their_category_and_outlines(tmp_path):
    painter = painting.Painter(tmp_path, [0])
    painter.bind(SimpleNamespace(categories={1: {"name": "road", "isthing": 0}, 5: {"name": "car", "isthing": 1}}))
    ids = torch.tensor([[1, 1, 2, 2, 3, 3]] * 4)
    segments = [Segment(1, 1), Segment(2, 5), Segment(3, 5)]  # two cars side by side
    gt_ids = torch.tensor([[7, 7, 9, 9, 9, 0]] * 4)
    gt_segments = [Segment(7, 1), Segment(9, 5)]
    colours, categories = painter._segments(ids, segments)
    assert colours[0, 2].tolist() == [0, 0, 142] and colours[0, 4].tolist() != colours[0, 2].tolist()
    assert categories[0].tolist() == [1, 1, 5, 5, 5, 5]
    assert painting.outlines(ids)[0].tolist() == [False, True, False, True, False, False]
    canvas = painter.paint_panoptic(torch.zeros((3, 4, 6), dtype=torch.uint8), ids, segments, gt_ids, gt_segments)
    factor = -(-painting.MIN_HEIGHT // 4)
    errors = 2 * (6 * factor + painting.SEPARATOR)
    assert tuple(canvas[0, factor]) == painting.OUTLINE  # the outline between road and the first car
    assert tuple(canvas[0, errors + 5 * factor]) == painting.IGNORED  # VOID ground truth
    assert tuple(canvas[0, errors + 0]) == (0, 0, 0)  # road on road: correct (a black image, dimmed)


def test_eval_show_dir_paints_n_images_spread_over_the_split_and_leaves_the_numbers_alone(tmp_path):
    model = DEMO_ASSETS / "models" / "dacs"
    common = ["eval", model, "--data", f"folder:{TEST}", "--device", "cpu", "--workers", 0]
    assert run(*common, "--out", tmp_path / "plain.json").exit_code == 0
    result = run(*common, "--out", tmp_path / "painted.json", "--show-dir", tmp_path / "shown", "--show", 3)
    assert result.exit_code == 0, result.output
    plain, painted = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("plain", "painted"))
    for key in ("mIoU", "aAcc", "mAcc", "per_class"):
        assert plain[key] == painted[key]
    index = json.loads((tmp_path / "shown" / "index.json").read_text())
    assert [entry["name"] for entry in index["images"]] == ["target_000.png", "target_024.png", "target_047.png"]
    assert index["task"] == "semantic" and index["data"] == f"folder:{TEST}"
    assert [entry["file"] for entry in index["images"]] == ["target_000.jpg", "target_024.jpg", "target_047.jpg"]
    assert sorted(p.name for p in (tmp_path / "shown").iterdir()) == [
        "index.json", "target_000.jpg", "target_024.jpg", "target_047.jpg"]
    with Image.open(tmp_path / "shown" / "target_024.jpg") as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.width == 3 * 192 + 2 * painting.SEPARATOR and image.height > 192
    result = run(*common, "--show-dir", tmp_path / "shown")  # a new painting replaces the old one: all 48
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "shown").glob("*.jpg"))) == 48


def test_eval_show_dir_paints_panoptic_predictions(tmp_path):
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.eval.options import DataOptions, InferenceOptions

    data = f"coco-panoptic:{TEST / 'images'},{TEST / 'panoptic.json'},{TEST / 'panoptic'}"
    model = DEMO_ASSETS / "models" / "panoptic"
    result = run("eval", model, "--task", "panoptic", "--data", data, "--device", "cpu", "--workers", 0,
                 "--show-dir", tmp_path / "shown", "--show", 2, "--out", tmp_path / "painted.json")
    assert result.exit_code == 0, result.output
    plain = evaluate(model, DataOptions(data, workers=0), "panoptic", InferenceOptions("cpu"), progress=False)
    painted = json.loads((tmp_path / "painted.json").read_text())
    assert all(painted[key] == plain[key] for key in ("All", "Things", "Stuff", "per_class"))
    painted = sorted(p.name for p in (tmp_path / "shown").glob("*.jpg"))
    assert painted == ["target_000.jpg", "target_047.jpg"]
    pixels = np.asarray(Image.open(tmp_path / "shown" / "target_000.jpg")).astype(int)[:192]

    def near(colour) -> bool:  # JPEG keeps flat colours within a few levels
        return bool((np.abs(pixels - colour) <= 24).all(-1).any())

    assert near(painting.OUTLINE) and near(painting.WRONG)


def test_show_dir_is_checked_before_the_work(tmp_path):
    data = semantic_folder(tmp_path / "data", count=2)
    model = DEMO_ASSETS / "models" / "dacs"
    assert_one_line_error(run("eval", model, "--data", f"folder:{data}", "--show-dir", data / "shown"),
                          "lies inside the input")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert_one_line_error(run("eval", model, "--data", f"folder:{data}", "--show-dir", tmp_path / "mine"),
                          "holds files this command did not write")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    assert_one_line_error(run("eval", model, "--data", f"folder:{data}", "--show", 2), "--show 2 needs --show-dir DIR")


def test_show_without_a_folder_is_refused_in_python_too(tmp_path):
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.eval.options import DataOptions

    with pytest.raises(ValueError, match="show=2 needs show_dir=DIR"):
        evaluate(DEMO_ASSETS / "models" / "dacs", DataOptions(f"folder:{TEST}"), show=2)
    with pytest.raises(ValueError, match="show=0: give the number of images to paint"):
        evaluate(DEMO_ASSETS / "models" / "dacs", DataOptions(f"folder:{TEST}"), show_dir=tmp_path / "s", show=0)
