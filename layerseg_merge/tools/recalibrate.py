"""Re-estimate BatchNorm running statistics on unlabelled target images (AdaBN-style recalibration).

Every BatchNorm layer's statistics are reset and re-estimated as PyTorch's cumulative
average (``momentum=None``): the running mean is the mean of the batches' means, the
running variance the mean of the batches' unbiased variances, ``num_batches_tracked``
the number of batches. The rest of the model is in eval mode and no gradient flows; every
other tensor of the checkpoint is written back bit-identical.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

BN_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class Recalibrated:
    layers: int
    images: int
    batches: int


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _statistics(segmenter, model_dir: Path, workdir: Path) -> dict[str, torch.Tensor]:
    """The model's BatchNorm buffers under the checkpoint's own (file) names."""
    from safetensors.torch import load_file

    model = segmenter.model
    if hasattr(model, "save_pretrained"):  # transformers writes its on-disk names (legacy ones included)
        model.save_pretrained(workdir)
        saved: dict[str, torch.Tensor] = {}
        for path in sorted(workdir.glob("*.safetensors")):
            saved.update(load_file(path))
        return {k: v for k, v in saved.items() if k.endswith(BN_SUFFIXES)}
    head = model.decode_head.state_dict()  # an imported mmseg model: module names are the file names
    return {f"decode_head.{k}": v.detach().cpu() for k, v in head.items() if k.endswith(BN_SUFFIXES)}


def estimate(segmenter, data: str, split: str = "val", images: int | None = None, batch_size: int = 8,
             workers: int = 2, progress: bool = True) -> Recalibrated | None:
    """Recalibrate ``segmenter.model`` in place on up to ``images`` images of ``data``; None without BatchNorm."""
    from tqdm import tqdm

    from layerseg_merge.eval.datasets import open_dataset
    from layerseg_merge.eval.evaluate import _first, device_batches

    layers = batchnorm_layers(segmenter.model)
    if not layers:
        return None
    dataset = open_dataset(data, split, "images")
    if images is not None:
        dataset = _first(dataset, images)
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches seen
    segmenter.model.eval()
    for layer in layers:
        layer.train()
    seen = batches = 0
    keys = ("images",) if segmenter.fast else ()
    with torch.no_grad(), tqdm(total=len(dataset), desc="recalibrate", unit="img", disable=not progress) as bar:
        for batch in device_batches(dataset, segmenter.device, batch_size, workers, keys):
            segmenter.model(**segmenter.inputs(batch["images"]))
            seen += len(batch["names"])
            batches += 1
            bar.update(len(batch["names"]))
    segmenter.model.eval()
    return Recalibrated(len(layers), seen, batches)


def write_recalibrated(segmenter, model_dir: Path, out: Path, workdir: Path) -> None:
    """``out`` = ``model_dir``'s files, with the BatchNorm statistics of ``segmenter.model``."""
    import shutil

    from safetensors.torch import save_file

    from layerseg_merge.checkpoint import load_tensors, weight_files

    statistics = _statistics(segmenter, model_dir, workdir)
    tensors = load_tensors(str(model_dir))
    missing = sorted(set(statistics) - set(tensors))
    if missing:
        raise ValueError(f"{model_dir}: recalibrated BatchNorm buffer {missing[0]!r} has no tensor of that name in "
                         "the checkpoint; re-save the model with save_pretrained()")
    for name, value in statistics.items():
        tensors[name] = value.to(tensors[name].dtype).contiguous()
    indexes = {"model.safetensors.index.json", "pytorch_model.bin.index.json"}
    weights = {p.name for p in weight_files(model_dir)} | indexes
    if out.resolve() != model_dir.resolve():
        for path in model_dir.iterdir():
            if path.is_file() and path.name not in weights:
                shutil.copy2(path, out / path.name)
    else:
        for name in weights:
            (out / name).unlink(missing_ok=True)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})


def recalibrate_directory(model_dir: str | Path, data: str, out_dir: Path, workdir: Path, split: str = "val",
                          images: int | None = None, device: str = "auto", batch_size: int = 8, workers: int = 2,
                          progress: bool = True) -> Recalibrated | None:
    """Recalibrate the model in ``model_dir`` and write the result into ``out_dir`` (None: no BatchNorm, nothing
    written). ``out_dir`` may be ``model_dir`` itself for a staging folder this command owns."""
    from layerseg_merge.eval.inference import Segmenter

    model_dir = Path(model_dir)
    segmenter = Segmenter(model_dir, device=device)
    done = estimate(segmenter, data, split, images, batch_size, workers, progress)
    if done is None:
        return None
    write_recalibrated(segmenter, model_dir, out_dir, workdir)
    config = out_dir / "config.json"
    data_note = json.loads(config.read_text())
    data_note["layerseg_recalibrated"] = {"data": data, "split": split, "images": done.images,
                                          "batches": done.batches}
    config.write_text(json.dumps(data_note, indent=2) + "\n")
    return done
