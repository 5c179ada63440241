"""End-to-end `layerseg score panoptic` against cocodataset/panopticapi `pq_compute` at Cityscapes size.

Generates N seeded COCO panoptic ground-truth/prediction pairs at 1024x2048 (11 stuff bands, ~60 thing rectangles
of 8 categories, at most one crowd segment per category and image, VOID rows; the prediction is a perturbed copy),
times both tools as subprocesses (wall time including interpreter start-up, best of R, the runs taking turns) and
compares PQ/SQ/RQ for All/Things/Stuff. pq_compute runs with multiprocessing.cpu_count() processes; ours with its
defaults, twice: PNGs decoded by Pillow (LAYERSEG_PNG_DECODER=pillow: before kornia-rs) and by the default decoder
(kornia-rs where installed: after), so that before and after are measured side by side.

    python benchmarks/score_vs_panopticapi.py [--images 40] [--repeats 1] [--keep DIR] [--seed 0]
        [--panopticapi-python /tmp/pq_venv/bin/python] [--panopticapi-path /tmp/panopticapi_src]

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
import subprocess
import sys
import tempfile
import time
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


@dataclass
class Painted:
    """A segment as painted: all its pixels lie inside `window` = (y0, y1, x0, x1)."""

    id: int
    category: int
    crowd: bool
    window: tuple[int, int, int, int]


class Canvas:
    """An id map plus the segments painted on it, with fresh random 24-bit ids (all three RGB channels used)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.ids = np.zeros((HEIGHT, WIDTH), dtype=np.int32)
        self.segments: list[Painted] = []
        self._fresh = iter((rng.choice(2**24 - 1, size=512, replace=False) + 1).tolist())

    def paint(self, category: int, window: tuple[int, int, int, int], crowd: bool = False) -> None:
        y0, y1, x0, x1 = (int(v) for v in window)
        y0, y1, x0, x1 = max(y0, 0), min(y1, HEIGHT), max(x0, 0), min(x1, WIDTH)
        if y1 <= y0 or x1 <= x0:
            return
        segment = Painted(next(self._fresh), category, crowd, (y0, y1, x0, x1))
        self.ids[y0:y1, x0:x1] = segment.id
        self.segments.append(segment)

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


def generate(root: Path, images: int, seed: int) -> dict[str, float]:
    """gt/ and pred/ PNG folders plus gt.json and pred.json under `root`; returns per-image segment counts."""
    rng = np.random.default_rng(seed)
    categories = [{"id": c, "name": n, "isthing": 0} for c, n in STUFF.items()]
    categories += [{"id": c, "name": n, "isthing": 1} for c, n in THINGS.items()]
    files: dict[str, dict] = {}
    for split in ("gt", "pred"):
        (root / split).mkdir(parents=True, exist_ok=True)
        files[split] = {"images": [], "annotations": [], "categories": categories}
    counts = {"gt": 0, "pred": 0, "crowd": 0}
    for i in range(images):
        image_id = f"synthetic_{i:06d}_000019"
        gt, edges = ground_truth(rng)
        pred = prediction(rng, gt, edges)
        for split, canvas in (("gt", gt), ("pred", pred)):
            name = f"{image_id}_{split}_panoptic.png"
            canvas.save(root / split / name)
            info = canvas.segments_info()
            counts[split] += len(info)
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


def run_timed(command: list[str], env: dict[str, str]) -> float:
    """Wall time of one run; exits with the tool's output if it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{command[0]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def best_interleaved(repeats: int, runs: dict[str, tuple[list[str], dict[str, str]]]) -> dict[str, float]:
    """Fastest wall time of each named run over `repeats` rounds; the runs take turns, so load hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (command, env) in runs.items():
            times[name].append(run_timed(command, env))
    return {name: min(values) for name, values in times.items()}


def default_decoder() -> str:
    """The PNG decoder `layerseg score` uses by default in this interpreter."""
    from layerseg_merge.eval.images import png_decoder

    return "kornia-rs" if png_decoder() is not None else "Pillow (kornia-rs missing)"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=1, help="best of R runs for each tool")
    parser.add_argument("--keep", type=Path, help="generate the data here and keep it (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--panopticapi-python", default="/tmp/pq_venv/bin/python")
    parser.add_argument("--panopticapi-path", default="/tmp/panopticapi_src")
    args = parser.parse_args()
    layerseg = Path(sys.executable).parent / "layerseg"
    if not layerseg.exists():
        sys.exit(f"{layerseg} not found: install this project into the interpreter running the benchmark")

    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        start = time.perf_counter()
        counts = generate(root, args.images, args.seed)
        print(f"data: {args.images} image pairs {HEIGHT}x{WIDTH} in {root} (generated in "
              f"{time.perf_counter() - start:.1f} s); per image {counts['gt']:.1f} GT segments "
              f"({counts['crowd']:.1f} crowd), {counts['pred']:.1f} predicted")
        gt_json, gt_folder, pred_json, pred_folder = (str(root / n) for n in ("gt.json", "gt", "pred.json", "pred"))
        runs, outputs = {}, {}
        for name, choice in (("layerseg, Pillow PNGs (before)", "pillow"),
                             (f"layerseg, {default_decoder()} PNGs (after)", "auto")):
            outputs[name] = root / f"report_layerseg_{choice}.json"
            runs[name] = ([str(layerseg), "score", "panoptic", "--gt-json", gt_json, "--gt-folder", gt_folder,
                           "--pred-json", pred_json, "--pred-folder", pred_folder, "--out", str(outputs[name])],
                          {**os.environ, "LAYERSEG_PNG_DECODER": choice})
        problem = panopticapi_problem(args.panopticapi_python, args.panopticapi_path)
        if problem:
            print(f"panopticapi not available: {problem}; reporting layerseg only")
        else:
            driver = root / "run_pq_compute.py"
            driver.write_text(DRIVER)
            outputs["panopticapi"] = root / "report_panopticapi.json"
            runs["panopticapi"] = ([args.panopticapi_python, str(driver), gt_json, gt_folder, pred_json, pred_folder,
                                    str(outputs["panopticapi"])], {**os.environ, "PYTHONPATH": args.panopticapi_path})
        seconds = best_interleaved(args.repeats, runs)
        reports = {name: json.loads(path.read_text()) for name, path in outputs.items()}

    for name, value in seconds.items():
        processes = f", {reports[name]['processes']} processes" if name == "panopticapi" else ""
        ratio = f"; panopticapi / this: {seconds['panopticapi'] / value:.2f}x" if "panopticapi" in seconds else ""
        print(f"{name:40s} {value:8.2f} s wall (best of {args.repeats}{processes}){ratio}")
    table({name.split(" (")[0]: report for name, report in reports.items()})
    names = list(reports)
    for other in names[1:]:
        compare(names[0], reports[names[0]], other, reports[other])


if __name__ == "__main__":
    main()
