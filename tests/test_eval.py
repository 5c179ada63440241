"""`layerseg eval`, `score` and `compare` end to end on tiny models and generated data."""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from eval_data import CATEGORIES, coco_panoptic, id_to_rgb, semantic_folder
from PIL import Image

from layerseg_merge.cli import main
from layerseg_merge.eval.metrics import PanopticMetric, Segment


def confusion_miou(pairs, classes, ignore=255):
    """An independent numpy mIoU (mmsegmentation semantics)."""
    inter, area_pred, area_label = (np.zeros(classes) for _ in range(3))
    for pred, label in pairs:
        keep = label != ignore
        pred, label = pred[keep], label[keep]
        for c in range(classes):
            inter[c] += ((pred == c) & (label == c)).sum()
            area_pred[c] += (pred == c).sum()
            area_label[c] += (label == c).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (area_pred + area_label - inter)
    return float(np.nanmean(iou)), iou


@pytest.fixture(scope="module")
def segformer_dir(tmp_path_factory):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    path = tmp_path_factory.mktemp("segformer")
    torch.manual_seed(0)
    config = SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 2, 2],
                             decoder_hidden_size=16, num_labels=5)
    SegformerForSemanticSegmentation(config).save_pretrained(path)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(path)
    return path


def test_semantic_eval_equals_direct_computation(tmp_path, segformer_dir):
    from transformers import AutoImageProcessor, SegformerForSemanticSegmentation

    data = semantic_folder(tmp_path / "data")
    out = tmp_path / "report.json"
    # The processor path on the CPU: the same preprocessing and device as the direct computation below.
    result = CliRunner().invoke(main, ["eval", str(segformer_dir), "--data", f"folder:{data}", "--batch-size", "2",
                                       "--preprocess", "processor", "--device", "cpu",
                                       "--workers", "0", "--out", str(out), "--plot", str(tmp_path / "bars.png")])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    model = SegformerForSemanticSegmentation.from_pretrained(segformer_dir).eval()
    processor = AutoImageProcessor.from_pretrained(segformer_dir)
    pairs = []
    for image_path in sorted((data / "images").rglob("*.png")):
        image = np.asarray(Image.open(image_path).convert("RGB"))
        label = np.asarray(Image.open(data / "labels" / image_path.relative_to(data / "images")))
        with torch.no_grad():
            logits = model(**processor(images=[image], return_tensors="pt")).logits
        pred = F.interpolate(logits, size=label.shape, mode="bilinear", align_corners=False)[0].argmax(0)
        pairs.append((pred.numpy(), label))
    miou, iou = confusion_miou(pairs, 5)
    assert report["mIoU"] == pytest.approx(miou, abs=1e-9)
    assert set(report) == {"mIoU", "aAcc", "mAcc", "per_class", "provenance"}
    assert "| mIoU | aAcc | mAcc |" in result.output
    assert Image.open(tmp_path / "bars.png").size[0] == 720


def test_sliding_window_eval_runs(tmp_path, segformer_dir):
    data = semantic_folder(tmp_path / "data", count=2, size=(80, 64))
    result = CliRunner().invoke(main, ["eval", str(segformer_dir), "--data", f"folder:{data}", "--slide", "32,24",
                                       "--workers", "0", "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads((tmp_path / "r.json").read_text())["aAcc"] <= 1


@pytest.fixture(scope="module")
def mask2former_dir(tmp_path_factory):
    from hosts import panoptic_mask2former

    return panoptic_mask2former(tmp_path_factory.mktemp("mask2former"), CATEGORIES, {"height": 64, "width": 64})


def test_panoptic_eval_equals_direct_computation(tmp_path, mask2former_dir):
    from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation

    images, gt_json, pngs = coco_panoptic(tmp_path / "data")
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["eval", str(mask2former_dir), "--task", "panoptic", "--workers", "0",
                                       "--preprocess", "processor", "--device", "cpu",
                                       "--data", f"coco-panoptic:{images},{gt_json},{pngs}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    model = Mask2FormerForUniversalSegmentation.from_pretrained(mask2former_dir).eval()
    processor = AutoImageProcessor.from_pretrained(mask2former_dir)
    metric = PanopticMetric({c["id"]: bool(c["isthing"]) for c in CATEGORIES})
    gt = json.loads(gt_json.read_text())
    for annotation in gt["annotations"]:
        image = np.asarray(Image.open(images / annotation["file_name"].replace(".png", ".jpg")).convert("RGB"))
        with torch.no_grad():
            outputs = model(**processor(images=[image], return_tensors="pt"))
        (res,) = processor.post_process_panoptic_segmentation(outputs, target_sizes=[image.shape[:2]],
                                                              label_ids_to_fuse={0, 1})
        ids = torch.zeros(image.shape[:2], dtype=torch.int64)
        segments = []
        for k, info in enumerate(res["segments_info"], start=1):
            mask = res["segmentation"] == info["id"]
            if mask.any():
                ids[mask] = k
                segments.append(Segment(k, CATEGORIES[info["label_id"]]["id"]))
        rgb = np.asarray(Image.open(pngs / annotation["file_name"]).convert("RGB")).astype(np.int64)
        gt_ids = torch.from_numpy(rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2])
        metric.update(ids, segments, gt_ids, [Segment(s["id"], s["category_id"], bool(s["iscrowd"]))
                                              for s in annotation["segments_info"]])
    direct = metric.compute()
    assert report["All"] == direct["All"] and report["Things"] == direct["Things"]
    assert set(report) == {"All", "Things", "Stuff", "per_class", "provenance"}


def test_score_panoptic_of_ground_truth_against_itself_is_perfect(tmp_path):
    images, gt_json, pngs = coco_panoptic(tmp_path / "data")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["score", "panoptic", "--gt-json", str(gt_json), "--gt-folder", str(pngs),
                                       "--pred-json", str(gt_json), "--pred-folder", str(pngs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["All"]["pq"] == 1.0 and report["Things"]["n"] == 2 and report["Stuff"]["n"] == 2


def test_score_semantic_pairs_by_relative_path_and_names_bad_files(tmp_path):
    data = semantic_folder(tmp_path / "data", classes=3)
    preds = tmp_path / "preds"
    shutil.copytree(data / "labels", preds)
    bad = next(preds.rglob("*.png"))
    label = np.asarray(Image.open(bad)).copy()
    label[label == 1] = 0  # class-1 pixels predicted as 0
    Image.fromarray(label).save(bad)
    result = CliRunner().invoke(main, ["score", "semantic", "--gt", str(data / "labels"), "--pred", str(preds),
                                       "--num-classes", "3", "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["per_class"]["0"]["IoU"] < 1
    label[0, 0] = 9
    Image.fromarray(label).save(bad)
    result = CliRunner().invoke(main, ["score", "semantic", "--gt", str(data / "labels"), "--pred", str(preds),
                                       "--num-classes", "3"])
    assert result.exit_code != 0 and "prediction value 9 is outside [0, 2]" in result.output
    assert bad.name in result.output


def test_compare_prints_side_by_side(tmp_path):
    for name, value in (("single", 0.4), ("merged", 0.5)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"mIoU": value, "aAcc": 0.9, "mAcc": 0.6,
                                                           "per_class": {}}))
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "single.json"), str(tmp_path / "merged.json")])
    assert result.exit_code == 0 and "| merged | 50.00 | 90.00 | 60.00 |" in result.output


@pytest.mark.parametrize("spec,message", [
    ("folder:/nonexistent", "/nonexistent/images: missing"),
    ("voc:/x", "unknown dataset kind 'voc'"),
])
def test_bad_dataset_specs(tmp_path, segformer_dir, spec, message):
    result = CliRunner().invoke(main, ["eval", str(segformer_dir), "--data", spec])
    assert result.exit_code != 0 and message in result.output


def test_missing_label_and_unreadable_image_are_named(tmp_path, segformer_dir):
    data = semantic_folder(tmp_path / "data", count=2)
    victim = next((data / "labels").rglob("*.png"))
    victim.unlink()
    result = CliRunner().invoke(main, ["eval", str(segformer_dir), "--data", f"folder:{data}", "--workers", "0"])
    assert result.exit_code != 0 and "no label file" in result.output
    data = semantic_folder(tmp_path / "data2", count=2)
    next((data / "images").rglob("*.png")).write_bytes(b"not a png")
    result = CliRunner().invoke(main, ["eval", str(segformer_dir), "--data", f"folder:{data}", "--workers", "0"])
    assert result.exit_code != 0 and "cannot read image" in result.output


def test_id_to_rgb_roundtrip():
    ids = np.array([[0, 1, 256, 65536 + 7]])
    rgb = id_to_rgb(ids).astype(np.int64)
    assert (rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2] == ids).all()


def test_model_errors_are_named(tmp_path, segformer_dir):
    bare = tmp_path / "bare"
    shutil.copytree(segformer_dir, bare)
    (bare / "preprocessor_config.json").unlink()
    data = semantic_folder(tmp_path / "data", count=1)
    result = CliRunner().invoke(main, ["eval", str(bare), "--data", f"folder:{data}", "--workers", "0"])
    assert result.exit_code != 0 and "no preprocessor_config.json" in result.output
    images, gt_json, pngs = coco_panoptic(tmp_path / "pan", count=1)
    result = CliRunner().invoke(main, ["eval", str(segformer_dir), "--task", "panoptic", "--workers", "0",
                                       "--data", f"coco-panoptic:{images},{gt_json},{pngs}"])
    assert result.exit_code != 0 and "panoptic evaluation needs a universal segmentation model" in result.output
    result = CliRunner().invoke(main, ["eval", str(segformer_dir), "--data", f"folder:{data}", "--slide", "64"])
    assert result.exit_code != 0 and "use CROP,STRIDE" in result.output


def test_compare_refuses_to_mix_semantic_and_panoptic(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"mIoU": 0.5, "aAcc": 0.9, "mAcc": 0.6, "per_class": {}}))
    split = {"pq": 0.5, "sq": 0.7, "rq": 0.6, "n": 1}
    (tmp_path / "b.json").write_text(json.dumps({"All": split, "Things": split, "Stuff": split, "per_class": {}}))
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert result.exit_code != 0 and "mixing semantic and panoptic reports" in result.output
