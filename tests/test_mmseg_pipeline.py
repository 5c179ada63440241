"""`layerseg eval` on imported DAFormer / HRDA models follows mmseg's test pipeline (tools/test.py).

Expected values are built here from first principles, not from layerseg_merge: mmcv's rescale
rule, OpenCV's fixed-point INTER_LINEAR written out per output coordinate (checked against bytes
that real OpenCV produced), mmcv's normalisation, the independent functional DAFormer / HRDA
forwards of mmseg_reference.py, and mmseg's two bilinear upsamplings. Sizes: Cityscapes
(1024x2048), ACDC (1080x1920) and a 540x960 image, scaled down by 16 or 10 with the aspect ratio
kept, with the test scales scaled down alike (DAFormer (1024, 512) -> (64, 32), HRDA (2048, 1024)
-> (128, 64)).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_one_line_error
from mmseg_fixtures import TINY_HEADS, daformer_checkpoint, save_checkpoint
from mmseg_reference import (
    SMALL,
    daformer_head_forward,
    hrda_reference,
    import_,
    mit_forward,
    run,
    small_checkpoint,
    student,
)
from PIL import Image

from layerseg_merge.eval.mmseg_pipeline import cv2_resize_linear, rescale_size

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
SIZES = [(64, 128), (108, 192), (54, 96)]  # Cityscapes / 16, ACDC and Dark Zurich 1080x1920 / 10, 540x960 / 10
DAFORMER_SCALE, HRDA_SCALE = (64, 32), (128, 64)
HRDA_SMALL = {"lr_scale": 0.5, "hr_crop": 32, "hr_stride": 16, "crop": 64, "stride": 32}


# ------------------------------------------------------------------------------------------ references


def reference_rescale(height, width, scale):
    """mmcv.rescale_size for a (w, h) tuple scale: fit the long and short edges, round half up."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def _axis(source, target, clamp):
    """OpenCV resize(): per output index the first source index and the two 11-bit weights."""
    taps = []
    scale = 1.0 / (target / source)
    for d in range(target):
        f = np.float32((d + 0.5) * scale - 0.5)
        i = int(np.floor(f))
        f = np.float32(f - np.float32(i))
        if clamp and i < 0:
            i, f = 0, np.float32(0)
        if clamp and i >= source - 1:
            i, f = source - 1, np.float32(0)
        taps.append((i, int(np.rint((np.float32(1) - f) * np.float32(2048))), int(np.rint(f * np.float32(2048)))))
    return taps


def reference_cv2_linear(image, height, width):
    """cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR) for uint8 HWC images, written out."""
    source_h, source_w = image.shape[:2]
    if (source_h, source_w) == (height, width):
        return image.copy()
    pixels = image.astype(np.int64)
    if (source_h, source_w) == (2 * height, 2 * width):  # OpenCV takes its INTER_AREA shortcut
        total = pixels[0::2, 0::2] + pixels[0::2, 1::2] + pixels[1::2, 0::2] + pixels[1::2, 1::2]
        return ((total + 2) >> 2).astype(np.uint8)
    columns = _axis(source_w, width, clamp=True)
    horizontal = np.stack([pixels[:, i] * a + pixels[:, min(i + 1, source_w - 1)] * b for i, a, b in columns], 1)
    out = np.zeros((height, width, image.shape[2]), np.int64)
    for y, (i, a, b) in enumerate(_axis(source_h, height, clamp=False)):
        top, bottom = horizontal[min(max(i, 0), source_h - 1)], horizontal[min(max(i + 1, 0), source_h - 1)]
        out[y] = (((top >> 4) * a >> 16) + ((bottom >> 4) * b >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def reference_inputs(image, scale):
    """Resize(keep_ratio) + Normalize(to_rgb) as mmcv computes them: float32 image, double arithmetic."""
    resized = reference_cv2_linear(image, *reference_rescale(*image.shape[:2], scale)).astype(np.float32)
    mean = np.asarray(MEAN, np.float32).astype(np.float64)
    stdinv = 1 / np.asarray(STD, np.float32).astype(np.float64)
    normalised = ((resized.astype(np.float64) - mean) * stdinv).astype(np.float32)
    return torch.from_numpy(normalised).permute(2, 0, 1)[None]


def two_step(logits, input_size, size):
    """mmseg: encode_decode resizes to the network input, inference to the original image."""
    logits = F.interpolate(logits, size=input_size, mode="bilinear", align_corners=False)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def reference_logits(kind, state, image, scale, inference=None):
    pixels = reference_inputs(image, scale)
    with torch.no_grad():
        if kind == "daformer":
            logits = daformer_head_forward(state, mit_forward(state, pixels))
        else:
            logits = hrda_reference(state, pixels, **inference)
    return two_step(logits, tuple(pixels.shape[-2:]), image.shape[:2])


def textured(height, width, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 127 + 60 * np.sin(x / 3.7 + seed) + 50 * np.cos(y / 5.3)
    return np.clip(base[..., None] * 0.6 + rng.integers(0, 256, (height, width, 3)) * 0.4, 0, 255).astype(np.uint8)


def segmenter_logits(model_dir, image):
    from layerseg_merge.eval.inference import Segmenter
    from layerseg_merge.eval.options import InferenceOptions

    segmenter = Segmenter(model_dir, InferenceOptions("cpu"))
    with torch.no_grad():
        return segmenter.logits(torch.from_numpy(image).permute(2, 0, 1)[None], [image.shape[:2]])


def assert_same_prediction(got, want):
    """Logits within 1e-5 (the issue's target; measured: under 7e-7); argmax identical unless the top two tie."""
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    top2 = want.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4
    assert torch.equal(got.argmax(1)[clear], want.argmax(1)[clear])


def hrda_config(path, scale=HRDA_SCALE, inference=HRDA_SMALL, **model):
    """A config JSON in the layout of the released ones (mmcv Config dumped), scaled down."""
    config = {
        "model": {"type": "HRDAEncoderDecoder", "scales": [1, inference["lr_scale"]],
                  "hr_crop_size": [inference["hr_crop"]] * 2, "hr_slide_overlapping": True,
                  "test_cfg": {"mode": "slide", "batched_slide": True, "stride": [inference["stride"]] * 2,
                               "crop_size": [inference["crop"]] * 2}, **model},
        "data": {"test": {"type": "CityscapesDataset", "pipeline": [
            {"type": "LoadImageFromFile"},
            {"type": "MultiScaleFlipAug", "img_scale": list(scale), "flip": False, "transforms": [
                {"type": "Resize", "keep_ratio": True}, {"type": "RandomFlip"},
                {"type": "Normalize", "mean": list(MEAN), "std": list(STD), "to_rgb": True},
                {"type": "ImageToTensor", "keys": ["img"]}, {"type": "Collect", "keys": ["img"]}]}]}},
    }
    path.write_text(json.dumps(config))
    return path


# ------------------------------------------------------------------------------------------ resize


# cv2.resize of the 4x6x3 image below to 4x3 and 9x7 (INTER_LINEAR), bytes from opencv-python-headless
# 4.5.5.64, 4.10.0.84 and 5.0.0.93 (identical).
GOLDEN_IMAGE = ((np.arange(4 * 6 * 3).reshape(4, 6, 3) * 37 + 11) % 256).astype(np.uint8)
GOLDEN_DOWN = "365b80bc4166838877698e5e6e93b854799ebb6085a1a66ba6cb508cb136536d92395378"
GOLDEN_UP = ("0b305542678c8c87acd6264ba0456a6a8f8ab4d9297ea348365b8042678c4c7196687197b24e73aa4f74926b759fb55188ad52"
             "6d925c9abfe45a80a52e5075788db2b85d83d231537d7b9097bb60c5ea217297bc6a8fb45e83a853789d886d92bc6186b1567ba6"
             "8b709dc2674a6f81789db991b7d83d6278567b979794bae14065ab597e6388ada2c74787ac7f6f949e7da23d658a5d5d7398a780"
             "a571688d284d72d9fe2390b55a5a7f7aa5c9196e9338385d8282a7cc4c719604294e")


@pytest.mark.parametrize("size,golden", [((3, 4), GOLDEN_DOWN), ((7, 9), GOLDEN_UP)])
def test_resize_equals_bytes_opencv_produced(size, golden):
    want = np.frombuffer(bytes.fromhex(golden), np.uint8).reshape(*size, 3)
    assert np.array_equal(reference_cv2_linear(GOLDEN_IMAGE, *size), want)
    got = cv2_resize_linear(torch.from_numpy(GOLDEN_IMAGE).permute(2, 0, 1)[None], size)
    assert np.array_equal(got[0].permute(1, 2, 0).numpy(), want)
    antialiased = F.interpolate(torch.from_numpy(GOLDEN_IMAGE).permute(2, 0, 1)[None].float(), size=size,
                                mode="bilinear", antialias=True, align_corners=False).round().clamp(0, 255)
    assert not np.array_equal(antialiased[0].permute(1, 2, 0).byte().numpy(), want)  # the old resize is not it


@pytest.mark.parametrize("source,target", [
    ((64, 128), (32, 64)), ((108, 192), (32, 57)), ((54, 96), (32, 57)), ((54, 96), (64, 114)),
    ((108, 192), (64, 114)), ((64, 128), (64, 128)), ((37, 53), (91, 20)), ((5, 300), (3, 7)), ((200, 9), (201, 10)),
])
def test_resize_equals_the_written_out_opencv(source, target):
    image = textured(*source, seed=sum(source))
    got = cv2_resize_linear(torch.from_numpy(image).permute(2, 0, 1)[None], target)
    assert np.array_equal(got[0].permute(1, 2, 0).numpy(), reference_cv2_linear(image, *target))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("scale", [DAFORMER_SCALE, HRDA_SCALE])
def test_network_inputs_equal_mmcvs_to_the_bit(size, scale):
    from layerseg_merge.eval.mmseg_pipeline import MmsegPipeline

    pipeline = {"img_scale": list(scale), "keep_ratio": True, "mean": list(MEAN), "std": list(STD)}
    image = textured(*size, seed=5)
    got = MmsegPipeline(pipeline, torch.device("cpu"))(torch.from_numpy(image).permute(2, 0, 1)[None])
    assert torch.equal(got["pixel_values"], reference_inputs(image, scale))


@pytest.mark.parametrize("size,scale,expected", [
    ((1024, 2048), (1024, 512), (512, 1024)), ((1080, 1920), (1024, 512), (512, 910)),
    ((540, 960), (1024, 512), (512, 910)), ((1024, 2048), (2048, 1024), (1024, 2048)),
    ((1080, 1920), (2048, 1024), (1024, 1820)), ((540, 960), (2048, 1024), (1024, 1820)),
    ((1080, 1920), (960, 540), (540, 960)), ((54, 96), (64, 32), (32, 57)),
])
def test_keep_ratio_sizes_are_mmcvs(size, scale, expected):
    assert rescale_size(*size, scale) == reference_rescale(*size, scale) == expected


# ------------------------------------------------------------------------------------------ eval


@pytest.fixture(scope="module")
def daformer(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("daformer")
    checkpoint, data = small_checkpoint(tmp, "daformer", seed=6)
    out, _ = import_(checkpoint, tmp / "model", "--test-scale", ",".join(map(str, DAFORMER_SCALE)))
    return out, student(data)


@pytest.fixture(scope="module")
def hrda(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hrda")
    checkpoint, data = small_checkpoint(tmp, "hrda", seed=7)
    out, output = import_(checkpoint, tmp / "model", "--config", hrda_config(tmp / "hrda.json"))
    return out, student(data), output


@pytest.mark.parametrize("size", SIZES)
def test_daformer_logits_follow_the_mmseg_pipeline(daformer, size):
    out, state = daformer
    image = textured(*size, seed=size[0])
    want = reference_logits("daformer", state, image, DAFORMER_SCALE)
    assert_same_prediction(segmenter_logits(out, image), want)


@pytest.mark.parametrize("size", SIZES)
def test_hrda_logits_follow_the_mmseg_pipeline(hrda, size):
    out, state, _ = hrda
    image = textured(*size, seed=size[1])
    want = reference_logits("hrda", state, image, HRDA_SCALE, HRDA_SMALL)
    assert_same_prediction(segmenter_logits(out, image), want)


def test_hrda_settings_come_from_its_config(hrda):
    out, _, output = hrda
    settings = json.loads((out / "config.json").read_text())["layerseg_mmseg"]
    assert settings["inference"] == HRDA_SMALL
    assert settings["test_pipeline"]["img_scale"] == list(HRDA_SCALE) and settings["test_pipeline"]["keep_ratio"]
    assert "test pipeline: img_scale (128, 64), keep_ratio True" in output and "hrda.json" in output


def test_eval_with_no_flags_scores_as_the_reference(daformer, tmp_path):
    out, state = daformer
    folder = tmp_path / "data"
    rng = np.random.default_rng(3)
    inter, union = np.zeros(19), np.zeros(19)
    for index, size in enumerate([(54, 96), (54, 96), (108, 192)]):
        image = textured(*size, seed=40 + index)
        label = rng.integers(0, 19, size).astype(np.uint8)
        label[rng.random(size) < 0.1] = 255
        for sub, array in (("images", image), ("labels", label)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder / sub / f"{index}.png")
        pred = reference_logits("daformer", state, image, DAFORMER_SCALE)[0].argmax(0).numpy()
        keep = label != 255
        for c in range(19):
            p, g = (pred == c) & keep, (label == c) & keep
            inter[c] += (p & g).sum()
            union[c] += (p | g).sum()
    result = run("eval", out, "--data", f"folder:{folder}", "--device", "cpu", "--workers", "0",
                 "--out", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    with np.errstate(invalid="ignore"):
        miou = float(np.nanmean(inter / union))
    assert json.loads((tmp_path / "r.json").read_text())["mIoU"] == pytest.approx(miou, abs=1e-9)


def labelled_folder(folder, sizes, seed):
    """A folder: dataset of textured images with random labels (10% ignored)."""
    rng = np.random.default_rng(seed)
    for index, size in enumerate(sizes):
        label = rng.integers(0, 19, size).astype(np.uint8)
        label[rng.random(size) < 0.1] = 255
        for sub, array in (("images", textured(*size, seed=seed + index)), ("labels", label)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder / sub / f"{index}.png")
    return folder


@pytest.mark.parametrize("model", ["daformer", "hrda"])
def test_eval_test_scale_runs_the_pipeline_at_that_scale(request, model, tmp_path):
    """`eval --test-scale W,H`: mmseg's pipeline with that img_scale, as the reference computes it; the imported
    scale is untouched, the report and the card record the scale, a note says it leaves the protocol."""
    out, state = request.getfixturevalue(model)[:2]
    scale, imported = ((48, 24), DAFORMER_SCALE) if model == "daformer" else ((96, 48), HRDA_SCALE)
    text = f"{scale[0]},{scale[1]}"
    folder = labelled_folder(tmp_path / "data", [(54, 96), (64, 128)], seed=50)
    args = {"inference": HRDA_SMALL} if model == "hrda" else {}
    for index in range(2):
        image = np.array(Image.open(folder / "images" / f"{index}.png"))
        want = reference_logits(model, state, image, scale, **args)
        assert not torch.equal(want.argmax(1), reference_logits(model, state, image, imported, **args).argmax(1))
        from layerseg_merge.eval.inference import Segmenter
        from layerseg_merge.eval.options import InferenceOptions

        segmenter = Segmenter(out, InferenceOptions("cpu", test_scale=scale))
        with torch.no_grad():
            got = segmenter.logits(torch.from_numpy(image).permute(2, 0, 1)[None], [image.shape[:2]])
        assert_same_prediction(got, want)
    result = run("eval", out, "--data", f"folder:{folder}", "--device", "cpu", "--workers", "0", "--test-scale",
                 text, "--out", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert f"--test-scale {text}: the test img_scale replaces the imported model's" in result.output
    pipeline = json.loads((tmp_path / "r.json").read_text())["provenance"]["pipeline"]
    assert pipeline["test_scale"] == list(scale) and pipeline["mmseg"]["test_pipeline"]["img_scale"] == list(scale)
    assert f"img_scale from --test-scale (was {list(imported)})" in pipeline["mmseg"]["test_pipeline"]["source"]
    settings = json.loads((out / "config.json").read_text())["layerseg_mmseg"]
    assert settings["test_pipeline"]["img_scale"] == list(imported)  # the model is not changed


def test_test_scale_results_on_the_card_are_apart(daformer, tmp_path):
    import shutil

    import yaml

    out = shutil.copytree(daformer[0], tmp_path / "model")
    folder = labelled_folder(tmp_path / "data", [(54, 96)], seed=60)
    for extra in ([], ["--test-scale", "48,24"]):
        result = run("eval", out, "--data", f"folder:{folder}", "--device", "cpu", "--workers", "0", "--card", *extra)
        assert result.exit_code == 0, result.output
    card = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    datasets = {r["dataset"]["name"]: (r["dataset"].get("config"), r["dataset"].get("args"), len(r["metrics"]))
                for r in card["model-index"][0]["results"]}
    scaled = ("test-scale-48x24", {"images": 1, "test_scale": [48, 24]}, 3)
    assert datasets == {"data (1 image)": (None, {"images": 1}, 3), "data, test scale 48x24 (1 image)": scaled}


def test_test_scale_is_refused_where_it_means_nothing(tmp_path):
    from helpers import save_model, tiny_segformer_config
    from transformers import SegformerForSemanticSegmentation

    folder = labelled_folder(tmp_path / "data", [(32, 32)], seed=70)
    model = save_model(SegformerForSemanticSegmentation, tiny_segformer_config(num_labels=19), tmp_path / "sf", 0)
    assert_one_line_error(run("eval", model, "--data", f"folder:{folder}", "--device", "cpu", "--test-scale",
                              "48,24"), "--test-scale sets the mmseg test pipeline of imported DAFormer/HRDA/MIC",
                          "drop --test-scale")
    for value, message in (("0,5", "--test-scale 0,5: each side must be a whole number of pixels from 1 to 16384"),
                           ("48", "--test-scale 48: use W,H, e.g. 1024,512")):
        result = run("eval", model, "--data", f"folder:{folder}", "--test-scale", value)
        assert_one_line_error(result, message)


def test_daformer_slide_from_its_config(tmp_path):
    checkpoint, data = small_checkpoint(tmp_path, "daformer", seed=8)
    config = {"model": {"test_cfg": {"mode": "slide", "crop_size": [32, 32], "stride": [24, 24]}},
              "test_pipeline": [{"type": "MultiScaleFlipAug", "img_scale": [64, 32], "transforms": [
                  {"type": "Resize", "keep_ratio": True}]}]}
    (tmp_path / "c.json").write_text(json.dumps(config))
    out, _ = import_(checkpoint, tmp_path / "model", "--config", tmp_path / "c.json")
    assert json.loads((out / "config.json").read_text())["layerseg_mmseg"]["inference"] == {"crop": 32, "stride": 24}
    image, state = textured(54, 96, seed=2), student(data)
    pixels = reference_inputs(image, (64, 32))  # 32 x 57: windows at x = 0, 24, 25
    total, count = torch.zeros(1, 19, 32, 57), torch.zeros(1, 1, 32, 57)
    with torch.no_grad():
        for x in (0, 24, 25):
            window = pixels[:, :, :, x:x + 32]
            logits = daformer_head_forward(state, mit_forward(state, window))
            total[..., x:x + 32] += F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
            count[..., x:x + 32] += 1
    want = F.interpolate(total / count, size=(54, 96), mode="bilinear", align_corners=False)
    assert_same_prediction(segmenter_logits(out, image), want)


# ------------------------------------------------------------------------------------------ settings


@pytest.mark.parametrize("kind,scale", [("daformer", [1024, 512]), ("hrda", [2048, 1024])])
def test_import_stores_the_released_settings(tmp_path, kind, scale):
    checkpoint, _ = small_checkpoint(tmp_path, kind, container="published")
    out, output = import_(checkpoint, tmp_path / "model")
    settings = json.loads((out / "config.json").read_text())["layerseg_mmseg"]
    assert settings["test_pipeline"] == {"img_scale": scale, "keep_ratio": True, "resize": "cv2_bilinear",
                                         "mean": list(MEAN), "std": list(STD),
                                         "source": "released GTA->Cityscapes config"}
    if kind == "hrda":
        assert settings["inference"] == {"lr_scale": 0.5, "hr_crop": 512, "hr_stride": 256, "crop": 1024,
                                         "stride": 512}
    assert f"img_scale {tuple(scale)}" in output


def test_import_reads_the_test_scale_of_the_meta_config(tmp_path):
    data = daformer_checkpoint("daformer", variant=SMALL, sizes=TINY_HEADS)
    data["meta"]["config"] = (  # Config.pretty_text of DAFormer's ACDC config, abridged
        "norm_cfg = dict(type='BN', requires_grad=True)\n"
        "model = dict(type='EncoderDecoder', test_cfg=dict(mode='whole'))\n"
        "data = dict(\n    samples_per_gpu=2,\n    test=dict(\n        type='ACDCDataset',\n        pipeline=[\n"
        "            dict(type='LoadImageFromFile'),\n            dict(\n                type='MultiScaleFlipAug',\n"
        "                img_scale=(960, 540),\n                flip=False,\n                transforms=[\n"
        "                    dict(type='Resize', keep_ratio=True),\n                    dict(type='RandomFlip'),\n"
        "                    dict(type='Normalize', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],"
        " to_rgb=True)\n                ])\n        ]))\n")
    checkpoint = save_checkpoint(data, tmp_path / "acdc.pth")
    out, output = import_(checkpoint, tmp_path / "model")
    settings = json.loads((out / "config.json").read_text())["layerseg_mmseg"]
    assert settings["test_pipeline"]["img_scale"] == [960, 540] and "inference" not in settings
    assert settings["test_pipeline"]["source"] == "the checkpoint's meta config"
    out2, _ = import_(checkpoint, tmp_path / "model2", "--test-scale", "64,32")
    assert json.loads((out2 / "config.json").read_text())["layerseg_mmseg"]["test_pipeline"]["img_scale"] == [64, 32]


def test_directories_imported_before_get_the_released_pipeline(daformer, tmp_path):
    import shutil

    from layerseg_merge.eval.inference import Segmenter
    from layerseg_merge.eval.options import InferenceOptions

    old = tmp_path / "old"
    shutil.copytree(daformer[0], old)
    config = json.loads((old / "config.json").read_text())
    del config["layerseg_mmseg"]["test_pipeline"]
    (old / "config.json").write_text(json.dumps(config))
    pipeline = Segmenter(old, InferenceOptions("cpu")).mmseg_pipeline
    assert pipeline["img_scale"] == [1024, 512] and pipeline["keep_ratio"] and "imported before" in pipeline["source"]


@pytest.mark.parametrize("model,change,message", [
    ("daformer", lambda s: s["test_pipeline"].update(flip=True), "unknown key 'flip' in layerseg_mmseg.test_pipeline"),
    ("daformer", lambda s: s["test_pipeline"].update(img_scale=[0, 5]),
     "layerseg_mmseg.test_pipeline.img_scale [0, 5]: each side must be a whole number of pixels from 1 to 16384"),
    ("daformer", lambda s: s["test_pipeline"].update(resize="pillow"), "resize 'pillow' is not supported"),
    ("daformer", lambda s: s["test_pipeline"].update(keep_ratio="yes"), "keep_ratio must be true or false"),
    ("daformer", lambda s: s["test_pipeline"].update(std=[1, 0, 1]), "std must be 3 finite numbers above 0"),
    ("daformer", lambda s: s.update(test_pipeline=[1024, 512]), "layerseg_mmseg.test_pipeline must be an object"),
    ("daformer", lambda s: s.update(inference={"crop": 32}), "of a daformer model needs exactly crop, stride"),
    ("daformer", lambda s: s.update(inference={"crop": 0, "stride": 8}), "inference.crop must be a positive integer"),
    ("hrda", lambda s: s.pop("inference"), "an HRDA/MIC model needs layerseg_mmseg.inference"),
    ("hrda", lambda s: s["inference"].update(lr_scale=2), "inference.lr_scale must be in (0, 1)"),
])
def test_bad_pipeline_settings_are_named(request, tmp_path, model, change, message):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(request.getfixturevalue(model)[0], bad)
    config = json.loads((bad / "config.json").read_text())
    change(config["layerseg_mmseg"])
    (bad / "config.json").write_text(json.dumps(config))
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    Image.fromarray(textured(8, 8, 0)).save(folder / "images" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "labels" / "a.png")
    result = run("eval", bad, "--data", f"folder:{folder}", "--device", "cpu", "--workers", "0")
    assert_one_line_error(result, str(bad / "config.json"), message)


def test_processor_preprocessing_is_refused_for_imported_models(daformer, tmp_path):
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    Image.fromarray(textured(8, 8, 0)).save(folder / "images" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "labels" / "a.png")
    result = run("eval", daformer[0], "--data", f"folder:{folder}", "--device", "cpu", "--preprocess", "processor")
    assert_one_line_error(result, "runs its mmseg test pipeline", "drop --preprocess processor")


@pytest.mark.parametrize("config,options,message", [
    ({"_base_": ["../_base_/x.py"]}, (), "inherits from _base_ files"),
    ("not json, not python (", (), "neither JSON nor a Python config"),
    ({"model": {"test_cfg": {"mode": "slide", "crop_size": [64, 32], "stride": [32, 32]}}}, (),
     "test_cfg.crop_size [64, 32] is not a square size"),
    ({"model": {"test_cfg": {"mode": "whole"}}}, (), "an HRDA test_cfg must slide"),
    ({"model": {"test_cfg": {"mode": "aug"}}}, (), "test_cfg mode 'aug' is not whole or slide"),
    ({"model": {"scales": [1, 0.5, 0.25], "test_cfg": {"mode": "slide", "crop_size": 64, "stride": 32}}}, (),
     "HRDA scales [0.25, 0.5, 1]: layerseg runs two scales"),
    ({"model": {"hr_slide_inference": False, "test_cfg": {"mode": "slide", "crop_size": 64, "stride": 32}}}, (),
     "hr_slide_inference=False is not supported"),
    ({"test_pipeline": [{"type": "MultiScaleFlipAug", "img_scale": [[64, 32], [128, 64]]}]}, (),
     "is not one (w, h) scale; multi-scale testing is not reproduced"),
    ({"test_pipeline": [{"type": "MultiScaleFlipAug", "img_scale": [64, 32], "transforms": [
        {"type": "Normalize", "mean": [0, 0, 0], "std": [1, 1, 1], "to_rgb": False}]}]}, (),
     "Normalize has to_rgb=False"),
    ([1, 2], (), "not a config (expected an object)"),
    (None, ("--test-scale", "0,5"), "--test-scale 0,5: each side must be a whole number of pixels from 1 to 16384"),
    (None, ("--test-scale", "64"), "--test-scale 64: use W,H"),
])
def test_bad_test_settings_at_import_are_named(tmp_path, config, options, message):
    checkpoint, _ = small_checkpoint(tmp_path, "hrda", container="published")
    if config is not None:
        path = tmp_path / "config.json"
        path.write_text(config if isinstance(config, str) else json.dumps(config))
        options = ("--config", path, *options)
    result = run("import", "mmseg", checkpoint, tmp_path / "model", *options)
    assert_one_line_error(result, message)
    assert not (tmp_path / "model").exists()


def test_test_settings_are_for_daformer_and_hrda_only(tmp_path):
    checkpoint, _ = small_checkpoint(tmp_path, "segformer", container="published")
    result = run("import", "mmseg", checkpoint, tmp_path / "model", "--test-scale", "64,32")
    assert_one_line_error(result, "--config and --test-scale set the test pipeline of DAFormer and HRDA/MIC models; "
                                  "this is mmseg SegFormer")
    hrda_checkpoint, _ = small_checkpoint(tmp_path, "hrda", container="published")
    result = run("import", "mmseg", hrda_checkpoint, tmp_path / "model", "--config", tmp_path / "missing.json")
    assert_one_line_error(result, "missing.json: cannot read the config")


def test_eval_on_acdc_with_synthias_16_classes(daformer, tmp_path):
    rng = np.random.default_rng(5)
    for index in range(2):
        sequence = tmp_path / "acdc" / "{}" / "night" / "val" / "GOPR0351"
        stem = f"GOPR0351_frame_00000{index}"
        for folder, name, array in (("rgb_anon", f"{stem}_rgb_anon.png", textured(54, 96, seed=index)),
                                    ("gt", f"{stem}_gt_labelTrainIds.png", rng.integers(0, 19, (54, 96), np.uint8))):
            path = Path(str(sequence).format(folder)) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    reports = {}
    for classes in ("19", "16"):
        result = run("eval", daformer[0], "--data", f"acdc:{tmp_path / 'acdc'},night", "--device", "cpu",
                     "--workers", "0", "--classes", classes, "--out", tmp_path / f"{classes}.json")
        assert result.exit_code == 0, result.output
        reports[classes] = json.loads((tmp_path / f"{classes}.json").read_text())
    kept = [r["IoU"] for name, r in reports["19"]["per_class"].items() if name not in ("terrain", "truck", "train")]
    assert reports["16"]["mIoU"] == pytest.approx(np.mean([v for v in kept if v is not None]), abs=1e-12)
    assert reports["16"]["aAcc"] == reports["19"]["aAcc"] and len(reports["16"]["per_class"]) == 16
