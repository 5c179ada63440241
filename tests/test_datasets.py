"""Dataset layouts: Cityscapes label ids, trainIds, panoptic; ACDC, Dark Zurich, Mapillary; class subsets.

Each layout is a tiny synthetic tree with the published file names and label encodings; errors on bad
input are one line naming the file or folder.
"""

import json

import numpy as np
import pytest
import torch
from eval_data import id_to_rgb
from PIL import Image

from layerseg_merge.eval.datasets import DatasetError, open_dataset


def cityscapes(root, label_kind="labelIds"):
    city = "aachen"
    for split in ("val",):
        (root / "leftImg8bit" / split / city).mkdir(parents=True)
        (root / "gtFine" / split / city).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(
            root / "leftImg8bit" / split / city / "aachen_000000_000019_leftImg8bit.png")
        ids = np.array([[7, 8, 26, 0, 33, 24, 3, 23] * 2] * 8, dtype=np.uint8)
        if label_kind == "labelTrainIds":
            ids = np.array([[0, 1, 13, 255, 18, 11, 255, 10] * 2] * 8, dtype=np.uint8)
        Image.fromarray(ids).save(root / "gtFine" / split / city / f"aachen_000000_000019_gtFine_{label_kind}.png")
    return root


@pytest.mark.parametrize("kind", ["labelIds", "labelTrainIds"])
def test_cityscapes_semantic_uses_train_ids(tmp_path, kind):
    dataset = open_dataset(f"cityscapes:{cityscapes(tmp_path, kind)}", "val", "semantic")
    sample = dataset[0]
    assert sample["label"][0, :8].tolist() == [0, 1, 13, 255, 18, 11, 255, 10]
    assert dataset.class_names[13] == "car" and len(dataset.class_names) == 19


def test_cityscapes_panoptic_layout(tmp_path):
    root = cityscapes(tmp_path)
    ids = np.full((8, 16), 7000, np.int64)
    ids[:, 8:] = 26001
    png_dir = root / "gtFine" / "cityscapes_panoptic_val"
    png_dir.mkdir()
    Image.fromarray(id_to_rgb(ids)).save(png_dir / "aachen_000000_000019_gtFine_panoptic.png")
    (root / "gtFine" / "cityscapes_panoptic_val.json").write_text(json.dumps({
        "images": [{"id": "aachen_000000_000019", "file_name": "aachen/aachen_000000_000019_leftImg8bit.png"}],
        "annotations": [{"image_id": "aachen_000000_000019", "file_name": "aachen_000000_000019_gtFine_panoptic.png",
                         "segments_info": [{"id": 7000, "category_id": 7, "iscrowd": 0},
                                           {"id": 26001, "category_id": 26, "iscrowd": 0}]}],
        "categories": [{"id": 7, "name": "road", "isthing": 0}, {"id": 26, "name": "car", "isthing": 1}]}))
    sample = open_dataset(f"cityscapes:{root}", "val", "panoptic")[0]
    assert set(sample["panoptic"].unique().tolist()) == {7000, 26001} and len(sample["segments"]) == 2


def test_size_mismatch_names_the_image(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "x.png")
    Image.fromarray(np.zeros((4, 8), np.uint8)).save(tmp_path / "labels" / "x.png")
    with pytest.raises(DatasetError, match="x.png: image is 8x8 but its label is 8x4"):
        open_dataset(f"folder:{tmp_path}")[0]


def test_unknown_category_in_coco_json_is_named(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "png").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "img" / "a.jpg")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "png" / "a.png")
    (tmp_path / "gt.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "road", "isthing": 0}],
        "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": [{"id": 5, "category_id": 9}]}]}))
    with pytest.raises(DatasetError, match="a.png: segment 5 has unknown category id 9"):
        open_dataset(f"coco-panoptic:{tmp_path / 'img'},{tmp_path / 'gt.json'},{tmp_path / 'png'}", task="panoptic")


# ------------------------------------------------------------------------------ UDA benchmark layouts


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


TRAIN_IDS = np.array([[0, 1, 2, 13, 255, 9, 14, 16]], dtype=np.uint8).repeat(4, 0)  # 4x8


def acdc(root, conditions=("fog", "night", "rain", "snow"), split="val", label="labelTrainIds"):
    """ACDC as published: rgb_anon/COND/SPLIT/SEQ/*_rgb_anon.png, gt/COND/SPLIT/SEQ/*_gt_labelTrainIds.png."""
    for index, condition in enumerate(conditions):
        stem = f"GOPR04{index}5_frame_0000{index}1"
        _png(root / "rgb_anon" / condition / split / f"GOPR04{index}5" / f"{stem}_rgb_anon.png",
             np.full((4, 8, 3), 10 * index, np.uint8))
        ids = TRAIN_IDS if label == "labelTrainIds" else np.array([[7, 8, 11, 26, 0, 22, 27, 31]] * 4, np.uint8)
        _png(root / "gt" / condition / split / f"GOPR04{index}5" / f"{stem}_gt_{label}.png", ids)
        _png(root / "gt" / condition / split / f"GOPR04{index}5" / f"{stem}_gt_labelColor.png",
             np.zeros((4, 8, 3), np.uint8))  # the other gt files of the download are ignored
    return root


@pytest.mark.parametrize("label", ["labelTrainIds", "labelIds"])
def test_acdc_reads_every_condition_or_the_chosen_ones(tmp_path, label):
    root = acdc(tmp_path, label=label)
    everything = open_dataset(f"acdc:{root}", "val")
    assert [name.split("/")[0] for name, _, _ in everything.pairs] == ["fog", "night", "rain", "snow"]
    assert everything[1]["label"].tolist() == TRAIN_IDS.tolist()  # labelIds mapped to the same train ids
    night = open_dataset(f"acdc:{root},night", "val")
    assert [name for name, _, _ in night.pairs] == ["night/GOPR0415/GOPR0415_frame_000011_rgb_anon.png"]
    assert int(night[0]["image"][0, 0, 0]) == 10
    assert len(open_dataset(f"acdc:{root},fog,snow", "val")) == 2 and everything.class_names[13] == "car"


def test_acdc_restructured_copy_of_daformer(tmp_path):
    _png(tmp_path / "rgb_anon" / "val" / "GOPR0475_frame_000041_rgb_anon.png", np.zeros((4, 8, 3), np.uint8))
    _png(tmp_path / "gt" / "val" / "GOPR0475_frame_000041_gt_labelTrainIds.png", TRAIN_IDS)
    assert open_dataset(f"acdc:{tmp_path}", "val")[0]["label"].tolist() == TRAIN_IDS.tolist()
    with pytest.raises(DatasetError, match="cannot be split by condition"):
        open_dataset(f"acdc:{tmp_path},night", "val")


@pytest.mark.parametrize("spec,split,message", [
    ("acdc:{root},dusk", "val", "acdc: unknown condition 'dusk'; use fog, night, rain, snow"),
    ("acdc:{root}", "test", "gt/fog/test: missing; an ACDC root has rgb_anon/{fog,night,rain,snow}/test"),
    ("acdc:{root}/nothing", "val", "nothing/rgb_anon: missing; an ACDC root has"),
    ("darkzurich:{root}", "val", "rgb_anon/val: missing; a Dark Zurich root has rgb_anon/val/night/SEQUENCE"),
    ("mapillary:{root}", "val", "validation/images: missing; a Mapillary Vistas root has validation/images/*.jpg"),
    ("cityscapes-panoptic:{root}", "val", "leftImg8bit/val: missing; a Cityscapes root has"),
])
def test_wrong_layouts_name_the_missing_folder(tmp_path, spec, split, message):
    acdc(tmp_path, conditions=("fog", "night", "rain", "snow"), split="test")
    for condition in ("fog", "night", "rain", "snow"):  # the test split of ACDC comes without ground truth
        for path in sorted((tmp_path / "gt" / condition / "test").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (tmp_path / "gt" / condition / "test").rmdir()
    with pytest.raises(DatasetError) as error:
        open_dataset(spec.format(root=tmp_path), split, "panoptic" if "panoptic" in spec else "semantic")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_acdc_conditions_must_share_one_label_encoding(tmp_path):
    acdc(tmp_path, conditions=("fog",))
    acdc(tmp_path / "ids", conditions=("fog", "night"), label="labelIds")
    (tmp_path / "ids" / "rgb_anon" / "night").rename(tmp_path / "rgb_anon" / "night")
    (tmp_path / "ids" / "gt" / "night").rename(tmp_path / "gt" / "night")
    with pytest.raises(DatasetError, match="some conditions have \\*_gt_labelTrainIds.png and others only"):
        open_dataset(f"acdc:{tmp_path},fog,night", "val")


def test_dark_zurich_without_images_is_named(tmp_path):
    (tmp_path / "rgb_anon" / "val" / "night").mkdir(parents=True)
    (tmp_path / "gt" / "val" / "night").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"rgb_anon/val: no \*_rgb_anon.png images; a Dark Zurich root has"):
        open_dataset(f"darkzurich:{tmp_path}", "val")


def test_acdc_missing_condition_folder_is_named(tmp_path):
    root = acdc(tmp_path, conditions=("fog", "night"))
    with pytest.raises(DatasetError, match=r"rgb_anon/rain/val: missing"):
        open_dataset(f"acdc:{root}", "val")
    assert len(open_dataset(f"acdc:{root},fog,night", "val")) == 2


def test_dark_zurich_val_layout(tmp_path):
    stem = "GOPR0356_frame_000321"
    _png(tmp_path / "rgb_anon" / "val" / "night" / "GOPR0356" / f"{stem}_rgb_anon.png", np.zeros((4, 8, 3), np.uint8))
    _png(tmp_path / "gt" / "val" / "night" / "GOPR0356" / f"{stem}_gt_labelTrainIds.png", TRAIN_IDS)
    _png(tmp_path / "gt" / "val" / "night" / "GOPR0356" / f"{stem}_gt_labelColor.png", np.zeros((4, 8, 3), np.uint8))
    dataset = open_dataset(f"darkzurich:{tmp_path}", "val")
    assert [name for name, _, _ in dataset.pairs] == [f"night/GOPR0356/{stem}_rgb_anon.png"]
    assert dataset[0]["label"].tolist() == TRAIN_IDS.tolist()
    _png(tmp_path / "rgb_anon" / "val" / "night" / "GOPR0356" / "GOPR0356_frame_000322_rgb_anon.png",
         np.zeros((4, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="GOPR0356_frame_000322_rgb_anon.png: no label file"):
        open_dataset(f"darkzurich:{tmp_path}", "val")


def _palette_png(path, ids):
    """A Mapillary v1.2 label: a palette PNG whose pixel values are the class ids."""
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette([value for i in range(256) for value in ((i * 7) % 256, (i * 13) % 256, (i * 29) % 256)])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


# Mapillary v1.2 ids: road 13, sidewalk 15, building 17, car 55, unlabeled 65, person 19, truck 61, bird 0,
# pole 45, curb-cut 9, lane marking 24, motorcyclist 21, on-rails 58, terrain 29, traffic-sign-front 50, sky 27.
MAPILLARY_IDS = np.array([[13, 15, 17, 55, 65, 19, 61, 0], [45, 9, 24, 21, 58, 29, 50, 27]], dtype=np.uint8)
MAPILLARY_AS_TRAIN_IDS = [[0, 1, 2, 13, 255, 11, 14, 255], [5, 1, 0, 12, 16, 9, 7, 10]]


@pytest.mark.parametrize("labels", ["labels", "v1.2/labels"])
def test_mapillary_v12_ids_map_to_the_cityscapes_train_ids(tmp_path, labels):
    Image.fromarray(np.zeros((2, 8, 3), np.uint8)).save(tmp_path / "x.jpg")
    (tmp_path / "validation" / "images").mkdir(parents=True)
    (tmp_path / "x.jpg").rename(tmp_path / "validation" / "images" / "-0aB_key.jpg")
    _palette_png(tmp_path / "validation" / labels / "-0aB_key.png", MAPILLARY_IDS)
    sample = open_dataset(f"mapillary:{tmp_path}", "val")[0]
    assert sample["label"].tolist() == MAPILLARY_AS_TRAIN_IDS and sample["image"].shape == (2, 8, 3)
    _palette_png(tmp_path / "validation" / labels / "-0aB_key.png", MAPILLARY_IDS + 60)
    with pytest.raises(DatasetError, match=r"-0aB_key.png: label value 125 is not a Mapillary Vistas v1.2 class id"):
        open_dataset(f"mapillary:{tmp_path}", "val")[0]


def cityscapes_panoptic_tree(root, categories=None):
    """A panoptic tree whose JSON names images CITY_SEQ_FRAME_leftImg8bit.png, without their city folder (the
    converter's own output, which names them otherwise: eval_data.cityscapes_panoptic_converted)."""
    _png(root / "leftImg8bit" / "val" / "frankfurt" / "frankfurt_000000_000294_leftImg8bit.png",
         np.zeros((8, 16, 3), np.uint8))
    ids = np.full((8, 16), 7, np.int64)
    ids[:, 8:] = 26 * 1000 + 1
    _png(root / "gtFine" / "cityscapes_panoptic_val" / "frankfurt_000000_000294_gtFine_panoptic.png", id_to_rgb(ids))
    (root / "gtFine" / "cityscapes_panoptic_val.json").write_text(json.dumps({
        "images": [{"id": "frankfurt_000000_000294", "file_name": "frankfurt_000000_000294_leftImg8bit.png",
                    "width": 16, "height": 8}],
        "annotations": [{"image_id": "frankfurt_000000_000294",
                         "file_name": "frankfurt_000000_000294_gtFine_panoptic.png",
                         "segments_info": [{"id": 7, "category_id": 7, "iscrowd": 0, "area": 64},
                                           {"id": 26001, "category_id": 26, "iscrowd": 0, "area": 64}]}],
        "categories": categories or [{"id": 7, "name": "road", "isthing": 0}, {"id": 26, "name": "car", "isthing": 1}],
    }))
    return root


@pytest.mark.parametrize("kind", ["cityscapes-panoptic", "cityscapes"])
def test_cityscapes_panoptic_json_of_cityscapesscripts(tmp_path, kind):
    root = cityscapes_panoptic_tree(tmp_path)
    dataset = open_dataset(f"{kind}:{root}", "val", "panoptic")
    sample = dataset[0]
    assert set(sample["panoptic"].unique().tolist()) == {7, 26001}
    assert [(s.id, s.category_id) for s in sample["segments"]] == [(7, 7), (26001, 26)]
    assert dataset.entries[0][1].image.parent.name == "frankfurt"


def test_cityscapes_panoptic_errors(tmp_path):
    root = cityscapes_panoptic_tree(tmp_path, [{"id": 0, "name": "road", "isthing": 0},
                                               {"id": 7, "name": "road", "isthing": 0},
                                               {"id": 26, "name": "car", "isthing": 1}])
    with pytest.raises(DatasetError, match="category id 0 is not a Cityscapes label id"):
        open_dataset(f"cityscapes-panoptic:{root}", "val", "panoptic")
    with pytest.raises(DatasetError, match="evaluate it with --task panoptic"):
        open_dataset(f"cityscapes-panoptic:{root}", "val", "semantic")
    (root / "gtFine" / "cityscapes_panoptic_val.json").unlink()
    with pytest.raises(DatasetError, match=r"gtFine/cityscapes_panoptic_val.json: missing; the Cityscapes panoptic "
                                           "file of cityscapesScripts' createPanopticImgs"):
        open_dataset(f"cityscapes-panoptic:{root}", "val", "panoptic")


# ------------------------------------------------------------------------------ --classes 19|16|13


def test_class_subsets_average_the_19_class_scores_by_hand():
    from layerseg_merge.eval.class_subsets import restrict_report, subset_names
    from layerseg_merge.eval.datasets import CITYSCAPES_CLASSES
    from layerseg_merge.eval.metrics import SemanticMetric

    label = torch.tensor([[0, 0, 9, 9, 14, 3]])
    prediction = torch.tensor([[0, 1, 8, 9, 13, 3]])
    metric = SemanticMetric(19, 255)
    metric.update(prediction, label)
    report = metric.compute(list(CITYSCAPES_CLASSES))
    # IoU: road 1/2, sidewalk 0/1, wall 1/1, vegetation 0/1, terrain 1/2, car 0/1, truck 0/1; the rest absent
    assert report["mIoU"] == pytest.approx((0.5 + 0 + 1 + 0 + 0.5 + 0 + 0) / 7)
    sixteen = restrict_report(report, 16)
    assert sixteen["mIoU"] == pytest.approx((0.5 + 0 + 1 + 0 + 0) / 5)  # without terrain and truck
    assert sixteen["aAcc"] == report["aAcc"] == pytest.approx(3 / 6) and "terrain" not in sixteen["per_class"]
    assert sixteen["mAcc"] == pytest.approx((0.5 + 1) / 2)  # Acc over classes in the GT: road 1/2, wall 1/1
    thirteen = restrict_report(report, 13)
    assert thirteen["mIoU"] == pytest.approx((0.5 + 0 + 0 + 0) / 4)  # also without wall
    assert len(subset_names(16)) == 16 and len(subset_names(13)) == 13 and subset_names(13)[3] == "traffic light"
    assert restrict_report(report, 19) is report


def test_class_subsets_of_a_panoptic_report_by_hand():
    from layerseg_merge.eval.class_subsets import restrict_report

    categories = {7: {"name": "road", "isthing": 0}, 22: {"name": "terrain", "isthing": 0},
                  26: {"name": "car", "isthing": 1}, 27: {"name": "truck", "isthing": 1},
                  24: {"name": "person", "isthing": 1}}
    categories.update({i: {"name": n, "isthing": 0} for i, n in ((8, "sidewalk"), (11, "building"), (12, "wall"),
                      (13, "fence"), (17, "pole"), (19, "traffic light"), (20, "traffic sign"), (21, "vegetation"),
                      (23, "sky"), (25, "rider"), (28, "bus"), (31, "train"), (32, "motorcycle"), (33, "bicycle"))})
    per_class = {"7": {"pq": 0.8, "sq": 0.9, "rq": 0.9}, "22": {"pq": 0.1, "sq": 0.5, "rq": 0.2},
                 "26": {"pq": 0.6, "sq": 0.8, "rq": 0.75}, "27": {"pq": 0.0, "sq": 0.0, "rq": 0.0},
                 "24": {"pq": 0.4, "sq": 0.8, "rq": 0.5}}
    report = {"All": {}, "Things": {}, "Stuff": {}, "per_class": per_class}
    sixteen = restrict_report(report, 16, categories)
    assert sixteen["All"]["pq"] == pytest.approx((0.8 + 0.6 + 0.4) / 3) and sixteen["All"]["n"] == 3
    assert sixteen["Things"]["sq"] == pytest.approx((0.8 + 0.8) / 2) and sixteen["Stuff"]["rq"] == pytest.approx(0.9)
    assert set(sixteen["per_class"]) == {"7", "26", "24"}


def test_classes_need_the_cityscapes_names():
    from layerseg_merge.eval.class_subsets import restrict_report, subset_names

    with pytest.raises(ValueError, match="--classes 17: use 19, 16 or 13"):
        subset_names(17)
    with pytest.raises(ValueError, match="--classes 13 needs the Cityscapes categories; the ground truth has no"):
        restrict_report({"All": {}, "per_class": {}}, 13, {1: {"name": "road", "isthing": 0}})

    report = {"mIoU": 0.5, "aAcc": 0.5, "mAcc": 0.5, "per_class": {str(i): {"IoU": 0.5, "Acc": 0.5} for i in range(19)}}
    with pytest.raises(ValueError, match="--classes 16 needs the Cityscapes class names; the model has no class"):
        restrict_report(report, 16)


def test_panoptic_ground_truth_is_not_scored_as_semantic(tmp_path):
    """A kind serves the tasks its ground truth has (coco-panoptic data was opened for semantic scoring)."""
    from eval_data import coco_panoptic

    images, gt_json, pngs = coco_panoptic(tmp_path, count=1)
    with pytest.raises(DatasetError, match="coco-panoptic ground truth is panoptic, not semantic; evaluate it with "
                                           "--task panoptic"):
        open_dataset(f"coco-panoptic:{images},{gt_json},{pngs}", task="semantic")
    assert len(open_dataset(f"coco-panoptic:{images},{gt_json},{pngs}", task="images")) == 1
