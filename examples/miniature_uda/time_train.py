"""Estimate how long `train.py` takes on this machine without running it in full.

    python examples/miniature_uda/time_train.py [--steps 10] [--scenes 60]

Times the scene rendering of a few scenes per domain and a few optimisation steps of every phase
of `train.py` (its own functions and torch threads), then extrapolates linearly to the full
schedule (`train.STEPS`, the pool sizes of `--scale 1`). An estimate, printed as such; it says
nothing about the load of the machine, so the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch

try:
    from . import train
except ImportError:  # run as a script
    import train


def _seconds(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20,
                        help="steps timed per training phase (OneCycleLR needs 11 or more)")
    parser.add_argument("--scenes", type=int, default=60, help="scenes rendered per domain")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (train.py's --threads)")
    args = parser.parse_args(argv)
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min average), {os.cpu_count()} CPUs, {args.threads} torch "
          "threads", flush=True)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    pools = {}
    rendered = {}
    for domain in ("source", "source2", "target"):
        rendered[domain] = _seconds(lambda d=domain: pools.setdefault(d, train.Pool(d, args.scenes, 0))) / args.scenes
    full_scenes = {"source": 1500, "source2": 1500, "target": 1000 + 48 + 48 + 48}  # pools, test pool, test + val
    estimate = {"render scenes": sum(rendered[d] * n for d, n in full_scenes.items())}
    n = args.steps
    model = train.SegformerForSemanticSegmentation(train.backbone_config())
    train.train_supervised(model, pools["source"], n, g)  # warm-up
    per_step = {
        "pretrain": _seconds(lambda: train.train_supervised(model, pools["source"], n, g)) / n,
        "source_only": _seconds(lambda: train.train_supervised(copy.deepcopy(model), pools["source"], n, g)) / n,
        "dr": _seconds(lambda: train.train_supervised(copy.deepcopy(model), pools["source"], n, g, augment=True)) / n,
        "dacs": _seconds(lambda: train.train_dacs(copy.deepcopy(model), pools["source"], pools["target"], n, g)) / n,
        "mic": _seconds(lambda: train.train_dacs(copy.deepcopy(model), pools["source"], pools["target"], n, g,
                                                 mic=True)) / n,
        "panoptic": _seconds(lambda: train.train_panoptic(
            train.SegformerForSemanticSegmentation(train.backbone_config(num_labels=9)), pools["source"], n, g)) / n,
    }
    per_step["dacs_source2"] = per_step["dacs"]
    for phase, steps in train.STEPS.items():
        estimate[phase] = per_step[phase] * steps
    estimate["mic"] += per_step["dr"] * train.STEPS["dr"]  # mic's new head is fitted first, as dr
    for phase, seconds in estimate.items():
        rate = f"  ({1000 * per_step[phase]:.0f} ms/step x {train.STEPS[phase]})" if phase in per_step else ""
        print(f"{phase:14s} {seconds:7.1f} s{rate}")
    total = sum(estimate.values())
    print(f"{'total':14s} {total:7.1f} s = {total / 60:.1f} min (extrapolated from {n} steps per phase and "
          f"{args.scenes} scenes per domain)")
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min average)")
    return estimate


if __name__ == "__main__":
    main()
