"""The device fast path gives the processor path's numbers; batched slide, id conversion, --compile.

Every comparison runs both sides on the same device: the CPU here, the GPU in the CUDA-marked test.
"""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from eval_data import CATEGORIES, coco_panoptic
from PIL import Image

from layerseg_merge.eval.evaluate import evaluate
from layerseg_merge.eval.inference import Segmenter, coco_ids
from layerseg_merge.eval.metrics import VOID, Segment
from layerseg_merge.eval.options import DataOptions, InferenceOptions
from layerseg_merge.eval.preprocess import DevicePreprocessor
from layerseg_merge.resources import DEMO_ASSETS

TOLERANCE = 0.001  # 0.1 points of mIoU / PQ


def cityscapes_size_folder(root, count=3, seed=0):
    """1024x2048 street-like images (smooth bands and boxes, not noise) with 19-class labels."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    for i in range(count):
        label = np.zeros((1024, 2048), np.uint8)
        for band, cls in enumerate(rng.permutation(19)[:6]):
            label[band * 170:(band + 1) * 170 + 30] = cls
        for _ in range(20):
            y, x = rng.integers(0, 900), rng.integers(0, 1900)
            label[y:y + rng.integers(20, 120), x:x + rng.integers(20, 150)] = rng.integers(0, 19)
        palette = rng.integers(0, 255, (19, 3), dtype=np.uint8)
        image = palette[label].astype(np.int16) + rng.integers(-20, 20, (1024, 2048, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"{i}.png")
        label[rng.random(label.shape) < 0.02] = 255
        Image.fromarray(label).save(root / "labels" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def segformer_at_half_size(tmp_path_factory):
    """A small random SegFormer whose processor resizes Cityscapes images to 512x1024, as evaluation does."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    path = tmp_path_factory.mktemp("segformer_half")
    torch.manual_seed(0)
    SegformerForSemanticSegmentation(SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32],
                                                     num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=16,
                                                     num_labels=19)).save_pretrained(path)
    SegformerImageProcessor(size={"height": 512, "width": 1024}).save_pretrained(path)
    return path


def both_paths(model, data, task="semantic", batch_size=4):
    on = DataOptions(data, workers=0)
    fast = evaluate(model, on, task, InferenceOptions("cpu", batch_size, preprocess="device"), progress=False)
    slow = evaluate(model, on, task, InferenceOptions("cpu", batch_size, preprocess="processor"), progress=False)
    return fast, slow


def test_fast_path_equals_processor_path_on_a_cityscapes_size_set(tmp_path, segformer_at_half_size):
    data = cityscapes_size_folder(tmp_path / "data")
    fast, slow = both_paths(segformer_at_half_size, f"folder:{data}", batch_size=2)
    assert abs(fast["mIoU"] - slow["mIoU"]) <= TOLERANCE, (fast["mIoU"], slow["mIoU"])


@pytest.mark.parametrize("model", ["dacs", "panoptic"])
def test_fast_path_equals_processor_path_on_the_demo_split(model):
    test = DEMO_ASSETS / "target_test"
    fast, slow = both_paths(DEMO_ASSETS / "models" / model, f"folder:{test}", batch_size=16)
    assert abs(fast["mIoU"] - slow["mIoU"]) <= TOLERANCE
    if model == "panoptic":  # the center/offset head
        data = f"coco-panoptic:{test / 'images'},{test / 'panoptic.json'},{test / 'panoptic'}"
        fast, slow = both_paths(DEMO_ASSETS / "models" / model, data, task="panoptic", batch_size=16)
        assert abs(fast["All"]["pq"] - slow["All"]["pq"]) <= TOLERANCE


@pytest.fixture(scope="module")
def mask2former_dir(tmp_path_factory):
    from hosts import panoptic_mask2former

    return panoptic_mask2former(tmp_path_factory.mktemp("mask2former"), CATEGORIES,
                                {"shortest_edge": 64, "longest_edge": 128}, seed=1)


def test_fast_path_equals_processor_path_for_a_universal_model(tmp_path, mask2former_dir):
    images, gt_json, pngs = coco_panoptic(tmp_path / "data", count=6, size=(80, 48))
    fast, slow = both_paths(mask2former_dir, f"coco-panoptic:{images},{gt_json},{pngs}", task="panoptic", batch_size=3)
    assert abs(fast["All"]["pq"] - slow["All"]["pq"]) <= TOLERANCE
    assert fast["All"]["n"] == slow["All"]["n"]


@pytest.mark.parametrize("which", ["segformer", "mask2former"])
def test_device_preprocessing_matches_the_processor(which, segformer_at_half_size, mask2former_dir):
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(segformer_at_half_size if which == "segformer" else mask2former_dir)
    rng = np.random.default_rng(3)
    size = (1024, 2048) if which == "segformer" else (48, 80)
    pictures = [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(2)]
    want = processor(images=pictures, return_tensors="pt")
    got = DevicePreprocessor(processor, torch.device("cpu"))(torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2))
    assert got["pixel_values"].shape == want["pixel_values"].shape
    step = 1 / 255 / min(processor.image_std)  # one grey level after normalisation (resize rounding)
    assert (got["pixel_values"] - want["pixel_values"]).abs().max() <= step + 1e-5
    if which == "mask2former":
        assert torch.equal(got["pixel_mask"], want["pixel_mask"])


def test_batched_slide_equals_one_crop_at_a_time(segformer_at_half_size):
    image = torch.from_numpy(np.random.default_rng(4).integers(0, 255, (3, 96, 160), dtype=np.uint8))
    logits = []
    for crops in (1, 6):
        segmenter = Segmenter(segformer_at_half_size, InferenceOptions("cpu", batch_size=crops, slide=(64, 48)))
        logits.append(segmenter.logits([image], [(96, 160)]))
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)
    assert torch.equal(logits[0].argmax(1), logits[1].argmax(1))


def old_conversion(segmentation, segments_info, label_to_category):
    """The per-segment loop the vectorised conversion replaced."""
    ids = torch.full_like(segmentation.to(torch.int64), VOID)
    segments = []
    for new_id, info in enumerate(segments_info, start=1):
        ids[segmentation == info["id"]] = new_id
        segments.append(Segment(new_id, label_to_category[int(info["label_id"])]))
    present = set(torch.unique(ids).tolist())
    return ids, [s for s in segments if s.id in present]


@pytest.mark.parametrize("seed", range(8))
def test_panoptic_id_conversion_equals_the_old_loop(seed):
    generator = torch.Generator().manual_seed(seed)
    segmentation = torch.randint(-1, 9, (37, 53), generator=generator, dtype=torch.int32)
    infos = [{"id": int(i), "label_id": int(torch.randint(0, 4, (1,), generator=generator))}
             for i in torch.randint(1, 12, (7,), generator=generator)]  # repeats: fused stuff segments
    mapping = {label: 10 + label for label in range(4)}
    want_ids, want_segments = old_conversion(segmentation, infos, mapping)
    got_ids, got_segments = coco_ids(segmentation, infos, mapping)
    assert torch.equal(got_ids, want_ids) and got_segments == want_segments


def test_compile_falls_back_to_eager_with_a_message(tmp_path, segformer_at_half_size, monkeypatch):
    data = cityscapes_size_folder(tmp_path / "data", count=1)

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = evaluate(segformer_at_half_size, DataOptions(f"folder:{data}", workers=0),
                            infer=InferenceOptions("cpu", compile=True), progress=False)
    assert any("--compile: torch.compile failed (no compiler here); running eagerly" in str(w.message)
               for w in caught)
    eager = evaluate(segformer_at_half_size, DataOptions(f"folder:{data}", workers=0), infer=InferenceOptions("cpu"),
                     progress=False)
    assert compiled["mIoU"] == eager["mIoU"]


@pytest.mark.slow
def test_compiled_model_gives_the_eager_argmax_on_the_demo_split():
    """Opt-in on the CPU (-m slow: compiling takes about a minute here); the GPU benchmark runs it too."""
    test, model = DEMO_ASSETS / "target_test", DEMO_ASSETS / "models" / "dacs"
    on = DataOptions(f"folder:{test}", workers=0)
    compiled = evaluate(model, on, infer=InferenceOptions("cpu", 16, compile=True), progress=False)
    eager = evaluate(model, on, infer=InferenceOptions("cpu", 16), progress=False)
    assert compiled["mIoU"] == pytest.approx(eager["mIoU"], abs=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA test: runs on a machine with a GPU")
def test_fast_path_equals_processor_path_on_cuda(tmp_path, segformer_at_half_size, mask2former_dir):
    data = cityscapes_size_folder(tmp_path / "data", count=2)
    for amp in ("off", "bf16"):
        fast = evaluate(segformer_at_half_size, DataOptions(f"folder:{data}", workers=2),
                        infer=InferenceOptions("cuda", preprocess="device", amp=amp), progress=False)
        slow = evaluate(segformer_at_half_size, DataOptions(f"folder:{data}", workers=2),
                        infer=InferenceOptions("cuda", preprocess="processor", amp=amp), progress=False)
        assert abs(fast["mIoU"] - slow["mIoU"]) <= TOLERANCE, (amp, fast["mIoU"], slow["mIoU"])
    images, gt_json, pngs = coco_panoptic(tmp_path / "pan", count=6, size=(80, 48))
    spec = f"coco-panoptic:{images},{gt_json},{pngs}"
    fast = evaluate(mask2former_dir, DataOptions(spec, workers=0), "panoptic",
                    InferenceOptions("cuda", preprocess="device"), progress=False)
    slow = evaluate(mask2former_dir, DataOptions(spec, workers=0), "panoptic",
                    InferenceOptions("cuda", preprocess="processor"), progress=False)
    assert abs(fast["All"]["pq"] - slow["All"]["pq"]) <= TOLERANCE
    shutil.rmtree(data)
    assert json.dumps(fast)  # reports stay JSON-serialisable on CUDA
