"""Agreement with torchmetrics where the definitions coincide, and across processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import free_port

from layerseg_merge.eval.metrics import LabelError, PanopticMetric, Segment, SemanticMetric


def test_miou_equals_torchmetrics_jaccard_on_random_data():
    from torchmetrics.classification import MulticlassJaccardIndex

    generator = torch.Generator().manual_seed(0)
    reference = MulticlassJaccardIndex(num_classes=7, ignore_index=255, average="macro")
    ours = SemanticMetric(7)
    for _ in range(4):
        label = torch.randint(0, 7, (2, 40, 50), generator=generator)
        label[torch.rand(label.shape, generator=generator) < 0.1] = 255
        prediction = torch.where(torch.rand(label.shape, generator=generator) < 0.6,
                                 label.clamp(max=6), torch.randint(0, 7, label.shape, generator=generator))
        reference.update(prediction, label)
        ours.update(prediction, label)
    assert ours.compute()["mIoU"] == pytest.approx(float(reference.compute()), abs=1e-6)


def random_panoptic(generator, things, stuffs, height=24, width=32):
    """An id map tiled by rectangles: (id map, segments, torchmetrics (cat, inst) map)."""
    ids = torch.zeros(height, width, dtype=torch.int64)
    pairs = torch.zeros(height, width, 2, dtype=torch.int64)
    categories = things + stuffs
    for y in range(0, height, 8):
        for x in range(0, width, 8):
            cat = categories[int(torch.randint(len(categories), (1,), generator=generator))]
            inst = int(torch.randint(1, 3, (1,), generator=generator)) if cat in things else 0
            h, w = (int(v) for v in torch.randint(4, 9, (2,), generator=generator))
            ids[y:y + h, x:x + w] = cat * 100 + inst
            pairs[y:y + h, x:x + w] = torch.tensor([cat, inst])
    # fill any gap (none expected) with the first stuff category
    gap = ids == 0
    ids[gap], pairs[gap] = stuffs[0] * 100, torch.tensor([stuffs[0], 0])
    segments = [Segment(int(i), int(i) // 100) for i in torch.unique(ids)]
    return ids, segments, pairs


def test_pq_equals_torchmetrics_without_crowd_or_void():
    from torchmetrics.detection import PanopticQuality

    things, stuffs = [1, 2], [3, 4]
    generator = torch.Generator().manual_seed(1)
    reference = PanopticQuality(things=set(things), stuffs=set(stuffs), return_sq_and_rq=True)
    ours = PanopticMetric({1: True, 2: True, 3: False, 4: False})
    for _ in range(6):
        gt_ids, gt_segments, gt_pairs = random_panoptic(generator, things, stuffs)
        pred_ids, pred_segments, pred_pairs = random_panoptic(generator, things, stuffs)
        ours.update(pred_ids, pred_segments, gt_ids, gt_segments)
        reference.update(pred_pairs[None], gt_pairs[None])
    pq, sq, rq = (float(v) for v in reference.compute())
    result = ours.compute()["All"]
    assert (result["pq"], result["sq"], result["rq"]) == pytest.approx((pq, sq, rq), abs=1e-6)


WORKER = Path(__file__).with_name("distributed_worker.py")


def test_torchrun_two_processes_equal_one(tmp_path):
    single = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "single.json")],
                            capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                             "--master-port", str(free_port()), str(WORKER), str(tmp_path / "double.json")],
                            capture_output=True, text=True, env=env)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("single.json", "double.json"))
    assert one == two and one["semantic"]["mIoU"] is not None and one["panoptic"]["All"]["n"] > 0


def reference_pq(images, categories):
    """pq_compute's counting written out pixel by pixel (a Counter of (GT id, predicted id) pairs), with our one
    documented difference: every crowd segment of a category counts as crowd. -> {category: [tp, fp, fn, iou]}."""
    from collections import Counter

    stats = {c: [0, 0, 0, 0.0] for c in categories}
    for gt_ids, gt_segments, pred_ids, pred_segments in images:
        gt, pred = {s.id: s for s in gt_segments}, {s.id: s for s in pred_segments}
        pixels = list(zip(gt_ids.reshape(-1).tolist(), pred_ids.reshape(-1).tolist()))
        joint, gt_area, pred_area = Counter(pixels), Counter(g for g, _ in pixels), Counter(p for _, p in pixels)
        gt_matched, pred_matched = set(), set()
        for (g, p), intersection in joint.items():
            if g not in gt or p not in pred or gt[g].iscrowd or gt[g].category_id != pred[p].category_id:
                continue
            iou = intersection / (gt_area[g] + pred_area[p] - intersection - joint[(0, p)])
            if iou > 0.5:
                stats[gt[g].category_id][0] += 1
                stats[gt[g].category_id][3] += iou
                gt_matched.add(g)
                pred_matched.add(p)
        crowds = {}
        for g, segment in gt.items():
            if segment.iscrowd:
                crowds.setdefault(segment.category_id, []).append(g)
            elif g not in gt_matched:
                stats[segment.category_id][2] += 1
        for p, segment in pred.items():
            ignored = joint[(0, p)] + sum(joint[(c, p)] for c in crowds.get(segment.category_id, []))
            if p not in pred_matched and ignored / pred_area[p] <= 0.5:
                stats[segment.category_id][1] += 1
    return stats


def random_pair(rng, categories, height, width):
    """A GT map of random rectangles (24-bit ids, some crowd, some VOID) and a prediction made from it: boxes moved
    and resized, some missed, some with another category, some that are not in the GT; VOID on both sides."""
    import numpy as np

    things = [c for c, thing in categories.items() if thing]
    gt_ids, pred_ids = np.zeros((height, width), np.int32), np.zeros((height, width), np.int32)
    gt_segments, pred_segments = [], []
    ids = iter((rng.choice(2**24 - 1, 200, replace=False) + 1).tolist())
    for _ in range(int(rng.integers(3, 12))):
        category = int(rng.choice(list(categories)))
        h, w = int(rng.integers(1, height + 1)), int(rng.integers(1, width + 1))
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        crowd = category in things and rng.random() < 0.25
        gt_segments.append(Segment(next(ids), category, bool(crowd)))
        gt_ids[y:y + h, x:x + w] = gt_segments[-1].id
        if rng.random() < 0.2:  # missed
            continue
        dy, dx = (int(v) for v in rng.integers(-2, 3, 2))
        h, w = max(h + int(rng.integers(-2, 3)), 1), max(w + int(rng.integers(-2, 3)), 1)
        predicted = int(rng.choice(list(categories))) if rng.random() < 0.15 else category
        pred_segments.append(Segment(next(ids), predicted))
        pred_ids[max(y + dy, 0):y + dy + h, max(x + dx, 0):x + dx + w] = pred_segments[-1].id
    if rng.random() < 0.6:  # a crowd region on top
        h, w = int(rng.integers(1, height // 2 + 2)), int(rng.integers(1, width // 2 + 2))
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        gt_segments.append(Segment(next(ids), int(rng.choice(things)), True))
        gt_ids[y:y + h, x:x + w] = gt_segments[-1].id
    for _ in range(int(rng.integers(0, 3))):  # predicted where the GT has nothing of the kind
        h, w = int(rng.integers(1, height // 2 + 2)), int(rng.integers(1, width // 2 + 2))
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        pred_segments.append(Segment(next(ids), int(rng.choice(list(categories)))))
        pred_ids[y:y + h, x:x + w] = pred_segments[-1].id
    gt_ids[rng.random((height, width)) < 0.03] = 0  # scattered VOID
    gt_ids[:, : int(rng.integers(0, 3))] = 0  # and a VOID strip
    pred_ids[-int(rng.integers(0, 2)) or height:] = 0
    keep = lambda segments, ids: [s for s in segments if (ids == s.id).any()]  # noqa: E731
    return gt_ids, keep(gt_segments, gt_ids), pred_ids, keep(pred_segments, pred_ids)


@pytest.mark.parametrize("seed", range(6))
def test_pq_equals_a_pixel_by_pixel_reference_with_crowd_void_and_one_sided_segments(seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    categories = {1: True, 2: True, 3: True, 4: False, 5: False, 9: True}  # 9: in the list, never painted by some
    images = [random_pair(rng, categories, int(rng.integers(1, 30)), int(rng.integers(1, 40))) for _ in range(8)]
    metric = PanopticMetric(categories)
    for gt_ids, gt_segments, pred_ids, pred_segments in images:
        metric.update(pred_ids, pred_segments, gt_ids, gt_segments)
    expected = reference_pq(images, categories)
    assert any(s.iscrowd for image in images for s in image[1]) and any((image[0] == 0).any() for image in images)
    for category, (tp, fp, fn, iou) in expected.items():
        assert (int(metric.tp[category]), int(metric.fp[category]), int(metric.fn[category])) == (tp, fp, fn)
        assert float(metric.iou[category]) == pytest.approx(iou, rel=1e-12, abs=1e-12)
    seen = {c for c, (tp, fp, fn, _) in expected.items() if tp + fp + fn}
    report = metric.compute()
    assert set(report["per_class"]) == {str(c) for c in seen} and report["All"]["n"] == len(seen)
    for category in seen:
        tp, fp, fn, iou = expected[category]
        assert report["per_class"][str(category)]["pq"] == pytest.approx(iou / (tp + fp / 2 + fn / 2), abs=1e-12)


def test_a_predicted_segment_of_an_unknown_category_is_refused_as_pq_compute_does():
    import numpy as np

    ids = np.array([[5, 5, 7, 7]], np.int32)
    with pytest.raises(LabelError, match="img.png: predicted segment 7 has unknown category 8"):
        PanopticMetric({1: True}).update(ids, [Segment(5, 1), Segment(7, 8)], ids, [Segment(5, 1), Segment(7, 1)],
                                         name="img.png")
