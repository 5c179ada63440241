"""Small generated datasets in the layouts `layerseg eval` reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def semantic_folder(root: Path, count: int = 5, size=(48, 40), classes: int = 5, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(count):
        image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        label = rng.integers(0, classes, (size[1], size[0])).astype(np.uint8)
        label[rng.random(label.shape) < 0.05] = 255
        sub = root / "images" / ("a" if i % 2 else "b")
        (root / "labels" / sub.name).mkdir(parents=True, exist_ok=True)
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(sub / f"img{i}.png")
        Image.fromarray(label).save(root / "labels" / sub.name / f"img{i}.png")
    return root


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


CATEGORIES = [
    {"id": 1, "name": "road", "isthing": 0}, {"id": 2, "name": "sky", "isthing": 0},
    {"id": 3, "name": "car", "isthing": 1}, {"id": 4, "name": "person", "isthing": 1},
]


def coco_panoptic(root: Path, count: int = 4, size=(48, 40), seed: int = 0) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(seed)
    images, pngs = root / "images", root / "panoptic"
    images.mkdir(parents=True, exist_ok=True)
    pngs.mkdir(parents=True, exist_ok=True)
    annotations, infos = [], []
    for i in range(count):
        w, h = size
        ids = np.zeros((h, w), dtype=np.int64)
        ids[: h // 2] = 2 * 1000  # sky
        ids[h // 2:] = 1 * 1000  # road
        segments = [{"id": 2000, "category_id": 2, "iscrowd": 0}, {"id": 1000, "category_id": 1, "iscrowd": 0}]
        for k in range(int(rng.integers(1, 4))):
            x, y = int(rng.integers(0, w - 10)), int(rng.integers(h // 3, h - 8))
            cat = int(rng.choice([3, 4]))
            seg_id = cat * 1000 + k + 1
            ids[y:y + 8, x:x + 10] = seg_id
            segments.append({"id": seg_id, "category_id": cat, "iscrowd": int(k == 2)})
        ids[0, :5] = 0  # a little VOID
        present = set(np.unique(ids).tolist())
        segments = [s | {"area": int((ids == s["id"]).sum())} for s in segments if s["id"] in present]
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"im{i}.jpg")
        Image.fromarray(id_to_rgb(ids)).save(pngs / f"im{i}.png")
        infos.append({"id": i, "file_name": f"im{i}.jpg", "width": w, "height": h})
        annotations.append({"image_id": i, "file_name": f"im{i}.png", "segments_info": segments})
    gt_json = root / "panoptic.json"
    gt_json.write_text(json.dumps({"images": infos, "annotations": annotations, "categories": CATEGORIES}))
    return images, gt_json, pngs


# The 19 evaluated classes of cityscapesScripts' labels.py: name, label id, train id, category, has instances, colour.
CITYSCAPES_LABELS = (
    ("road", 7, 0, "flat", False, (128, 64, 128)), ("sidewalk", 8, 1, "flat", False, (244, 35, 232)),
    ("building", 11, 2, "construction", False, (70, 70, 70)), ("wall", 12, 3, "construction", False, (102, 102, 156)),
    ("fence", 13, 4, "construction", False, (190, 153, 153)), ("pole", 17, 5, "object", False, (153, 153, 153)),
    ("traffic light", 19, 6, "object", False, (250, 170, 30)), ("traffic sign", 20, 7, "object", False, (220, 220, 0)),
    ("vegetation", 21, 8, "nature", False, (107, 142, 35)), ("terrain", 22, 9, "nature", False, (152, 251, 152)),
    ("sky", 23, 10, "sky", False, (70, 130, 180)), ("person", 24, 11, "human", True, (220, 20, 60)),
    ("rider", 25, 12, "human", True, (255, 0, 0)), ("car", 26, 13, "vehicle", True, (0, 0, 142)),
    ("truck", 27, 14, "vehicle", True, (0, 0, 70)), ("bus", 28, 15, "vehicle", True, (0, 60, 100)),
    ("train", 31, 16, "vehicle", True, (0, 80, 100)), ("motorcycle", 32, 17, "vehicle", True, (0, 0, 230)),
    ("bicycle", 33, 18, "vehicle", True, (119, 11, 32)),
)


def cityscapes_instance_ids(seed: int = 0, size=(16, 32)) -> np.ndarray:
    """A `*_gtFine_instanceIds.png` array: stuff as its label id, things as id * 1000 + k, a crowd thing as its bare
    label id, and ignored labels (0 unlabeled, 1 ego vehicle, 4 static)."""
    rng = np.random.default_rng(seed)
    h, w = size
    ids = np.full((h, w), 7, np.int32)  # road
    ids[: h // 4] = 23  # sky
    ids[h // 4: h // 2, : w // 2] = 11  # building
    ids[h // 4: h // 2, w // 2:] = 21  # vegetation
    ids[h - 2:] = 1  # ego vehicle (ignored)
    ids[h // 2, :3] = 0  # unlabeled (ignored)
    ids[h // 2 + 1, :2] = 4  # static (ignored)
    for k in range(int(rng.integers(1, 3))):
        x = int(rng.integers(0, w - 6))
        ids[h // 2 + 2: h // 2 + 5, x: x + 5] = 26000 + k  # cars
    ids[h // 2 - 1: h // 2 + 1, w - 4:] = 24000  # a person
    ids[h - 4: h - 2, :4] = 26  # a crowd of cars
    return ids


def cityscapes_panoptic_converted(root: Path, output: str = "gtFine", use_train_id: bool = False,
                                  split: str = "val") -> Path:
    """A Cityscapes root with the panoptic ground truth laid out as cityscapesScripts' createPanopticImgs (2.2.0 and
    2.3.0) writes it from ``gtFine/SPLIT/CITY/*_gtFine_instanceIds.png`` into ``ROOT/OUTPUT`` (the default gtFine/;
    EDAPS passes --output-folder gtFine_panoptic/).

    What it writes: ``cityscapes_panoptic_{split}[_trainId].json`` (sorted keys, indent 4) and the PNG folder of the
    same name; images ``{"id": "CITY_SEQ_FRAME", "file_name": "CITY_SEQ_FRAME_gtFine_leftImg8bit.png"}`` (no city
    folder, and "_gtFine" kept from the instanceIds name); annotations ``{"image_id": "CITY_SEQ_FRAME", "file_name":
    "CITY_SEQ_FRAME_gtFine_panoptic.png", "segments_info": [{id, category_id, area, bbox, iscrowd}]}``; the 19
    evaluated classes as categories, their ids label ids, or train ids with --use-train-id; ignored labels VOID.
    """
    infos = {label_id: (name, train_id, thing) for name, label_id, train_id, _, thing, _ in CITYSCAPES_LABELS}
    out = root / output
    name = f"cityscapes_panoptic_{split}{'_trainId' if use_train_id else ''}"
    (out / name).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for seed, base in enumerate(("frankfurt_000000_000294", "lindau_000001_000019")):
        city = base.split("_")[0]
        instance_ids = cityscapes_instance_ids(seed)
        h, w = instance_ids.shape
        picture = root / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png"
        picture.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(picture)
        panoptic = np.zeros((h, w), np.int64)
        segments = []
        for segment_id in np.unique(instance_ids).tolist():
            label_id = segment_id if segment_id < 1000 else segment_id // 1000
            if label_id not in infos:
                continue  # ignoreInEval: left VOID
            _, train_id, thing = infos[label_id]
            mask = instance_ids == segment_id
            panoptic[mask] = segment_id
            ys, xs = np.nonzero(mask)
            segments.append({"area": int(mask.sum()), "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1,
                                                                int(np.ptp(ys)) + 1],
                             "category_id": train_id if use_train_id else label_id, "id": segment_id,
                             "iscrowd": int(segment_id < 1000 and thing)})
        Image.fromarray(id_to_rgb(panoptic)).save(out / name / f"{base}_gtFine_panoptic.png")
        images.append({"file_name": f"{base}_gtFine_leftImg8bit.png", "height": h, "id": base, "width": w})
        annotations.append({"file_name": f"{base}_gtFine_panoptic.png", "image_id": base, "segments_info": segments})
    categories = [{"color": list(colour), "id": train_id if use_train_id else label_id, "isthing": int(thing),
                   "name": label, "supercategory": category}
                  for label, label_id, train_id, category, thing, colour in CITYSCAPES_LABELS]
    (out / f"{name}.json").write_text(json.dumps({"annotations": annotations, "categories": categories,
                                                   "images": images}, sort_keys=True, indent=4))
    return root
