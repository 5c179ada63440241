"""Re-estimate BatchNorm running statistics on unlabelled target images (AdaBN-style recalibration).

Every BatchNorm layer's statistics are re-estimated over consecutive batches of the images: the
running mean is the mean of the batches' means, the running variance the mean of the batches'
unbiased variances (PyTorch's cumulative average, ``momentum=None``), ``num_batches_tracked`` the
number of batches. Each batch's statistics are PyTorch's own (the layer's update with momentum 1);
they are averaged in float64 in batch order. The rest of the model is in eval mode and no gradient
flows; every other tensor of the checkpoint is written back bit-identical.

Under torchrun the batches are dealt to the ranks (batch k to rank k mod N) and their statistics
gathered in batch order, so the result does not depend on the number of processes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from layerseg_merge.eval.options import DataOptions, InferenceOptions

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


def _batch_rows(count: int, batch_size: int, rank: int, world: int) -> tuple[list[int], list[int]]:
    """This rank's batches (every ``world``-th from ``rank``) of ``count`` images and the images they hold."""
    batches = list(range(rank, math.ceil(count / batch_size), world))
    return batches, [i for b in batches for i in range(b * batch_size, min((b + 1) * batch_size, count))]


def estimate(segmenter, on: DataOptions, batch_size: int = 8, progress: bool = True) -> Recalibrated | None:
    """Recalibrate ``segmenter.model`` in place on the images ``on`` names, ``batch_size`` per BatchNorm batch;
    None without BatchNorm.

    Under torchrun (process group joined) every rank runs its share of the batches and ends with the
    same statistics.
    """
    import torch.distributed as dist
    from tqdm import tqdm

    from layerseg_merge.eval.evaluate import device_batches, gather_rows, open_data

    layers = [layer for layer in batchnorm_layers(segmenter.model) if layer.track_running_stats]
    if not layers:
        return None
    dataset = open_data(on, "images")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    mine, indices = _batch_rows(len(dataset), batch_size, rank, world)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = 1.0  # after a forward pass the running statistics are that batch's
    segmenter.model.eval()
    for layer in layers:
        layer.train()
    rows = []  # per batch of this rank: every layer's mean and unbiased variance, as PyTorch computed them
    keys = ("images",) if segmenter.fast else ()
    part = torch.utils.data.Subset(dataset, indices)
    try:
        with torch.no_grad(), tqdm(total=len(part), desc="recalibrate", unit="img",
                                   disable=not progress or rank != 0) as bar:
            for batch in device_batches(part, segmenter.device, batch_size, on.decoders(segmenter.device.type), keys):
                segmenter.model(**segmenter.inputs(batch["images"]))
                rows.append(torch.cat([torch.cat([layer.running_mean, layer.running_var]).double()
                                       for layer in layers]))
                bar.update(len(batch["names"]))
    finally:
        segmenter.model.eval()
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    count = math.ceil(len(dataset) / batch_size)
    width = sum(2 * layer.num_features for layer in layers)
    local = torch.stack(rows) if rows else torch.zeros(0, width, dtype=torch.float64)
    table = gather_rows(local, mine, count, segmenter.device)
    total = table[0].clone()
    for row in table[1:]:  # in batch order, whatever the number of ranks
        total += row
    mean = total / count
    offset = 0
    with torch.no_grad():
        for layer in layers:
            size = layer.num_features
            layer.running_mean.copy_(mean[offset:offset + size])
            layer.running_var.copy_(mean[offset + size:offset + 2 * size])
            layer.num_batches_tracked.fill_(count)
            offset += 2 * size
    return Recalibrated(len(layers), len(dataset), count)


def write_recalibrated(segmenter, model_dir: Path, out: Path, workdir: Path) -> None:
    """``out`` = ``model_dir``'s files, with the BatchNorm statistics of ``segmenter.model``."""
    import shutil

    from safetensors.torch import save_file

    from layerseg_merge.io.checkpoint import load_tensors, weight_files

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


def recalibrate_directory(model_dir: str | Path, on: DataOptions, out_dir: Path | None, workdir: Path | None,
                          infer: InferenceOptions = InferenceOptions(batch_size=8),
                          progress: bool = True) -> Recalibrated | None:
    """Recalibrate the model in ``model_dir`` on the images ``on`` names (``infer.batch_size`` per BatchNorm batch)
    and write the result into ``out_dir`` (None: no BatchNorm, nothing written). ``out_dir`` may be ``model_dir``
    itself for a staging folder this command owns.

    The model runs in float32 on whole images: ``infer`` with ``amp``, ``slide`` or ``compile`` is refused.
    Under torchrun every rank takes part and only the one given ``out_dir`` (rank 0) writes; the
    others pass None.
    """
    from layerseg_merge.eval.datasets import evaluated_split
    from layerseg_merge.eval.evaluate import join_ranks
    from layerseg_merge.eval.inference import Segmenter
    from layerseg_merge.models.card import note_recalibration

    if infer.amp != "off" or infer.slide is not None or infer.compile:
        raise ValueError("recalibration runs the model in float32 on whole images: amp, slide and compile do not "
                         "apply; leave them at off, None and False")
    model_dir = Path(model_dir)
    chosen, _, _ = join_ranks(infer.device)
    segmenter = Segmenter(model_dir, replace(infer, device=str(chosen)))
    done = estimate(segmenter, on, infer.batch_size, progress)
    if done is None or out_dir is None:
        return done
    write_recalibrated(segmenter, model_dir, out_dir, workdir)
    config = out_dir / "config.json"
    data, split = on.data, on.split
    data_note = json.loads(config.read_text())
    data_note["layerseg_recalibrated"] = {"data": data, "split": evaluated_split(data, split), "images": done.images,
                                          "batches": done.batches}
    config.write_text(json.dumps(data_note, indent=2) + "\n")
    # the card, when the model has one
    note_recalibration(out_dir, data, evaluated_split(data, split), done.images, done.batches)
    return done
