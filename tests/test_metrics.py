"""Hand-computed expectations for the semantic and panoptic metrics."""

import math

import pytest
import torch

from layerseg_merge.eval.metrics import LabelError, PanopticMetric, Segment, SemanticMetric

T = torch.tensor


def test_semantic_by_hand_with_ignore_fp_only_and_absent_classes():
    # 4 classes: 0 and 1 in GT; 2 predicted only; 3 absent from both.
    label = T([[0, 0, 1, 1], [0, 255, 1, 255]])
    pred = T([[0, 1, 1, 2], [0, 0, 1, 2]])
    metric = SemanticMetric(4)
    metric.update(pred, label)
    r = metric.compute()
    # valid pixels (gt, pred): (0,0) (0,1) (1,1) (1,2) | (0,0) (1,1)
    # class 0: gt 3, pred 2, inter 2 -> 2/3; class 1: gt 3, pred 3, inter 2 -> 2/4
    # class 2: predicted only -> IoU 0 (counted); class 3: absent from both -> NaN (left out)
    assert r["per_class"]["0"]["IoU"] == pytest.approx(2 / 3)
    assert r["per_class"]["1"]["IoU"] == pytest.approx(1 / 2)
    assert r["per_class"]["2"]["IoU"] == 0.0
    assert r["per_class"]["3"]["IoU"] is None
    assert r["mIoU"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert r["aAcc"] == pytest.approx(4 / 6)
    assert r["per_class"]["2"]["Acc"] is None  # no GT pixels
    assert r["mAcc"] == pytest.approx(2 / 3)


def test_semantic_prediction_of_ignore_index_counts_as_wrong():
    metric = SemanticMetric(2)
    metric.update(T([255, 0]), T([0, 0]))
    r = metric.compute()
    assert r["per_class"]["0"]["IoU"] == pytest.approx(1 / 2) and r["aAcc"] == pytest.approx(0.5)


@pytest.mark.parametrize("what", ["label", "prediction"])
def test_semantic_out_of_range_names_the_image(what):
    good, bad = T([[0, 1]]), T([[0, 7]])
    args = (good, bad) if what == "label" else (bad, good)
    with pytest.raises(LabelError, match=f"frame_01.png: {what} value 7 is outside \\[0, 2\\]"):
        SemanticMetric(3).update(*args, name="frame_01.png")


def test_semantic_all_absent_is_none():
    metric = SemanticMetric(2)
    metric.update(T([255]), T([255]))
    assert metric.compute()["mIoU"] is None


def seg(id, cat, crowd=False):
    return Segment(id, cat, crowd)


CATS = {1: True, 2: True, 3: False}  # 1, 2 things; 3 stuff


def run(gt, gt_segs, pred, pred_segs, cats=CATS):
    metric = PanopticMetric(cats)
    metric.update(T(pred), pred_segs, T(gt), gt_segs)
    return metric, metric.compute()


def test_tp_with_void_removed_from_union():
    gt = [[5, 5, 5, 0]]
    pred = [[7, 7, 0, 7]]
    metric, r = run(gt, [seg(5, 1)], pred, [seg(7, 1)])
    # inter 2; union = 3 + 3 - 2 - 1 (pred on VOID) = 3 -> IoU 2/3 > 0.5
    assert (metric.tp[1], metric.fp[1], metric.fn[1]) == (1, 0, 0)
    assert r["per_class"]["1"]["sq"] == pytest.approx(2 / 3)
    assert r["All"]["pq"] == pytest.approx(2 / 3) and r["All"]["n"] == 1


def test_iou_exactly_half_is_not_a_match():
    gt = [[5, 5, 6, 6]]
    pred = [[7, 7, 7, 7]]
    metric, r = run(gt, [seg(5, 1), seg(6, 2)], pred, [seg(7, 1)])
    # IoU(5, 7) = 2 / 4 = 0.5 -> no match: FN for 5 (cat 1), FN for 6 (cat 2), FP for 7 (cat 1)
    assert (int(metric.tp[1]), int(metric.fp[1]), int(metric.fn[1]), int(metric.fn[2])) == (0, 1, 1, 1)
    assert r["All"]["pq"] == 0.0 and r["All"]["n"] == 2


def test_unmatched_prediction_mostly_on_void_is_not_a_false_positive():
    gt = [[0, 0, 0, 5]]
    pred = [[7, 7, 7, 8]]
    metric, _ = run(gt, [seg(5, 1)], pred, [seg(7, 2), seg(8, 1)])
    assert int(metric.fp[2]) == 0 and int(metric.tp[1]) == 1


def test_crowd_of_same_category_absorbs_prediction_but_other_category_does_not():
    gt = [[9, 9, 9, 5, 5]]
    same = [[7, 7, 7, 8, 8]]
    metric, _ = run(gt, [seg(9, 1, crowd=True), seg(5, 1)], same, [seg(7, 1), seg(8, 1)])
    assert (int(metric.tp[1]), int(metric.fp[1]), int(metric.fn[1])) == (1, 0, 0)  # crowd never FN
    metric, _ = run(gt, [seg(9, 1, crowd=True), seg(5, 1)], same, [seg(7, 2), seg(8, 1)])
    assert int(metric.fp[2]) == 1  # crowd of category 1 does not cover a category-2 prediction


def test_all_crowd_segments_of_a_category_count():
    gt = [[9, 9, 4, 4, 5]]
    pred = [[7, 7, 7, 7, 8]]
    metric, _ = run(gt, [seg(9, 1, True), seg(4, 1, True), seg(5, 1)], pred, [seg(7, 1), seg(8, 1)])
    assert int(metric.fp[1]) == 0  # panopticapi (last crowd only) would count 2/4 -> FP


def test_empty_stuff_split_is_null_not_a_crash():
    _, r = run([[5, 5]], [seg(5, 1)], [[7, 7]], [seg(7, 1)])
    assert r["Stuff"] == {"pq": None, "sq": None, "rq": None, "n": 0}
    assert r["Things"]["n"] == 1 and r["Things"]["pq"] == 1.0


def test_stuff_and_things_averages():
    gt = [[5, 5, 6, 6]]
    pred = [[7, 7, 8, 9]]
    _, r = run(gt, [seg(5, 1), seg(6, 3)], pred, [seg(7, 1), seg(8, 3), seg(9, 3)])
    # cat 1 TP (iou 1); cat 3: 6 vs 8 iou 1/2 -> not TP: FN 1, FP 2 -> pq 0
    assert r["Things"]["pq"] == 1.0 and r["Stuff"]["pq"] == 0.0
    assert r["All"]["pq"] == 0.5 and math.isclose(r["Stuff"]["rq"], 0.0)


def test_unknown_segment_and_category_are_named():
    with pytest.raises(LabelError, match="img.png: predicted PNG has segment id 8 with no entry"):
        PanopticMetric(CATS).update(T([[8]]), [], T([[5]]), [seg(5, 1)], name="img.png")
    with pytest.raises(LabelError, match="unknown category 42"):
        PanopticMetric(CATS).update(T([[7]]), [seg(7, 42)], T([[5]]), [seg(5, 1)], name="img.png")
    with pytest.raises(LabelError, match="segment 6 is in the JSON but not in the PNG"):
        PanopticMetric(CATS).update(T([[7]]), [seg(7, 1)], T([[5]]), [seg(5, 1), seg(6, 1)])


def test_both_metrics_share_one_summed_state_that_resets():
    import numpy as np

    from layerseg_merge.eval.metrics import PanopticMetric, Segment, SemanticMetric, SummedMetric

    semantic = SemanticMetric(3)
    semantic.update(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [2, 1]]))
    semantic.update(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [2, 1]]))
    assert semantic.confusion.sum() == 8 and semantic.compute()["aAcc"] == 0.75
    panoptic = PanopticMetric({1: False, 2: True})
    ids = np.array([[1, 1], [2, 2]])
    panoptic.update(ids, [Segment(1, 1), Segment(2, 2)], ids, [Segment(1, 1), Segment(2, 2)])
    assert panoptic.compute()["All"]["pq"] == 1.0
    for metric in (semantic, panoptic):
        assert isinstance(metric, SummedMetric)
        metric.reset()
        assert all(not value.any() for value in metric.state)
    assert panoptic.compute()["All"]["n"] == 0
