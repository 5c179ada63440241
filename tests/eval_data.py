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
