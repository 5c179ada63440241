"""End-to-end `layerseg score panoptic` against cocodataset/panopticapi `pq_compute` at Cityscapes size.

Generates N seeded COCO panoptic ground-truth/prediction pairs at 1024x2048 for each kind of data (`--data`):

- `cityscapes`: as Cityscapes panoptic ground truth is: stuff layers with sloped, curved edges, about 20 things
  (cars, people, ... as ellipses, one crowd group), an ego-vehicle VOID area, Cityscapes ids (stuff: the category,
  things: category * 1000 + k); the prediction moves the edges and the things. Few segments, large flat regions:
  PNGs of 15-30 KB that decode fast.
- `rectangles`: 11 stuff bands, ~60 thing rectangles of 8 categories, at most one crowd segment per category and
  image, VOID rows, random 24-bit ids (all three channels); the prediction is a perturbed copy. PNGs of ~11 KB.
- `speckled`: the `cityscapes` ground truth against a noisy prediction: half the pixels near edges take a
  neighbour's id and 5% of all pixels a random segment's: runs of pixels 10x as many, predicted PNGs of ~450 KB
  that decode more slowly.

It times both tools as subprocesses (wall and CPU time including interpreter start-up, best of R, the runs taking
turns), prints where each spends its CPU time per image pair (decoding vs the per-pixel work, measured in one
process on the first pairs), and compares PQ/SQ/RQ for All/Things/Stuff. pq_compute runs with
multiprocessing.cpu_count() processes; ours with its defaults, twice: PNGs decoded by Pillow
(LAYERSEG_PNG_DECODER=pillow) and by the default decoder (kornia-rs where installed). Every figure comes with the
usable cores (the affinity mask) and the load average before and after. Beside other work the CPU-time ratio is the
steadier one: a wall time also counts the time a tool waited for a core.

    python benchmarks/score_vs_panopticapi.py [--data cityscapes,rectangles,speckled] [--images 40] [--repeats 2]
        [--keep DIR] [--seed 0] [--panopticapi-python /tmp/pq_venv/bin/python]
        [--panopticapi-path /tmp/panopticapi_src]

panopticapi is not on PyPI; keep it outside this repository (its code is never committed):

    python3 -m venv /tmp/pq_venv && /tmp/pq_venv/bin/pip install numpy pillow
    git clone --depth 1 https://github.com/cocodataset/panopticapi /tmp/panopticapi_src
    # or copy panopticapi/{evaluation,utils}.py from that repository into /tmp/panopticapi_src/panopticapi/
    # next to an empty __init__.py
    PYTHONPATH=/tmp/panopticapi_src /tmp/pq_venv/bin/python -c "from panopticapi.evaluation import pq_compute"

Without that interpreter or package only our time is reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

HEIGHT, WIDTH = 1024, 2048
STUFF = {23: "sky", 11: "building", 21: "vegetation", 12: "wall", 13: "fence", 17: "pole", 19: "traffic light",
         20: "traffic sign", 22: "terrain", 8: "sidewalk", 7: "road"}  # Cityscapes label ids, top to bottom
THINGS = {24: "person", 25: "rider", 26: "car", 27: "truck", 28: "bus", 31: "train", 32: "motorcycle",
          33: "bicycle"}
GROUPS = ("All", "Things", "Stuff")
METRICS = ("pq", "sq", "rq")
KINDS = ("cityscapes", "rectangles", "speckled")
PROFILED = 10  # image pairs timed in one process for the breakdown of CPU time

# Run by the panopticapi interpreter: pq_compute, then its summary as JSON (argv: gt json/folder, pred json/folder,
# output file). A file rather than `-c` so that multiprocessing also works where it spawns.
DRIVER = """\
import json, multiprocessing, sys
from panopticapi.evaluation import pq_compute

if __name__ == "__main__":
    gt_json, gt_folder, pred_json, pred_folder, out = sys.argv[1:6]
    results = pq_compute(gt_json, pred_json, gt_folder=gt_folder, pred_folder=pred_folder)
    summary = {name: {k: float(v) for k, v in results[name].items()} for name in ("All", "Things", "Stuff")}
    summary["per_class"] = {str(c): {k: float(v) for k, v in r.items()} for c, r in results["per_class"].items()}
    summary["processes"] = multiprocessing.cpu_count()
    with open(out, "w") as f:
        json.dump(summary, f)
"""

# Where each tool spends its CPU time per image pair, in one process (argv: root, pairs): decoding (both PNGs to id
# maps) and the rest (the per-pixel work and the matching), best of two passes, printed as JSON in ms per pair.
# pq_compute_single_core decodes as timed here: np.array(Image.open(...), dtype=np.uint32), then rgb2id.
PANOPTICAPI_PROFILE = """\
import contextlib, io, json, os, sys, time
import numpy as np
from PIL import Image
from panopticapi.evaluation import pq_compute_single_core
from panopticapi.utils import rgb2id

root, count = sys.argv[1], int(sys.argv[2])
gt, pred = (json.load(open(os.path.join(root, f"{s}.json"))) for s in ("gt", "pred"))
pairs = list(zip(gt["annotations"], pred["annotations"]))[:count]
categories = {c["id"]: c for c in gt["categories"]}
def decode():
    for g, p in pairs:
        rgb2id(np.array(Image.open(os.path.join(root, "gt", g["file_name"])), dtype=np.uint32))
        rgb2id(np.array(Image.open(os.path.join(root, "pred", p["file_name"])), dtype=np.uint32))
def everything():
    with contextlib.redirect_stdout(io.StringIO()):
        pq_compute_single_core(0, pairs, os.path.join(root, "gt"), os.path.join(root, "pred"), categories)
times = {}
for name, work in (("decoding", decode), ("total", everything)):
    cpu = []
    for _ in range(2):
        start = time.process_time()
        work()
        cpu.append(time.process_time() - start)
    times[name] = 1000 * min(cpu) / len(pairs)
print(json.dumps(times))
"""

# The same for layerseg, with the memory setting of its scoring workers; also the share of pixels that start a run of
# equal (GT id, predicted id) pairs (what the per-pixel work reads once the runs are found).
LAYERSEG_PROFILE = """\
import json, sys, time
from pathlib import Path
import numpy as np
from layerseg_merge.eval import images
from layerseg_merge.eval.metrics import PanopticMetric
from layerseg_merge.eval.score import _keep_freed_memory, _segments

_keep_freed_memory()
read = getattr(images, "read_panoptic_pixels", images.read_panoptic_ids)  # what `layerseg score` reads
root, count = Path(sys.argv[1]), int(sys.argv[2])
gt, pred = (json.loads((root / f"{s}.json").read_text()) for s in ("gt", "pred"))
pairs = list(zip(gt["annotations"], pred["annotations"]))[:count]
categories = {c["id"]: bool(c["isthing"]) for c in gt["categories"]}
def decode(read=read):
    return [(read(root / "gt" / g["file_name"]), read(root / "pred" / p["file_name"])) for g, p in pairs]
maps = decode()
segments = [(_segments(root, g["segments_info"]), _segments(root, p["segments_info"])) for g, p in pairs]
def pixels():
    for (g, p), (gs, ps) in zip(maps, segments):
        PanopticMetric(categories).image_stats(p, ps, g, gs)
times = {}
for name, work in (("decoding", decode), ("pixels", pixels)):
    cpu = []
    for _ in range(2):
        start = time.process_time()
        work()
        cpu.append(time.process_time() - start)
    times[name] = 1000 * min(cpu) / len(pairs)
g, p = (np.concatenate([m[k].reshape(-1) for m in decode(images.read_panoptic_ids)]) for k in (0, 1))
times["runs"] = float(((g[1:] != g[:-1]) | (p[1:] != p[:-1])).mean())
print(json.dumps(times))
"""


@dataclass
class Painted:
    """A segment as painted: all its pixels lie inside `window` = (y0, y1, x0, x1)."""

    id: int
    category: int
    crowd: bool
    window: tuple[int, int, int, int]


class Canvas:
    """An id map plus the segments painted on it, with fresh random 24-bit ids (all three RGB channels used), or
    with Cityscapes' ids (`cityscapes`: stuff and crowd regions the category, things category * 1000 + k)."""

    def __init__(self, rng: np.random.Generator, cityscapes: bool = False) -> None:
        self.ids = np.zeros((HEIGHT, WIDTH), dtype=np.int32)
        self.segments: list[Painted] = []
        self.cityscapes = cityscapes
        self._instances: Counter = Counter()
        self._fresh = iter([]) if cityscapes else iter((rng.choice(2**24 - 1, size=512, replace=False) + 1).tolist())

    def _segment(self, category: int, crowd: bool, window: tuple[int, int, int, int]) -> int:
        """The id to paint; one segment per stuff category (and crowd region) with Cityscapes' ids."""
        if not self.cityscapes:
            self.segments.append(Painted(next(self._fresh), category, crowd, window))
            return self.segments[-1].id
        if category in THINGS and not crowd:
            self._instances[category] += 1
            self.segments.append(Painted(category * 1000 + self._instances[category], category, crowd, window))
            return self.segments[-1].id
        for k, s in enumerate(self.segments):
            if s.id == category:
                y0, y1, x0, x1 = s.window
                self.segments[k] = Painted(category, category, crowd, (min(y0, window[0]), max(y1, window[1]),
                                                                      min(x0, window[2]), max(x1, window[3])))
                return category
        self.segments.append(Painted(category, category, crowd, window))
        return category

    def paint(self, category: int, window: tuple[int, int, int, int], crowd: bool = False) -> None:
        y0, y1, x0, x1 = (int(v) for v in window)
        y0, y1, x0, x1 = max(y0, 0), min(y1, HEIGHT), max(x0, 0), min(x1, WIDTH)
        if y1 <= y0 or x1 <= x0:
            return
        self.ids[y0:y1, x0:x1] = self._segment(category, crowd, (y0, y1, x0, x1))

    def paint_mask(self, category: int, y0: int, x0: int, mask: np.ndarray, crowd: bool = False) -> None:
        """Paint the True pixels of `mask`, whose top left corner is at (y0, x0); parts off the canvas are cut."""
        top, bottom = max(y0, 0), min(y0 + mask.shape[0], HEIGHT)
        left, right = max(x0, 0), min(x0 + mask.shape[1], WIDTH)
        if bottom <= top or right <= left or not mask[top - y0:bottom - y0, left - x0:right - x0].any():
            return
        mask, window = mask[top - y0:bottom - y0, left - x0:right - x0], (top, bottom, left, right)
        self.ids[window[0]:window[1], window[2]:window[3]][mask] = self._segment(category, crowd, window)

    def below(self, category: int, top: np.ndarray, bottom: int = HEIGHT, columns: slice = slice(None)) -> None:
        """Paint rows from `top[x]` down to `bottom` in each column (a layer with a curved upper edge)."""
        top = np.clip(top[columns], 0, HEIGHT).astype(int)
        x0 = columns.start or 0
        if top.size == 0 or top.min() >= bottom:
            return
        y0 = int(top.min())
        rows = np.arange(y0, bottom)[:, None]
        self.paint_mask(category, y0, x0, rows >= top[None, :])

    def void_rows(self, y0: int, y1: int) -> None:
        self.ids[max(y0, 0):min(y1, HEIGHT)] = 0

    def segments_info(self) -> list[dict]:
        """COCO `segments_info` of the segments still visible, areas and boxes taken from the map."""
        present, counts = np.unique(self.ids, return_counts=True)
        areas = dict(zip(present.tolist(), counts.tolist()))
        info = []
        for s in self.segments:
            if s.id not in areas:
                continue
            y0, y1, x0, x1 = s.window
            mask = self.ids[y0:y1, x0:x1] == s.id
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            bbox = [x0 + int(cols[0]), y0 + int(rows[0]), int(cols[-1] - cols[0]) + 1, int(rows[-1] - rows[0]) + 1]
            info.append({"id": s.id, "category_id": s.category, "iscrowd": int(s.crowd), "area": areas[s.id],
                         "bbox": bbox})
        return info

    def save(self, path: Path) -> None:
        rgb = np.stack([self.ids & 255, (self.ids >> 8) & 255, (self.ids >> 16) & 255], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(path)


def ground_truth(rng: np.random.Generator) -> tuple[Canvas, np.ndarray]:
    """Stuff bands with jittered edges, 1-3 crowd regions (distinct categories), 60 thing rectangles, VOID rows."""
    gt = Canvas(rng)
    edges = np.linspace(0, HEIGHT, len(STUFF) + 1).astype(int)
    edges[1:-1] += rng.integers(-30, 31, len(STUFF) - 1)
    for k, category in enumerate(STUFF):
        gt.paint(category, (edges[k], edges[k + 1], 0, WIDTH))
    things = list(THINGS)
    for category in rng.choice(things, size=int(rng.integers(1, 4)), replace=False):
        y, x, h, w = rng.integers(150, 800), rng.integers(0, WIDTH - 600), rng.integers(80, 250), rng.integers(200, 600)
        gt.paint(int(category), (y, y + h, x, x + w), crowd=True)
    for _ in range(60):
        h, w = rng.integers(24, 260), rng.integers(24, 360)
        y, x = rng.integers(0, HEIGHT - h), rng.integers(0, WIDTH - w)
        gt.paint(things[rng.integers(len(things))], (y, y + h, x, x + w))
    gt.void_rows(0, int(rng.integers(4, 17)))
    gt.void_rows(HEIGHT - int(rng.integers(0, 80)), HEIGHT)
    y = int(rng.integers(100, HEIGHT - 100))
    gt.void_rows(y, y + int(rng.integers(2, 12)))
    return gt, edges


def prediction(rng: np.random.Generator, gt: Canvas, edges: np.ndarray) -> Canvas:
    """The GT perturbed: shifted band edges, some stuff and thing category swaps, shifted and resized instances,
    ~10% missed, a few false positives, several instances predicted inside each crowd region, VOID bottom rows."""
    pred = Canvas(rng)
    stuff = list(STUFF)
    moved = np.sort(np.clip(edges + rng.integers(-25, 26, len(edges)), 0, HEIGHT))
    moved[0], moved[-1] = 0, HEIGHT
    for k, category in enumerate(stuff):
        if rng.random() < 0.08:
            category = stuff[rng.integers(len(stuff))]
        pred.paint(category, (moved[k], moved[k + 1], 0, WIDTH))
    things = list(THINGS)
    for s in gt.segments:
        if s.category not in THINGS:
            continue
        y0, y1, x0, x1 = s.window
        h, w = y1 - y0, x1 - x0
        if s.crowd:
            for _ in range(int(rng.integers(1, 4))):
                ph, pw = rng.integers(h // 4, h // 2 + 1), rng.integers(w // 6, w // 3 + 1)
                py, px = rng.integers(y0, y1 - ph + 1), rng.integers(x0, x1 - pw + 1)
                pred.paint(s.category, (py, py + ph, px, px + pw))
            continue
        if rng.random() < 0.1:
            continue
        ph, pw = h * rng.uniform(0.75, 1.3), w * rng.uniform(0.75, 1.3)
        cy, cx = (y0 + y1) / 2 + rng.normal(0, 0.1) * h, (x0 + x1) / 2 + rng.normal(0, 0.1) * w
        category = things[rng.integers(len(things))] if rng.random() < 0.07 else s.category
        pred.paint(category, (round(cy - ph / 2), round(cy + ph / 2), round(cx - pw / 2), round(cx + pw / 2)))
    for _ in range(int(rng.integers(3, 9))):
        h, w = rng.integers(24, 200), rng.integers(24, 300)
        y, x = rng.integers(0, HEIGHT - h), rng.integers(0, WIDTH - w)
        pred.paint(things[rng.integers(len(things))], (y, y + h, x, x + w))
    pred.void_rows(HEIGHT - int(rng.integers(0, 24)), HEIGHT)
    return pred


def curve(rng: np.random.Generator, base: float, amplitude: float, pieces: int) -> np.ndarray:
    """A piecewise-linear edge over the columns: `pieces` segments, knots within `amplitude` of `base`."""
    knots = np.linspace(0, WIDTH, pieces + 1)
    return np.interp(np.arange(WIDTH), knots, base + rng.uniform(-amplitude, amplitude, pieces + 1))


def blocks(rng: np.random.Generator, base: float, amplitude: float) -> np.ndarray:
    """A skyline: flat roofs 80-300 columns wide."""
    edges = np.cumsum(rng.integers(80, 300, 40))
    heights = base + rng.uniform(-amplitude, amplitude, 41)
    return heights[np.searchsorted(edges, np.arange(WIDTH), side="right")]


def ellipse(height: int, width: int) -> np.ndarray:
    y, x = np.ogrid[:height, :width]
    return ((y + 0.5 - height / 2) / (height / 2)) ** 2 + ((x + 0.5 - width / 2) / (width / 2)) ** 2 <= 1


def street_scene(rng: np.random.Generator) -> dict:
    """The parameters of a Cityscapes-like street view: layered stuff edges, poles and signs, things standing on
    the ground (sized by their distance), a crowd group, the ego vehicle's bonnet (VOID)."""
    horizon = int(rng.integers(430, 520))
    things = []
    for category, count, on_road in ((26, int(rng.integers(6, 13)), True), (24, int(rng.integers(3, 9)), False),
                                     (33, int(rng.integers(0, 3)), True), (25, int(rng.integers(0, 2)), True),
                                     (27, int(rng.integers(0, 2)), True)):
        for _ in range(count):
            bottom = float(rng.uniform(horizon + 30, HEIGHT - 90))
            scale = (bottom - horizon) / (HEIGHT - horizon)
            height = {26: 260, 24: 330, 33: 200, 25: 330, 27: 420}[category] * scale + 8
            width = height * {26: 2.0, 24: 0.4, 33: 1.2, 25: 0.5, 27: 1.6}[category]
            centre = rng.uniform(0.2, 0.8) * WIDTH if on_road else rng.choice([0.08, 0.92]) * WIDTH
            things.append([category, bottom, float(centre + rng.normal(0, 0.08 * WIDTH)), height, width, False])
    if rng.random() < 0.7:  # a group of people labelled as one crowd region
        bottom = float(rng.uniform(horizon + 60, horizon + 200))
        things.append([24, bottom, float(rng.uniform(0.05, 0.95) * WIDTH), 180.0, float(rng.uniform(150, 400)), True])
    things.sort(key=lambda t: t[1])  # far first: near things cover them
    return {
        "horizon": horizon,
        "skyline": blocks(rng, horizon - 260, 150),
        "vegetation": curve(rng, horizon - 90, 80, 10),
        "vegetation_columns": sorted(rng.integers(0, WIDTH, 2).tolist()),
        "sidewalk": curve(rng, horizon + 15, 10, 4),
        "road_centre": float(rng.uniform(0.4, 0.6) * WIDTH),
        "road_slope": float(rng.uniform(1.4, 2.4)),
        "poles": [(int(rng.integers(0, WIDTH)), int(rng.integers(6, 16)), int(rng.integers(150, 350)))
                  for _ in range(int(rng.integers(2, 6)))],
        "things": things,
        "bonnet": float(rng.uniform(70, 130)),
    }


def paint_street(scene: dict, void: bool = True) -> Canvas:
    """A street scene's id map (Cityscapes ids), stuff from far to near, then things, then VOID."""
    canvas = Canvas(np.random.default_rng(0), cityscapes=True)
    horizon = scene["horizon"]
    canvas.paint(23, (0, HEIGHT, 0, WIDTH))  # sky
    canvas.below(11, scene["skyline"], bottom=horizon + 40)  # buildings
    start, stop = scene["vegetation_columns"]
    canvas.below(21, scene["vegetation"], bottom=horizon + 40, columns=slice(start, stop))
    for x, width, height in scene["poles"]:
        canvas.paint(17, (horizon - height, horizon + 40, x, x + width))
        canvas.paint(20, (horizon - height - 40, horizon - height, x - 20, x + width + 20))  # a sign on top
    canvas.below(8, scene["sidewalk"])  # sidewalk: everything under its edge ...
    rows = np.arange(horizon + 20, HEIGHT)[:, None]
    half = (rows - horizon) * scene["road_slope"]  # ... but the road, widening towards the camera
    canvas.paint_mask(7, horizon + 20, 0, np.abs(np.arange(WIDTH)[None, :] - scene["road_centre"]) < half)
    for category, bottom, centre, height, width, crowd in scene["things"]:
        h, w = max(int(height), 4), max(int(width), 4)
        canvas.paint_mask(category, int(bottom) - h, int(centre) - w // 2, ellipse(h, w), crowd=crowd)
    if void:
        x = (np.arange(WIDTH) - WIDTH / 2) / (WIDTH / 2)
        canvas.ids[np.arange(HEIGHT)[:, None] >= HEIGHT - scene["bonnet"] * (1 - 0.6 * x**2)] = 0
        canvas.void_rows(0, 3)
    return canvas


def predicted_street(rng: np.random.Generator, scene: dict) -> dict:
    """The scene as a model sees it: edges moved, things shifted and resized, ~10% missed, some with the wrong
    category, a few that are not there; the crowd group seen as a few people; the bonnet as road."""
    out = dict(scene)
    out["horizon"] = scene["horizon"] + int(rng.integers(-6, 7))
    out["skyline"] = scene["skyline"] + curve(rng, 0, 12, 20)
    out["vegetation"] = scene["vegetation"] + curve(rng, 0, 15, 10)
    out["sidewalk"] = scene["sidewalk"] + curve(rng, 0, 6, 6)
    out["road_centre"] = scene["road_centre"] + float(rng.normal(0, 20))
    out["road_slope"] = scene["road_slope"] * float(rng.uniform(0.95, 1.05))
    out["poles"] = [(x + int(rng.integers(-4, 5)), max(w + int(rng.integers(-3, 4)), 3), h + int(rng.integers(-20, 21)))
                    for x, w, h in scene["poles"] if rng.random() > 0.2]
    things = []
    for category, bottom, centre, height, width, crowd in scene["things"]:
        if crowd:
            for _ in range(int(rng.integers(2, 5))):
                offset = float(rng.uniform(-0.4, 0.4)) * width
                things.append([category, bottom + float(rng.normal(0, 8)), centre + offset,
                               height * float(rng.uniform(0.8, 1.0)), height * 0.4, False])
            continue
        if rng.random() < 0.1:
            continue
        if rng.random() < 0.07:
            category = int(rng.choice(list(THINGS)))
        things.append([category, bottom + float(rng.normal(0, 0.06)) * height,
                       centre + float(rng.normal(0, 0.06)) * width, height * float(rng.uniform(0.85, 1.15)),
                       width * float(rng.uniform(0.85, 1.15)), False])
    for _ in range(int(rng.integers(1, 4))):
        things.append([int(rng.choice([24, 26, 33])), float(rng.uniform(scene["horizon"] + 40, HEIGHT - 100)),
                       float(rng.uniform(0, WIDTH)), float(rng.uniform(40, 200)), float(rng.uniform(30, 300)), False])
    out["things"] = sorted(things, key=lambda t: t[1])
    return out


def speckle(rng: np.random.Generator, canvas: Canvas) -> None:
    """A noisy model's output: half the pixels within 3 pixels of an edge take the id of a pixel up to 3 rows and
    columns away, and 5% of all pixels the id of a random segment of the image."""
    ids = canvas.ids
    edge = np.zeros(ids.shape, dtype=bool)
    for shift in (1, 2, 3):
        edge[:, shift:] |= ids[:, shift:] != ids[:, :-shift]
        edge[shift:] |= ids[shift:] != ids[:-shift]
    edge[:, :-3] |= edge[:, 3:]
    edge[:-3] |= edge[3:]
    chosen = np.flatnonzero(edge & (rng.random(ids.shape) < 0.5))
    y, x = np.divmod(chosen, WIDTH)
    source = (np.clip(y + rng.integers(-3, 4, y.size), 0, HEIGHT - 1),
              np.clip(x + rng.integers(-3, 4, x.size), 0, WIDTH - 1))
    ids.reshape(-1)[chosen] = ids[source]
    salt = rng.random(ids.shape) < 0.05
    ids[salt] = rng.choice(np.unique(ids), int(salt.sum()))


def street_pair(rng: np.random.Generator, speckled: bool) -> tuple[Canvas, Canvas]:
    scene = street_scene(rng)
    gt = paint_street(scene)
    pred = paint_street(predicted_street(rng, scene), void=False)
    pred.void_rows(HEIGHT - int(rng.integers(0, 24)), HEIGHT)
    if speckled:
        speckle(rng, pred)
    return gt, pred


def generate(root: Path, images: int, seed: int, kind: str = "rectangles") -> dict[str, float]:
    """gt/ and pred/ PNG folders plus gt.json and pred.json under `root`; returns per-image segment counts and
    PNG sizes."""
    rng = np.random.default_rng(seed)
    categories = [{"id": c, "name": n, "isthing": 0} for c, n in STUFF.items()]
    categories += [{"id": c, "name": n, "isthing": 1} for c, n in THINGS.items()]
    files: dict[str, dict] = {}
    for split in ("gt", "pred"):
        (root / split).mkdir(parents=True, exist_ok=True)
        files[split] = {"images": [], "annotations": [], "categories": categories}
    counts = {"gt": 0, "pred": 0, "crowd": 0, "gt_kb": 0.0, "pred_kb": 0.0}
    for i in range(images):
        image_id = f"synthetic_{i:06d}_000019"
        if kind == "rectangles":
            gt, edges = ground_truth(rng)
            pred = prediction(rng, gt, edges)
        else:
            gt, pred = street_pair(rng, speckled=kind == "speckled")
        for split, canvas in (("gt", gt), ("pred", pred)):
            name = f"{image_id}_{split}_panoptic.png"
            canvas.save(root / split / name)
            info = canvas.segments_info()
            counts[split] += len(info)
            counts[f"{split}_kb"] += (root / split / name).stat().st_size / 1024
            counts["crowd"] += sum(s["iscrowd"] for s in info)
            files[split]["images"].append({"id": image_id, "file_name": f"{image_id}_leftImg8bit.png",
                                           "width": WIDTH, "height": HEIGHT})
            files[split]["annotations"].append({"image_id": image_id, "file_name": name, "segments_info": info})
    for split, content in files.items():
        (root / f"{split}.json").write_text(json.dumps(content))
    return {k: v / images for k, v in counts.items()}


def panopticapi_problem(python: str, path: str) -> str | None:
    """Why panopticapi cannot run with this interpreter and path, or None when it can."""
    try:
        check = subprocess.run([python, "-c", "from panopticapi.evaluation import pq_compute"],
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
    except OSError as error:
        return f"cannot start {python} ({error})"
    if check.returncode != 0:
        return f"{python} with PYTHONPATH={path} cannot import panopticapi ({check.stderr.strip().splitlines()[-1]})"
    return None


def number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def gap(a: float | None, b: float | None) -> float:
    """|a - b|, with None as NaN: 0 when both are NaN, inf when only one is."""
    a, b = number(a), number(b)
    if math.isnan(a) or math.isnan(b):
        return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    return abs(a - b)


def table(reports: dict[str, dict]) -> None:
    """PQ/SQ/RQ in % and n for All/Things/Stuff, one column block per report."""
    labels = f"{'PQ':>8s} {'SQ':>8s} {'RQ':>8s} {'n':>5s}"
    print("\n" + " " * 7 + "   ".join(f"{name + ' (%)':<{len(labels)}s}" for name in reports).rstrip())
    print(" " * 7 + "   ".join(labels for _ in reports))
    for group in GROUPS:
        print(f"{group:6s} " + "   ".join(" ".join(f"{100 * number(r[group][m]):8.4f}" for m in METRICS)
                                          + f" {int(r[group]['n']):5d}" for r in reports.values()))


def run_timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU time (user + system, its worker processes included) of one run; exits with the tool's output if
    it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{command[0]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def best_interleaved(repeats: int, runs: dict[str, tuple[list[str], dict[str, str]]]) -> dict[str, list]:
    """Every (wall, CPU) time of each named run over `repeats` rounds; the runs take turns, so load hits them alike."""
    times: dict[str, list] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (command, env) in runs.items():
            times[name].append(run_timed(command, env))
    return times


def default_decoder() -> str:
    """The PNG decoder `layerseg score` uses by default in this interpreter."""
    from layerseg_merge.eval.images import png_decoder

    return "kornia-rs" if png_decoder() is not None else "Pillow (kornia-rs missing)"


def conditions() -> str:
    """The cores this process may use and the load averages (1, 5, 15 min)."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return f"{len(cores)} usable cores, load {' '.join(f'{v:.2f}' for v in os.getloadavg())}"


def profile(python: str, script: str, root: Path, env: dict[str, str]) -> dict[str, float]:
    """The per-pair CPU breakdown printed by one of the profile scripts."""
    done = subprocess.run([python, "-c", script, str(root), str(PROFILED)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"profiling failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(name: str, ours: dict, other: str, theirs: dict) -> None:
    """The largest differences of the summary and per-category PQ/SQ/RQ between two reports."""
    diff = max(gap(ours[g][m], theirs[g][m]) for g in GROUPS for m in METRICS)
    same_n = all(int(ours[g]["n"]) == int(theirs[g]["n"]) for g in GROUPS)
    print(f"{name} vs {other}: max |difference| over PQ/SQ/RQ of All/Things/Stuff {diff:.3g} (fractions); "
          f"n equal: {same_n}")
    ours_classes, their_classes = ours.get("per_class", {}), theirs.get("per_class", {})
    common = [c for c in their_classes if c in ours_classes
              and sum(ours_classes[c].get(k, 0) for k in ("tp", "fp", "fn")) > 0]
    if common:
        per_class = max(gap(ours_classes[c][m], their_classes[c][m]) for c in common for m in METRICS)
        print(f"  max |difference| per category PQ/SQ/RQ ({len(common)} categories): {per_class:.3g}")


def measure(kind: str, root: Path, args: argparse.Namespace, layerseg: Path, panopticapi: bool) -> dict[str, float]:
    """One kind of data: generate, time both tools, profile both, compare their numbers; returns the ratios."""
    start = time.perf_counter()
    counts = generate(root, args.images, args.seed, kind)
    print(f"\n== data: {kind}: {args.images} image pairs {HEIGHT}x{WIDTH} in {root} (generated in "
          f"{time.perf_counter() - start:.1f} s); per image {counts['gt']:.1f} GT segments ({counts['crowd']:.1f} "
          f"crowd), {counts['pred']:.1f} predicted; PNGs {counts['gt_kb']:.0f} KB (GT), {counts['pred_kb']:.0f} KB "
          "(predicted) on average")
    gt_json, gt_folder, pred_json, pred_folder = (str(root / n) for n in ("gt.json", "gt", "pred.json", "pred"))
    runs, outputs = {}, {}
    for name, choice in (("layerseg, Pillow PNGs", "pillow"), (f"layerseg, {default_decoder()} PNGs", "auto")):
        outputs[name] = root / f"report_layerseg_{choice}.json"
        runs[name] = ([str(layerseg), "score", "panoptic", "--gt-json", gt_json, "--gt-folder", gt_folder,
                       "--pred-json", pred_json, "--pred-folder", pred_folder, "--out", str(outputs[name])],
                      {**os.environ, "LAYERSEG_PNG_DECODER": choice})
    their_env = {**os.environ, "PYTHONPATH": args.panopticapi_path}
    if panopticapi:
        driver = root / "run_pq_compute.py"
        driver.write_text(DRIVER)
        outputs["panopticapi"] = root / "report_panopticapi.json"
        runs["panopticapi"] = ([args.panopticapi_python, str(driver), gt_json, gt_folder, pred_json, pred_folder,
                                str(outputs["panopticapi"])], their_env)
    print(f"before: {conditions()}")
    times = best_interleaved(args.repeats, runs)
    print(f"after:  {conditions()}")
    reports = {name: json.loads(path.read_text()) for name, path in outputs.items()}
    ratios = {}
    for name, values in times.items():
        wall, cpu = min(v[0] for v in values), min(v[1] for v in values)
        every = ", ".join(f"{w:.2f}" for w, _ in values)
        processes = f", {reports[name]['processes']} processes" if name == "panopticapi" else ""
        ratio = ""
        if "panopticapi" in times and name != "panopticapi":
            their_wall, their_cpu = (min(v[k] for v in times["panopticapi"]) for k in (0, 1))
            ratios[name] = their_wall / wall
            ratio = f"; panopticapi / this: {their_wall / wall:.2f}x wall, {their_cpu / cpu:.2f}x CPU"
        print(f"  {name:30s} {wall:6.2f} s wall (runs: {every}), {cpu:6.2f} s CPU{processes} (best of "
              f"{args.repeats}){ratio}")
    ours = profile(sys.executable, LAYERSEG_PROFILE, root, dict(os.environ))
    total = ours["decoding"] + ours["pixels"]
    line = (f"  CPU ms per image pair, one process, first {min(PROFILED, args.images)} pairs, best of 2 "
            f"({conditions()}):"
            f"\n    layerseg ({default_decoder()} PNGs): decoding {ours['decoding']:.1f} + per-pixel work "
            f"{ours['pixels']:.1f} = {total:.1f} (decoding {100 * ours['decoding'] / total:.0f}%; runs start at "
            f"{100 * ours['runs']:.1f}% of the pixels)")
    if panopticapi:
        theirs = profile(args.panopticapi_python, PANOPTICAPI_PROFILE, root, their_env)
        rest = theirs["total"] - theirs["decoding"]
        line += (f"\n    panopticapi: decoding {theirs['decoding']:.1f} + per-pixel work {rest:.1f} = "
                 f"{theirs['total']:.1f} (decoding {100 * theirs['decoding'] / theirs['total']:.0f}%); "
                 f"panopticapi / layerseg: {theirs['total'] / total:.2f}x")
        ratios["profile"] = theirs["total"] / total
    print(line)
    table({name.split(" PNGs")[0]: report for name, report in reports.items()})
    names = list(reports)
    for other in names[1:]:
        compare(names[0], reports[names[0]], other, reports[other])
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=",".join(KINDS), help=f"kinds of data, comma-separated: {', '.join(KINDS)}")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each tool (best of them and every one shown)")
    parser.add_argument("--keep", type=Path, help="generate the data here and keep it (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--panopticapi-python", default="/tmp/pq_venv/bin/python")
    parser.add_argument("--panopticapi-path", default="/tmp/panopticapi_src")
    args = parser.parse_args()
    kinds = args.data.split(",")
    if any(kind not in KINDS for kind in kinds):
        sys.exit(f"--data {args.data}: use some of {', '.join(KINDS)}, comma-separated")
    layerseg = Path(sys.executable).parent / "layerseg"
    if not layerseg.exists():
        sys.exit(f"{layerseg} not found: install this project into the interpreter running the benchmark")
    problem = panopticapi_problem(args.panopticapi_python, args.panopticapi_path)
    if problem:
        print(f"panopticapi not available: {problem}; reporting layerseg only")
    summary = {}
    with tempfile.TemporaryDirectory() as scratch:
        for kind in kinds:
            summary[kind] = measure(kind, (args.keep or Path(scratch)) / kind, args, layerseg, problem is None)
    if problem is None:
        print("\npanopticapi / layerseg (wall, end to end; CPU per pair in one process):")
        for kind, ratios in summary.items():
            print(f"  {kind:11s} " + "; ".join(f"{name}: {value:.2f}x" for name, value in ratios.items()))


if __name__ == "__main__":
    main()
