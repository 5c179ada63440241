"""Scores a fixed random dataset, sharded over torchrun ranks; rank 0 writes the report."""

import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
from test_metrics_reference import random_panoptic  # noqa: E402

from layerseg_merge.eval.metrics import PanopticMetric, SemanticMetric  # noqa: E402


def main(out: str) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    semantic, panoptic = SemanticMetric(5), PanopticMetric({1: True, 2: True, 3: False, 4: False})
    generator = torch.Generator().manual_seed(3)
    for index in range(8):
        label = torch.randint(0, 5, (16, 16), generator=generator)
        prediction = torch.randint(0, 5, (16, 16), generator=generator)
        gt = random_panoptic(generator, [1, 2], [3, 4])
        pred = random_panoptic(generator, [1, 2], [3, 4])
        if index % world == rank:
            semantic.update(prediction, label)
            panoptic.update(pred[0], pred[1], gt[0], gt[1])
    semantic.reduce()
    panoptic.reduce()
    if rank == 0:
        with open(out, "w") as handle:
            json.dump({"semantic": semantic.compute(), "panoptic": panoptic.compute()}, handle)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
