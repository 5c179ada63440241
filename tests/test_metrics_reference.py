"""Agreement with torchmetrics where the definitions coincide, and across processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import free_port

from layerseg_merge.eval.metrics import PanopticMetric, Segment, SemanticMetric


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
