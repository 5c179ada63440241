"""Train the miniature UDA models (CPU, minutes; see README.md, *Time*): one source pretraining, then fine-tunes.

    python examples/miniature_uda/train.py --out layerseg_merge/assets/miniature_uda --seed 0

Models (tiny SegFormers, ~0.28 M parameters, all fine-tuned from one pretraining):
  source_only    more supervised steps on source
  dr             photometric domain randomisation on source
  dacs           DACS: mean teacher + ClassMix self-training on target (warm-started from dr)
  mic            DACS + masked image consistency (MIC-style), with a wider decode head
  dacs_source2   DACS from the second synthetic source (source2), warm-started from dr
  panoptic       semantic + center/offset heads (Panoptic-DeepLab style) on the same backbone
Also writes the labelled target test split (semantic folder + COCO panoptic).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

try:
    from . import scenes
except ImportError:  # run as a script
    import scenes

MEAN, STD = 127.5, 63.75
OFFSET_SCALE = 10.0
STEPS = {"pretrain": 500, "source_only": 250, "dr": 250, "dacs": 300, "mic": 300, "dacs_source2": 300,
         "panoptic": 300}


def backbone_config(num_labels: int = 6, decoder_hidden_size: int = 64) -> SegformerConfig:
    return SegformerConfig(
        depths=[1, 1, 2, 1], hidden_sizes=[16, 32, 64, 96], num_attention_heads=[1, 1, 2, 2],
        sr_ratios=[4, 2, 1, 1], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
        decoder_hidden_size=decoder_hidden_size, num_labels=num_labels,
        id2label=dict(enumerate(scenes.CLASSES + ("center", "offset_y", "offset_x")[: num_labels - 6])),
    )


def processor() -> SegformerImageProcessor:
    return SegformerImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.25] * 3)


class Pool:
    """Pre-rendered scenes of one domain, sampled by a seeded generator."""

    def __init__(self, domain: str, count: int, offset: int):
        images, semantic, instances = scenes.make_batch(range(offset, offset + count), domain)
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        self.semantic = torch.from_numpy(semantic).long()
        self.instances = torch.from_numpy(instances).long()

    def sample(self, generator: torch.Generator, batch: int):
        index = torch.randint(len(self.images), (batch,), generator=generator)
        return self.images[index], self.semantic[index], self.instances[index]


def normalise(images: torch.Tensor) -> torch.Tensor:
    return (images - MEAN) / STD


def photometric(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Domain randomisation: light, colour cast, contrast, smooth texture, blur, noise."""
    b = images.shape[0]

    def u(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    x = images * u(0.4, 1.3, b, 1, 1, 1) * u(0.75, 1.25, b, 3, 1, 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * u(0.6, 1.4, b, 1, 1, 1) + mean
    for cells in (4, 16):
        field = F.interpolate(torch.rand(b, 1, cells, cells, generator=g), size=images.shape[-2:], mode="bilinear")
        x = x * (1 + u(0, 0.6, b, 1, 1, 1) * (field - 0.5) * 2)
    blur = (torch.rand(b, 1, 1, 1, generator=g) < 0.5).float()
    x = blur * F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) + (1 - blur) * x
    x = x + torch.randn(x.shape, generator=g) * u(0, 12, b, 1, 1, 1)
    return x.clamp(0, 255)


def logits_at(model, images: torch.Tensor) -> torch.Tensor:
    logits = model(pixel_values=normalise(images)).logits
    return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def ema(teacher, student, alpha: float = 0.99) -> None:
    with torch.no_grad():
        for t, s in zip(teacher.parameters(), student.parameters()):
            t.mul_(alpha).add_(s, alpha=1 - alpha)


def class_mix(source, labels, target, pseudo, weight, g):
    """ClassMix: paste half of each source image's classes onto a target image."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    for i in range(len(labels)):
        classes = labels[i].unique()
        chosen = classes[torch.randperm(len(classes), generator=g)[: max(1, len(classes) // 2)]]
        mask[i] = torch.isin(labels[i], chosen)
    m = mask[:, None].float()
    images = m * source + (1 - m) * target
    mixed = torch.where(mask, labels, pseudo)
    weights = torch.where(mask, torch.ones_like(weight), weight)
    return images, mixed, weights


def patch_mask(images: torch.Tensor, g: torch.Generator, patch: int = 8, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = images.shape
    keep = (torch.rand(b, 1, h // patch, w // patch, generator=g) > ratio).float()
    keep = keep.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    return images * keep + MEAN * (1 - keep)


def train_supervised(model, pool, steps, g, augment=False, batch=16, lr=1e-3):
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(steps):
        images, labels, _ = pool.sample(g, batch)
        if augment:
            images = photometric(images, g)
        loss = F.cross_entropy(logits_at(model, images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return model


def train_dacs(model, source, target, steps, g, mic=False, batch=8, lr=1e-4, threshold=0.8):
    """DACS (mean teacher + ClassMix); with ``mic`` also a masked-image consistency loss."""
    teacher = copy.deepcopy(model).eval()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    for _ in range(steps):
        src, labels, _ = source.sample(g, batch)
        tgt, _, _ = target.sample(g, batch)
        src = photometric(src, g)
        with torch.no_grad():
            probs = logits_at(teacher, tgt).softmax(1)
        confidence, pseudo = probs.max(1)
        weight = (confidence > threshold).float().mean((1, 2), keepdim=True).expand_as(confidence)
        mixed, mixed_labels, mixed_weight = class_mix(src, labels, tgt, pseudo, weight, g)
        mixed = photometric(mixed, g)
        loss = F.cross_entropy(logits_at(model, src), labels)
        loss = loss + (F.cross_entropy(logits_at(model, mixed), mixed_labels, reduction="none") * mixed_weight).mean()
        if mic:
            masked = logits_at(model, patch_mask(tgt, g))
            loss = loss + (F.cross_entropy(masked, pseudo, reduction="none") * weight).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        ema(teacher, model)
    return model


def panoptic_targets(semantic: torch.Tensor, instances: torch.Tensor):
    """Center heatmaps (Gaussian, sigma 2) and offsets to the instance center (thing pixels)."""
    b, h, w = semantic.shape
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    center = torch.zeros(b, h, w)
    offset = torch.zeros(b, 2, h, w)
    for i in range(b):
        for k in instances[i].unique():
            if k == 0:
                continue
            mask = instances[i] == k
            cy, cx = yy[mask].mean(), xx[mask].mean()
            center[i] = torch.maximum(center[i], torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8))
            offset[i, 0][mask] = (cy - yy[mask]) / OFFSET_SCALE
            offset[i, 1][mask] = (cx - xx[mask]) / OFFSET_SCALE
    return center, offset


def train_panoptic(model, pool, steps, g, batch=16, lr=1e-3):
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(steps):
        images, semantic, instances = pool.sample(g, batch)
        center, offset = panoptic_targets(semantic, instances)
        out = logits_at(model, photometric(images, g))
        things = (instances > 0)[:, None].float()
        loss = (F.cross_entropy(out[:, :6], semantic) + 20 * F.mse_loss(out[:, 6], center)
                + (F.l1_loss(out[:, 7:9], offset, reduction="none") * things).sum() / things.sum().clamp(min=1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return model


def target_miou(model, images, labels) -> float:
    from layerseg_merge.eval.metrics import SemanticMetric

    model.eval()
    metric = SemanticMetric(6)
    with torch.no_grad():
        metric.update(logits_at(model, images)[:, :6].argmax(1), labels)
    model.train()
    return metric.compute()["mIoU"]


def save(model, path: Path, panoptic: bool = False) -> None:
    if panoptic:
        model.config.panoptic_head = {"type": "center_offset", "num_classes": 6, "thing_ids": list(scenes.THINGS),
                                      "offset_scale": OFFSET_SCALE}
    model.eval().save_pretrained(path)
    processor().save_pretrained(path)


VAL_OFFSET = 700_000  # the target validation split: the same for every seed, disjoint from test and training
TEST_OFFSET = 900_000  # the target test split: the same for every seed


def write_test_split(root: Path, count: int, offset: int) -> None:
    """Target images (a test or validation split): semantic folder layout and COCO panoptic (id = class + 1)."""
    images_dir, labels_dir, pan_dir = root / "images", root / "labels", root / "panoptic"
    for folder in (images_dir, labels_dir, pan_dir):
        folder.mkdir(parents=True, exist_ok=True)
    annotations, infos = [], []
    for k in range(count):
        scene = scenes.make_scene(offset + k, "target")
        name = f"target_{k:03d}"
        Image.fromarray(scene.image).save(images_dir / f"{name}.png")
        Image.fromarray(scene.semantic).save(labels_dir / f"{name}.png")
        ids = np.where(np.isin(scene.semantic, scenes.THINGS), 1000 * (scene.semantic.astype(np.int64) + 1)
                       + scene.instances, scene.semantic.astype(np.int64) + 1)
        segments = [{"id": int(i), "category_id": int(i // 1000 if i >= 1000 else i), "iscrowd": 0,
                     "area": int((ids == i).sum())} for i in np.unique(ids)]
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        Image.fromarray(rgb).save(pan_dir / f"{name}.png")
        infos.append({"id": k, "file_name": f"{name}.png", "width": 64, "height": 64})
        annotations.append({"image_id": k, "file_name": f"{name}.png", "segments_info": segments})
    categories = [{"id": i + 1, "name": n, "isthing": int(i in scenes.THINGS)} for i, n in enumerate(scenes.CLASSES)]
    (root / "panoptic.json").write_text(json.dumps({"images": infos, "annotations": annotations,
                                                    "categories": categories}))
    (root / "classes.txt").write_text("\n".join(scenes.CLASSES) + "\n")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="train the miniature UDA models")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-images", type=int, default=48)
    parser.add_argument("--val-images", type=int, default=48, help="target validation split (for layerseg sweep)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count (tests use less)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads; the shipped models were trained with 2 and other counts give (equally "
                        "trained) different weights; 1 is about 10x faster on a machine busy with other work")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    steps = {k: max(1, int(v * args.scale)) for k, v in STEPS.items()}
    base = 100_000 * args.seed
    started = time.perf_counter()
    pool = max(32, int(1500 * min(args.scale, 1.0)))
    source, source2 = Pool("source", pool, base), Pool("source2", pool, base + 20_000)
    target = Pool("target", pool * 2 // 3, base + 40_000)
    test = Pool("target", args.test_images, TEST_OFFSET)
    models = args.out / "models"
    log = {}

    def report(name, model):
        log[name] = target_miou(model, test.images, test.semantic)
        print(f"{name:14s} target mIoU {100 * log[name]:5.1f}  ({time.perf_counter() - started:5.0f} s)", flush=True)

    pretrained = train_supervised(SegformerForSemanticSegmentation(backbone_config()), source, steps["pretrain"], g)
    report("pretrain", pretrained)
    for name, augment in (("source_only", False), ("dr", True)):
        model = train_supervised(copy.deepcopy(pretrained), source, steps[name], g, augment=augment)
        save(model, models / name)
        report(name, model)
    dr = SegformerForSemanticSegmentation.from_pretrained(models / "dr")
    dacs = train_dacs(copy.deepcopy(dr), source, target, steps["dacs"], g)
    save(dacs, models / "dacs")
    report("dacs", dacs)
    wide = SegformerForSemanticSegmentation(backbone_config(decoder_hidden_size=96))
    wide.segformer.load_state_dict(dr.segformer.state_dict())
    wide = train_supervised(wide, source, steps["dr"], g, augment=True)  # fit the new head
    mic = train_dacs(wide, source, target, steps["mic"], g, mic=True)
    save(mic, models / "mic")
    report("mic", mic)
    dacs2 = train_dacs(copy.deepcopy(dr), source2, target, steps["dacs_source2"], g)
    save(dacs2, models / "dacs_source2")
    report("dacs_source2", dacs2)
    panoptic = SegformerForSemanticSegmentation(backbone_config(num_labels=9))
    panoptic.segformer.load_state_dict(dr.segformer.state_dict())
    panoptic = train_panoptic(panoptic, source, steps["panoptic"], g)
    save(panoptic, models / "panoptic", panoptic=True)
    report("panoptic", panoptic)
    write_test_split(args.out / "target_test", args.test_images, TEST_OFFSET)
    write_test_split(args.out / "target_val", args.val_images, VAL_OFFSET)
    (args.out / "train_log.json").write_text(json.dumps({"seed": args.seed, "steps": steps,
                                                         "target_mIoU": log}, indent=2))
    return log


if __name__ == "__main__":
    main()
