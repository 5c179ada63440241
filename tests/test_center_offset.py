"""Panoptic decoding of a center/offset head, on hand-made logits."""

import torch

from layerseg_merge.eval.center_offset import decode
from layerseg_merge.eval.options import DataOptions, InferenceOptions

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


def test_a_plateau_gives_one_center():
    """bf16/fp16 rounding turns a sharp peak into a plateau of equal values: still one instance."""
    from layerseg_merge.eval.center_offset import find_centers

    heat = torch.zeros(9, 9)
    heat[4, 4], heat[4, 5], heat[5, 4] = 1.0, 1.0 - 2**-10, 1.0 - 2**-9  # a sharp float32 peak ...
    assert find_centers(heat, 0.3, 7, 32).tolist() == [[4, 4]]
    rounded = heat.bfloat16().float()
    assert rounded[4, 4] == rounded[4, 5] == rounded[5, 4]  # ... is a plateau in bf16
    assert find_centers(rounded, 0.3, 7, 32).tolist() == [[4, 4]]
    heat[2, 7] = 2.0  # a stronger peak within the window suppresses the plateau entirely
    assert find_centers(heat.bfloat16().float(), 0.3, 3, 32).tolist() == [[2, 7], [4, 4]]
    assert find_centers(heat, 0.3, 3, 1).tolist() == [[2, 7]]  # max_instances keeps the strongest


def test_decoding_does_not_change_when_the_logits_are_rounded_to_bf16():
    """The shipped panoptic model: its float32 logits rounded to bf16 give the same segments and PQ within
    0.05 points (a few semantic argmax ties flip); before plateaus gave one center each, 14 segments more
    and 0.2 PQ points less."""
    from layerseg_merge.eval import center_offset
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.resources import DEMO_ASSETS

    test = DEMO_ASSETS / "target_test"
    data = f"coco-panoptic:{test / 'images'},{test / 'panoptic.json'},{test / 'panoptic'}"
    model = DEMO_ASSETS / "models" / "panoptic"
    original = center_offset.decode
    counts: dict[str, list[int]] = {"float32": [], "bf16": []}

    def counted(kind):
        def decode(logits, *args, **kwargs):
            ids, segments = original(logits.bfloat16().float() if kind == "bf16" else logits, *args, **kwargs)
            counts[kind].append(len(segments))
            return ids, segments
        return decode

    runs = {}
    try:
        for kind in counts:
            center_offset.decode = counted(kind)
            runs[kind] = evaluate(model, DataOptions(data, workers=0), "panoptic", InferenceOptions("cpu", 16),
                                  progress=False)
    finally:
        center_offset.decode = original
    assert len(counts["bf16"]) == 48 and counts["bf16"] == counts["float32"]
    for split in ("All", "Things", "Stuff"):
        assert abs(runs["bf16"][split]["pq"] - runs["float32"][split]["pq"]) <= 5e-4, split


def test_amp_bf16_agrees_with_float32_within_the_documented_tolerance():
    """README: `--amp bf16` moves PQ and mIoU of the shipped models by at most 1 point (network rounding)."""
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.resources import DEMO_ASSETS

    test = DEMO_ASSETS / "target_test"
    data = f"coco-panoptic:{test / 'images'},{test / 'panoptic.json'},{test / 'panoptic'}"
    model = DEMO_ASSETS / "models" / "panoptic"
    runs = {amp: evaluate(model, DataOptions(data, workers=0), "panoptic", InferenceOptions("cpu", 16, amp=amp),
                          progress=False) for amp in ("off", "bf16")}
    for split in ("All", "Things", "Stuff"):
        assert abs(runs["bf16"][split]["pq"] - runs["off"][split]["pq"]) <= 0.01, split
    semantic = {amp: evaluate(model, DataOptions(f"folder:{test}", workers=0), "semantic",
                              InferenceOptions("cpu", 16, amp=amp), progress=False)["mIoU"] for amp in ("off", "bf16")}
    assert abs(semantic["bf16"] - semantic["off"]) <= 0.01
