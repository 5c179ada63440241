"""Datasets as their official tools write them, and what may lie in their folders (issue 24, items 8-10, 14).

cityscapesScripts' createPanopticImgs output (in gtFine/, or gtFine_panoptic/ as EDAPS keeps it), Mapillary's
two id tables (EDAPS's and HRDA's), named pipes where files belong, and malformed COCO panoptic JSONs and class
lists: each read as it is, or refused in one line naming the file.
"""

import json
import os
import signal

import numpy as np
import pytest
from click.testing import CliRunner
from eval_data import CITYSCAPES_LABELS, cityscapes_panoptic_converted, coco_panoptic, semantic_folder
from helpers import assert_one_line_error
from PIL import Image

from layerseg_merge.cli import main
from layerseg_merge.eval.datasets import DatasetError, input_paths, open_dataset


def run(*args):
    return CliRunner().invoke(main, [*map(str, args)])


# ------------------------------------------------------------------------------ item 8: cityscapes-panoptic


@pytest.mark.parametrize("use_train_id", [False, True])
@pytest.mark.parametrize("output", ["gtFine", "gtFine_panoptic"])
@pytest.mark.parametrize("kind", ["cityscapes-panoptic", "cityscapes"])
def test_cityscapes_panoptic_reads_the_converters_output(tmp_path, kind, output, use_train_id):
    root = cityscapes_panoptic_converted(tmp_path, output, use_train_id)
    name = f"cityscapes_panoptic_val{'_trainId' if use_train_id else ''}"
    gt = json.loads((root / output / f"{name}.json").read_text())
    dataset = open_dataset(f"{kind}:{root}", "val", "panoptic")
    assert [entry.image for _, entry in dataset.entries] == [
        root / "leftImg8bit" / "val" / "frankfurt" / "frankfurt_000000_000294_leftImg8bit.png",
        root / "leftImg8bit" / "val" / "lindau" / "lindau_000001_000019_leftImg8bit.png"]
    assert [entry.png.parent for _, entry in dataset.entries] == [root / output / name] * 2
    ids = [train_id if use_train_id else label_id for _, label_id, train_id, *_ in CITYSCAPES_LABELS]
    assert sorted(dataset.categories) == sorted(ids) and dataset.class_names[ids.index(min(ids))] == "road"
    for index, annotation in enumerate(gt["annotations"]):
        sample = dataset[index]
        expected = {s["id"]: (s["category_id"], bool(s["iscrowd"])) for s in annotation["segments_info"]}
        assert {s.id: (s.category_id, s.iscrowd) for s in sample["segments"]} == expected
        assert set(sample["panoptic"].unique().tolist()) == set(expected) | {0}  # ignored labels are VOID
        assert (26, (13 if use_train_id else 26, True)) in expected.items()  # the crowd of cars


@pytest.fixture(scope="module")
def cityscapes_mask2former(tmp_path_factory):
    from hosts import panoptic_mask2former

    categories = [{"name": name} for name, *_ in CITYSCAPES_LABELS]
    return panoptic_mask2former(tmp_path_factory.mktemp("m2f_cityscapes"), categories, {"height": 32, "width": 64})


def test_cityscapes_panoptic_eval_of_the_edaps_layout(tmp_path, cityscapes_mask2former):
    root = cityscapes_panoptic_converted(tmp_path / "cityscapes", "gtFine_panoptic")
    out = tmp_path / "r.json"
    result = run("eval", cityscapes_mask2former, "--task", "panoptic", "--data", f"cityscapes-panoptic:{root}",
                 "--workers", "0", "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report) == {"All", "Things", "Stuff", "per_class", "provenance"} and report["All"]["n"] > 0
    assert set(report["per_class"]) <= {str(label_id) for _, label_id, *_ in CITYSCAPES_LABELS}
    assert "2 images" in result.output


def test_cityscapes_panoptic_missing_ground_truth_names_both_places(tmp_path, segformers):
    root = cityscapes_panoptic_converted(tmp_path, "elsewhere")
    assert_one_line_error(run("eval", segformers[0], "--task", "panoptic", "--data", f"cityscapes-panoptic:{root}"),
                          f"{root / 'gtFine' / 'cityscapes_panoptic_val.json'}: missing",
                          "cityscapesScripts' createPanopticImgs", f"{root / 'gtFine_panoptic'}")


def test_cityscapes_panoptic_missing_image_is_named_where_it_belongs(tmp_path, segformers):
    root = cityscapes_panoptic_converted(tmp_path)
    image = root / "leftImg8bit" / "val" / "lindau" / "lindau_000001_000019_leftImg8bit.png"
    image.unlink()
    assert_one_line_error(run("eval", segformers[0], "--task", "panoptic", "--data", f"cityscapes-panoptic:{root}"),
                          f"{image}: image of annotation lindau_000001_000019_gtFine_panoptic.png not found")


def test_cityscapes_panoptic_train_id_categories_must_be_train_ids(tmp_path):
    root = cityscapes_panoptic_converted(tmp_path, use_train_id=True)
    path = root / "gtFine" / "cityscapes_panoptic_val_trainId.json"
    gt = json.loads(path.read_text())
    gt["categories"].append({"id": 26, "name": "car", "isthing": 1})  # a label id
    path.write_text(json.dumps(gt))
    with pytest.raises(DatasetError, match=r"category id 26 is not a Cityscapes train id of the 19 classes \(0..18\); "
                                           "regenerate it with --use-train-id"):
        open_dataset(f"cityscapes-panoptic:{root}", "val", "panoptic")


# ------------------------------------------------------------------------------ item 9: Mapillary's two id tables

# The ids on which the tables of EDAPS (CVRN's) and HRDA differ, and what each makes of them.
DIFFERING = [7, 8, 10, 14, 23, 9, 11, 41, 49]
EDAPS_TRAIN_IDS = [0, 0, 0, 0, 0, 1, 1, 255, 7]
HRDA_TRAIN_IDS = [255, 255, 255, 255, 255, 255, 255, 0, 255]
# lhoyer/HRDA tools/convert_datasets/mapillary.py, convert_to_train_id: Mapillary v1.2 id -> Cityscapes train id.
HRDA_TABLE = {13: 0, 24: 0, 41: 0, 2: 1, 15: 1, 17: 2, 6: 3, 3: 4, 45: 5, 47: 5, 48: 6, 50: 7, 30: 8, 29: 9, 27: 10,
              19: 11, 20: 12, 21: 12, 22: 12, 55: 13, 61: 14, 54: 15, 58: 16, 57: 17, 52: 18}


def mapillary(root, ids):
    (root / "validation" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((*ids.shape, 3), np.uint8)).save(root / "validation" / "images" / "k.jpg")
    (root / "validation" / "labels").mkdir()
    label = Image.fromarray(ids.astype(np.uint8), mode="P")
    label.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    label.save(root / "validation" / "labels" / "k.png")
    return root


@pytest.mark.parametrize("suffix,expected", [("", EDAPS_TRAIN_IDS), (",edaps", EDAPS_TRAIN_IDS),
                                             (",hrda", HRDA_TRAIN_IDS)])
def test_mapillary_tables_map_the_disputed_ids_as_their_papers_do(tmp_path, suffix, expected):
    root = mapillary(tmp_path, np.array([DIFFERING]))
    assert open_dataset(f"mapillary:{root}{suffix}", "val")[0]["label"].tolist() == [expected]


def test_mapillary_hrda_table_is_hrdas_and_differs_from_edaps_only_on_nine_ids(tmp_path):
    every = np.arange(66).reshape(6, 11)
    root = mapillary(tmp_path, every)
    hrda = open_dataset(f"mapillary:{root},hrda", "val")[0]["label"].numpy().ravel()
    edaps = open_dataset(f"mapillary:{root}", "val")[0]["label"].numpy().ravel()
    assert hrda.tolist() == [HRDA_TABLE.get(i, 255) for i in range(66)]
    assert np.flatnonzero(hrda != edaps).tolist() == sorted(DIFFERING)


def test_mapillary_table_is_not_a_path(tmp_path, segformers):
    assert input_paths("mapillary:/data/mapillary,hrda") == ("/data/mapillary",)
    assert input_paths("mapillary:/data/a,b,edaps") == ("/data/a,b",)
    assert input_paths("mapillary:/data/mapillary") == ("/data/mapillary",)
    root = mapillary(tmp_path, np.array([DIFFERING]))
    assert_one_line_error(run("eval", segformers[0], "--data", f"mapillary:{root},cvrn"),
                          "mapillary: unknown id table 'cvrn'; use edaps", "or hrda", "mapillary:ROOT,hrda")


# ------------------------------------------------------------------------------ item 10: named pipes


@pytest.fixture()
def deadline():
    """Fail instead of hanging: opening a named pipe that no one writes waits forever."""
    def expire(signum, frame):
        raise TimeoutError("blocked: a named pipe was opened for reading")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def pipe(path):
    """Replace ``path`` (if any) by a named pipe."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    return path


def folder(root, where):
    data = semantic_folder(root, count=2)
    return f"folder:{data}", "semantic", {"label": data / "labels" / "b" / "img0.png",
                                          "image": data / "images" / "a" / "img1.png",
                                          "classes": data / "classes.txt"}[where]


def image_folder(root, where):
    data = semantic_folder(root, count=2)
    return f"images:{data}", "images", data / "images" / "b" / "img0.png"


def coco(root, where):
    images, gt_json, pngs = coco_panoptic(root, count=2)
    return (f"coco-panoptic:{images},{gt_json},{pngs}", "panoptic",
            {"json": gt_json, "png": pngs / "im1.png", "image": images / "im0.jpg"}[where])


def cityscapes_panoptic(root, where):
    cityscapes_panoptic_converted(root, "gtFine_panoptic")
    return f"cityscapes-panoptic:{root}", "panoptic", {
        "json": root / "gtFine_panoptic" / "cityscapes_panoptic_val.json",
        "png": root / "gtFine_panoptic" / "cityscapes_panoptic_val" / "lindau_000001_000019_gtFine_panoptic.png",
        "image": root / "leftImg8bit" / "val" / "frankfurt" / "frankfurt_000000_000294_leftImg8bit.png"}[where]


def train_ids(root, where):
    """A Cityscapes root with labelTrainIds (the reader of cityscapes, acdc and darkzurich)."""
    for stem in ("aachen_000000_000019", "aachen_000001_000019"):
        image = root / "leftImg8bit" / "val" / "aachen" / f"{stem}_leftImg8bit.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(image)
        label = root / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_labelTrainIds.png"
        label.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 8), np.uint8)).save(label)
    return f"cityscapes:{root}", "semantic", label


def mapillary_label(root, where):
    return f"mapillary:{mapillary(root, np.array([DIFFERING]))}", "semantic", root / "validation" / "labels" / "k.png"


@pytest.mark.parametrize("build,where,what", [
    (folder, "label", "a label"), (folder, "image", "an image"), (folder, "classes", "classes.txt"),
    (image_folder, "image", "an image"), (train_ids, "label", "a label"), (mapillary_label, "label", "a label"),
    (coco, "json", "a COCO panoptic JSON"), (coco, "png", "a panoptic PNG"), (coco, "image", "an image"),
    (cityscapes_panoptic, "json", "a COCO panoptic JSON"), (cityscapes_panoptic, "png", "a panoptic PNG"),
    (cityscapes_panoptic, "image", "an image"),
])
def test_a_named_pipe_in_a_dataset_is_refused_naming_it(tmp_path, deadline, build, where, what):
    spec, task, path = build(tmp_path, where)
    pipe(path)
    with pytest.raises(DatasetError) as error:
        dataset = open_dataset(spec, "val", task)
        dataset[len(dataset) - 1]  # without the fix: blocks here (and the deadline fails the test)
    assert str(error.value) == (f"{path}: a named pipe (FIFO), not a regular file; {what} must be a regular file: "
                                "replace it with the file itself or remove it")


def test_a_named_pipe_for_a_label_stops_eval_at_once(tmp_path, deadline, segformers):
    spec, _, label = folder(tmp_path, "label")
    pipe(label)
    assert_one_line_error(run("eval", segformers[0], "--data", spec, "--workers", "0"),
                          f"{label}: a named pipe (FIFO), not a regular file; a label must be a regular file")


def test_a_folder_named_like_an_image_is_a_folder(tmp_path):
    data = semantic_folder(tmp_path, count=2)
    (data / "images" / "a" / "more.png").mkdir()
    assert len(open_dataset(f"folder:{data}")) == 2


# ------------------------------------------------------------------------------ item 14: malformed files

CATEGORIES = [{"id": 7, "name": "road", "isthing": 0}, {"id": 26, "name": "car", "isthing": 1}]
SEGMENTS = [{"id": 7, "category_id": 7, "iscrowd": 0}]


def annotation(**changes):
    return [{"image_id": "frankfurt_000000_000294", "file_name": "frankfurt_000000_000294_gtFine_panoptic.png",
             "segments_info": SEGMENTS} | changes]


def gt(**changes):
    return {"categories": CATEGORIES, "annotations": annotation()} | changes


MALFORMED = [
    ([], "the top level is a list, not a mapping"),
    ("categories", "the top level is a string, not a mapping"),
    ({"categories": CATEGORIES}, "no `annotations` list"),
    ({"annotations": annotation()}, "no `categories` list"),
    (gt(categories={"7": "road"}), "`categories` is a mapping, not a list"),
    (gt(annotations=None), "`annotations` is null, not a list"),
    (gt(categories=[]), "`categories` is empty"),
    (gt(categories=[7]), "`categories` entry 0 is a number, not a mapping"),
    (gt(categories=[{"name": "road"}]), "`categories` entry 0 has no `id`"),
    (gt(categories=[{"id": "7", "name": "road"}]), '`categories` entry 0 has `id` "7", not a category id (0..65535)'),
    (gt(categories=[{"id": -1, "name": "road"}]), "`categories` entry 0 has `id` -1, not a category id (0..65535)"),
    (gt(categories=CATEGORIES + [{"id": 10**10, "name": "x"}]),
     "`categories` entry 2 has `id` 10000000000, not a category id (0..65535)"),
    (gt(categories=[{"id": 7}]), "`categories` entry 0 has no `name`"),
    (gt(categories=[{"id": 7, "name": ["road"]}]), '`categories` entry 0 has `name` ["road"], not a name'),
    (gt(categories=[{"id": 7, "name": "road", "isthing": "no"}]),
     '`categories` entry 0 has `isthing` "no", not 0 or 1'),
    (gt(categories=CATEGORIES + [{"id": 7, "name": "road"}]), "`categories` entry 2 repeats category id 7"),
    (gt(images={}), "`images` is a mapping, not a list"),
    (gt(images=[{"file_name": "x.png"}]), "`images` entry 0 has no `id`"),
    (gt(images=[{"id": [1], "file_name": "x.png"}]), "`images` entry 0 has `id` [1], not a number or a string"),
    (gt(images=[{"id": "frankfurt_000000_000294"}]), "`images` entry 0 has no `file_name`"),
    (gt(images=[{"id": 3, "file_name": "a.jpg"}, {"id": 3, "file_name": "b.jpg"}]),
     "`images` entry 1 repeats image id 3"),
    (gt(annotations=["a.png"]), "`annotations` entry 0 is a string, not a mapping"),
    (gt(annotations=annotation(file_name=None)), "`annotations` entry 0 has `file_name` null, not a file name"),
    (gt(annotations=[{"image_id": 1, "segments_info": []}]), "`annotations` entry 0 has no `file_name`"),
    (gt(annotations=[{"file_name": "a.png", "segments_info": []}]), "`annotations` entry 0 (a.png) has no `image_id`"),
    (gt(annotations=[{"file_name": "a.png", "image_id": 1}]), "`annotations` entry 0 (a.png) has no `segments_info`"),
    (gt(annotations=annotation(segments_info={"id": 7})),
     '`annotations` entry 0 (frankfurt_000000_000294_gtFine_panoptic.png) has `segments_info` {"id": 7}, not a '
     "list"),
    (gt(annotations=annotation(segments_info=3)), "has `segments_info` 3, not a list"),
    (gt(annotations=annotation(segments_info=[7])), "segment 0 is a number, not a mapping"),
    (gt(annotations=annotation(segments_info=[{"category_id": 7}])), "segment 0 has no `id`"),
    (gt(annotations=annotation(segments_info=[{"id": 0, "category_id": 7}])),
     "segment 0 has `id` 0, not a segment id (1..16777215; 0 is VOID)"),
    (gt(annotations=annotation(segments_info=[{"id": 7}])), "segment 0 has no `category_id`"),
    (gt(annotations=annotation(segments_info=[{"id": 7, "category_id": 7.0}])),
     "segment 0 has `category_id` 7.0, not a whole number >= 0"),
    (gt(annotations=annotation(segments_info=[{"id": 7, "category_id": 7, "iscrowd": 2}])),
     "segment 0 has `iscrowd` 2, not 0 or 1"),
    (gt(annotations=annotation(segments_info=SEGMENTS * 2)), "segment 1 repeats segment id 7"),
    (gt(annotations=annotation() * 2),
     "`annotations` entry 1 repeats file_name frankfurt_000000_000294_gtFine_panoptic.png"),
]
UNREADABLE = [
    (b"{ not json", "cannot read COCO panoptic JSON (Expecting property name"),
    ('{"categories": [{"id": 7, "name": "Stra\u00dfe"}]}'.encode("latin-1"),
     "not UTF-8 text (invalid continuation byte at byte 39); save it as UTF-8"),
    (b"[" * 100000, "cannot read COCO panoptic JSON (nested too deeply"),
]


def malformed(tmp_path, kind, content):
    """A dataset spec of ``kind`` whose ground-truth JSON holds ``content`` (bytes as they are, else as JSON)."""
    if kind == "coco-panoptic":
        images, path, pngs = coco_panoptic(tmp_path, count=1)
        spec = f"coco-panoptic:{images},{path},{pngs}"
    else:
        root = cityscapes_panoptic_converted(tmp_path)
        path, spec = root / "gtFine" / "cityscapes_panoptic_val.json", f"cityscapes-panoptic:{root}"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return spec, path


@pytest.mark.parametrize("kind", ["coco-panoptic", "cityscapes-panoptic"])
@pytest.mark.parametrize("content,message", MALFORMED)
def test_a_malformed_coco_panoptic_json_is_named(tmp_path, segformers, kind, content, message):
    spec, path = malformed(tmp_path, kind, content)
    line = assert_one_line_error(run("eval", segformers[0], "--task", "panoptic", "--data", spec), f"{path}: ", message)
    assert line.endswith("regenerate it, or fix it to panopticapi's format ({categories: [{id, name, isthing}], "
                         "annotations: [{image_id, file_name, segments_info: [{id, category_id, iscrowd}]}], "
                         "images: [{id, file_name}]})"), line


@pytest.mark.parametrize("kind", ["coco-panoptic", "cityscapes-panoptic"])
@pytest.mark.parametrize("content,message", UNREADABLE)
def test_an_unreadable_coco_panoptic_json_is_named(tmp_path, segformers, kind, content, message):
    spec, path = malformed(tmp_path, kind, content)
    assert_one_line_error(run("eval", segformers[0], "--task", "panoptic", "--data", spec), f"{path}: {message}")


def test_a_latin1_class_list_is_named(tmp_path, segformers):
    data = semantic_folder(tmp_path, count=1)
    (data / "classes.txt").write_bytes("road\nStra\u00dfe\n".encode("latin-1"))
    assert_one_line_error(run("eval", segformers[0], "--data", f"folder:{data}", "--workers", "0"),
                          f"{data / 'classes.txt'}: not UTF-8 text (invalid continuation byte at byte 9); save it as "
                          "UTF-8, one class name per line")
    (data / "classes.txt").write_bytes("\ufeffroad\nStra\u00dfe\n".encode())  # UTF-8, with a byte-order mark
    assert open_dataset(f"folder:{data}").class_names == ["road", "Stra\u00dfe"]


# --------------------------------------------------------------- the same files through `layerseg score`


@pytest.mark.parametrize("content,message", MALFORMED + UNREADABLE)
def test_score_panoptic_names_a_malformed_ground_truth_json(tmp_path, content, message):
    """`layerseg score` reads the JSONs with the datasets' own reader (was: TypeError or a silent score)."""
    images, gt_json, pngs = coco_panoptic(tmp_path / "gt", count=1)
    gt_json.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    predictions = coco_panoptic(tmp_path / "pred", count=1)
    line = assert_one_line_error(run("score", "panoptic", "--gt-json", gt_json, "--gt-folder", pngs, "--pred-json",
                                     predictions[1], "--pred-folder", predictions[2], "--workers", "0"),
                                 f"{gt_json}: ", message)
    assert "unexpected" not in line


@pytest.mark.parametrize("change,message", [
    (lambda data: data.pop("categories"), None),  # a prediction needs no categories
    (lambda data: data["annotations"].append(dict(data["annotations"][0], file_name="x.png")),
     "`annotations` entry 1 (x.png) repeats image_id 0"),
    (lambda data: data["annotations"][0]["segments_info"][0].update(id="2000"), 'has `id` "2000", not a segment id'),
    (lambda data: data["annotations"][0]["segments_info"][0].update(area=-3), "has `area` -3, not a whole number"),
])
def test_score_panoptic_checks_a_prediction_json_too(tmp_path, change, message):
    images, gt_json, pngs = coco_panoptic(tmp_path / "gt", count=1)
    _, pred_json, pred_pngs = coco_panoptic(tmp_path / "pred", count=1)
    data = json.loads(pred_json.read_text())
    change(data)
    pred_json.write_text(json.dumps(data))
    result = run("score", "panoptic", "--gt-json", gt_json, "--gt-folder", pngs, "--pred-json", pred_json,
                 "--pred-folder", pred_pngs, "--workers", "0")
    if message is None:
        assert result.exit_code == 0, result.output
    else:
        assert_one_line_error(result, f"{pred_json}: ", message)


@pytest.mark.parametrize("task", ["semantic", "panoptic"])
def test_score_refuses_a_named_pipe_instead_of_waiting(tmp_path, task):
    signal.alarm(20)  # without the check the read below blocks forever: fail instead of hanging
    try:
        if task == "semantic":
            gt = semantic_folder(tmp_path / "gt", count=2) / "labels"
            pred = semantic_folder(tmp_path / "pred", count=2) / "labels"
            fifo = pred / "a" / "img1.png"
            fifo.unlink()
            os.mkfifo(fifo)
            result = run("score", "semantic", "--gt", gt, "--pred", pred, "--num-classes", 5, "--workers", "0")
        else:
            _, gt_json, pngs = coco_panoptic(tmp_path / "gt", count=1)
            _, pred_json, pred_pngs = coco_panoptic(tmp_path / "pred", count=1)
            fifo = pred_pngs / "im0.png"
            fifo.unlink()
            os.mkfifo(fifo)
            result = run("score", "panoptic", "--gt-json", gt_json, "--gt-folder", pngs, "--pred-json", pred_json,
                         "--pred-folder", pred_pngs, "--workers", "0")
    finally:
        signal.alarm(0)
    assert_one_line_error(result, f"{fifo}: a named pipe (FIFO), not a regular file")
