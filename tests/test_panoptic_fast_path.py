"""The panoptic per-pixel pass: one value per run of equal (GT, predicted) ids, RGB pixels read without an id map,
CPU tensors scored by numpy; every path gives the same sums."""

import tracemalloc

import numpy as np
import pytest
import torch
from eval_data import id_to_rgb
from PIL import Image
from test_metrics_reference import random_pair

from layerseg_merge.eval import images, metrics
from layerseg_merge.eval.metrics import LabelError, PanopticMetric, Segment

CATEGORIES = {1: True, 2: True, 3: True, 4: False, 5: False}


def stats_of(result):
    return [np.asarray(getattr(result, name)) for name in ("tp", "fp", "fn", "iou")]


def assert_same(a, b):
    for x, y in zip(stats_of(a), stats_of(b)):
        assert np.array_equal(x, y)


def flat_pair(height=256, width=512):
    """Two maps of a few flat regions (as panoptic PNGs are), with VOID."""
    gt = np.full((height, width), 6, np.int32)
    gt[:, : width // 3] = 5
    gt[: height // 8] = 0
    pred = np.full((height, width), 8, np.int32)
    pred[:, : width // 3 + 7] = 7
    return (pred, [Segment(7, 1), Segment(8, 4)], gt, [Segment(5, 1), Segment(6, 4)])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("speckle", [0.0, 0.6])
def test_runs_rgb_cpu_tensors_and_the_per_pixel_path_give_the_same_sums(seed, speckle):
    rng = np.random.default_rng(seed)
    gt, gt_segments, pred, pred_segments = random_pair(rng, CATEGORIES, int(rng.integers(1, 40)),
                                                       int(rng.integers(1, 50)))
    noisy = rng.random(pred.shape) < speckle  # many runs: the per-pixel path
    pred[noisy] = rng.choice([s.id for s in pred_segments] + [0], int(noisy.sum()))
    pred_segments = [s for s in pred_segments if (pred == s.id).any()]
    metric = PanopticMetric(CATEGORIES)
    expected = metric.image_stats(pred, pred_segments, gt, gt_segments)
    for gt_map, pred_map in ((id_to_rgb(gt), id_to_rgb(pred)), (id_to_rgb(gt), pred), (gt, id_to_rgb(pred)),
                             (gt.astype(np.int64), pred.astype(np.uint32)),
                             (torch.from_numpy(gt), torch.from_numpy(pred)),
                             (torch.from_numpy(id_to_rgb(gt)), torch.from_numpy(id_to_rgb(pred)))):
        assert_same(metric.image_stats(pred_map, pred_segments, gt_map, gt_segments), expected)
    for share in (0.0, 1.0):  # every map through one path
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(metrics, "_RUNS_PER_PIXEL", share)
            assert_same(metric.image_stats(id_to_rgb(pred), pred_segments, gt, gt_segments), expected)
            patch.setattr(metrics, "_on_cpu", lambda array: False)  # torch's kernels, as on a GPU
            for gt_map, pred_map in ((gt, pred), (id_to_rgb(gt), id_to_rgb(pred))):
                result = metric.image_stats(torch.from_numpy(pred_map), pred_segments, torch.from_numpy(gt_map),
                                            gt_segments)
                assert_same(result, expected)


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (2, 2)])
def test_tiny_maps(shape):
    gt, pred = np.full(shape, 5, np.int32), np.full(shape, 7, np.int32)
    pred.reshape(-1)[-1] = 8
    segments = [s for s in (Segment(7, 1), Segment(8, 2)) if (pred == s.id).any()]
    metric = PanopticMetric(CATEGORIES)
    expected = metric.image_stats(pred.astype(np.int64), segments, gt, [Segment(5, 1)])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "_RUNS_PER_PIXEL", 0.0)
        dense = metric.image_stats(pred, segments, gt, [Segment(5, 1)])
    for result in (dense, metric.image_stats(id_to_rgb(pred), segments, id_to_rgb(gt), [Segment(5, 1)])):
        assert_same(result, expected)
    size = gt.size
    assert int(expected.tp[1]) == int(size > 1 and (size - 1) / size > 0.5) and int(expected.fp[2]) == 1


def test_an_empty_map_with_no_segments_adds_nothing():
    empty = np.zeros((0, 4), np.int32)
    for gt, pred in ((empty, empty), (np.zeros((0, 4, 3), np.uint8), np.zeros((0, 4, 3), np.uint8))):
        result = PanopticMetric(CATEGORIES).image_stats(pred, [], gt, [])
        assert all(not array.any() for array in stats_of(result))


@pytest.mark.parametrize("where", [0, 37, -1])  # the first pixel, inside, the last pixel (it has no 4-byte key)
@pytest.mark.parametrize("rgb", [False, True])
def test_an_id_missing_from_the_json_is_named_at_any_pixel(where, rgb):
    pred, pred_segments, gt, gt_segments = flat_pair(8, 16)
    pred.reshape(-1)[where] = 99
    with pytest.raises(LabelError, match="img.png: predicted PNG has segment id 99 with no entry in the JSON"):
        PanopticMetric(CATEGORIES).image_stats(id_to_rgb(pred) if rgb else pred, pred_segments, gt, gt_segments,
                                               name="img.png")
    pred, pred_segments, gt, gt_segments = flat_pair(8, 16)
    gt.reshape(-1)[where] = 98
    with pytest.raises(LabelError, match="img.png: ground-truth PNG has segment id 98 with no entry"):
        PanopticMetric(CATEGORIES).image_stats(pred, pred_segments, id_to_rgb(gt) if rgb else gt, gt_segments,
                                               name="img.png")


def test_shapes_of_rgb_and_id_maps_are_compared_by_their_pixels():
    pred, pred_segments, gt, gt_segments = flat_pair(8, 16)
    with pytest.raises(LabelError, match=r"img.png: prediction shape \(8, 15\) != ground truth shape \(8, 16\)"):
        PanopticMetric(CATEGORIES).image_stats(id_to_rgb(pred[:, :15]), pred_segments, gt, gt_segments,
                                               name="img.png")


def test_the_per_pixel_pass_makes_no_per_pixel_integer_array():
    """Flat maps: a bool per pixel and side at most (the old pass made int32/int64 index maps: 20 bytes a pixel)."""
    pred, pred_segments, gt, gt_segments = flat_pair()
    metric = PanopticMetric(CATEGORIES)
    metric.image_stats(pred, pred_segments, gt, gt_segments)
    for gt_map, pred_map in ((gt, pred), (id_to_rgb(gt), id_to_rgb(pred))):
        tracemalloc.start()
        try:
            metric.image_stats(pred_map, pred_segments, gt_map, gt_segments)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 3 * gt.size


def test_cpu_tensors_are_scored_by_numpy(monkeypatch):
    """torch's CPU bincount and nonzero are slower than numpy's (10-30x with two threads under load); the results
    stay CPU tensors."""
    pred, pred_segments, gt, gt_segments = flat_pair(16, 32)
    expected = PanopticMetric(CATEGORIES).image_stats(pred, pred_segments, gt, gt_segments)
    labels = np.random.default_rng(0).integers(0, 3, (2, 16, 32))
    confusion = metrics.SemanticMetric(3).image_stats(labels[0], labels[1])

    def refuse(*args, **kwargs):
        raise AssertionError("a torch kernel ran on CPU tensors")

    for name in ("bincount", "nonzero"):
        monkeypatch.setattr(torch, name, refuse)
    monkeypatch.setattr(torch.Tensor, "nonzero", refuse)
    result = PanopticMetric(CATEGORIES).image_stats(torch.from_numpy(pred), pred_segments, torch.from_numpy(gt),
                                                    gt_segments)
    assert all(isinstance(a, torch.Tensor) and a.device.type == "cpu" for a in (result.tp, result.iou))
    assert_same(result, expected)
    semantic = metrics.SemanticMetric(3).image_stats(torch.from_numpy(labels[0]), torch.from_numpy(labels[1]))
    assert isinstance(semantic, torch.Tensor) and np.array_equal(semantic.numpy(), confusion)


def test_read_panoptic_pixels_gives_rgb_from_the_fast_decoder_and_ids_from_pillow(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 2**24, (6, 9)).repeat(4, 0).repeat(4, 1)
    Image.fromarray(id_to_rgb(ids)).save(tmp_path / "ids.png")
    for choice, ndim in (("auto", 3), ("pillow", 2)):  # kornia-rs is a dependency
        monkeypatch.setenv(images.DECODER_VARIABLE, choice)
        images.png_decoder.cache_clear()
        pixels = images.read_panoptic_pixels(tmp_path / "ids.png")
        assert pixels.ndim == ndim and np.array_equal(images.read_panoptic_ids(tmp_path / "ids.png"), ids)
        segments = [Segment(int(i), 1) for i in np.unique(ids)]
        result = PanopticMetric(CATEGORIES).image_stats(pixels, segments, ids, segments)
        assert int(result.tp[1]) == len(segments) and float(result.iou[1]) == len(segments)
    images.png_decoder.cache_clear()
