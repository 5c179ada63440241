"""Panoptic decoding of a center/offset head, on hand-made logits."""

import torch

from layerseg_merge.eval.center_offset import decode

SPEC = {"type": "center_offset", "num_classes": 3, "thing_ids": [2], "offset_scale": 1.0}


def test_two_instances_and_a_stuff_class():
    h, w = 8, 12
    logits = torch.zeros(6, h, w)
    logits[0] = 1.0  # stuff class 0 everywhere ...
    logits[2, 2:6, 1:4] = 5.0  # ... except two thing blobs of class 2
    logits[2, 2:6, 7:10] = 5.0
    logits[3, 4, 2] = 1.0  # center heatmap peaks
    logits[3, 4, 8] = 1.0
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    near_left = xs < 6
    logits[4] = torch.where(near_left, 4 - ys, 4 - ys)  # offsets point at the blob's center
    logits[5] = torch.where(near_left, 2 - xs, 8 - xs)
    ids, segments = decode(logits, SPEC, {0: 10, 1: 11, 2: 12})
    categories = sorted(s.category_id for s in segments)
    assert categories == [10, 12, 12]
    left, right = int(ids[3, 2]), int(ids[3, 8])
    assert left != right and left > 0 and right > 0
    assert (ids[2:6, 1:4] == left).all() and (ids[2:6, 7:10] == right).all()
    assert set(ids.unique().tolist()) == {s.id for s in segments}


def test_things_without_centers_are_void():
    logits = torch.zeros(6, 4, 4)
    logits[2] = 5.0
    ids, segments = decode(logits, SPEC, {0: 10, 1: 11, 2: 12})
    assert segments == [] and (ids == 0).all()
