"""Dataset layouts: Cityscapes label ids, trainIds, panoptic; clear errors on bad input."""

import json

import numpy as np
import pytest
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
        open_dataset(f"coco-panoptic:{tmp_path / 'img'},{tmp_path / 'gt.json'},{tmp_path / 'png'}")
