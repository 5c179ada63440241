"""Merge speed: layerwise_seg vs mergekit `linear` vs a naive state-dict average.

Builds 3 random SegFormer-B5-sized models (safetensors), then runs each way of
merging in its own process and prints wall time and peak RSS. Usage:

    python benchmarks/merge_speed.py [--workdir DIR] [--size b5|b0]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SIZES = {
    "b5": dict(depths=[3, 6, 40, 3], hidden_sizes=[64, 128, 320, 512], decoder_hidden_size=768),
    "b0": dict(depths=[2, 2, 2, 2], hidden_sizes=[32, 64, 160, 256], decoder_hidden_size=256),
}

# Each runner prints "<seconds> <peak RSS in KiB>" on its last line.
RUN_MERGEKIT = """
import resource, sys, time
start = time.perf_counter()
from mergekit.scripts.run_yaml import main
sys.argv = ["mergekit-yaml", sys.argv[1], sys.argv[2], "--no-copy-tokenizer", "--quiet"]
try:
    main()
except SystemExit as e:
    if e.code: raise
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
RUN_NAIVE = """
import resource, sys, time
start = time.perf_counter()
import torch
from safetensors.torch import load_file, save_file
paths, out = sys.argv[1:-1], sys.argv[-1]
total = None
for path in paths:
    state = load_file(path + "/model.safetensors")
    if total is None:
        total = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    else:
        for k, v in state.items():
            if v.is_floating_point():
                total[k] += v
    del state
merged = {k: (v / len(paths)).contiguous() if v.is_floating_point() else v for k, v in total.items()}
save_file(merged, out)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
IMPORT_ONLY = """
import resource, time
start = time.perf_counter()
import mergekit.merge, mergekit.scripts.run_yaml
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def build_models(root: Path, size: str) -> list[Path]:
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(num_labels=19, **SIZES[size])
    paths = []
    for seed in range(3):
        path = root / f"model{seed}"
        if not (path / "model.safetensors").exists():
            torch.manual_seed(seed)
            SegformerForSemanticSegmentation(config).save_pretrained(path)
        paths.append(path)
    return paths


def run(code: str, *args: str) -> tuple[float, float]:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    seconds, rss_kib = result.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(rss_kib) / 1024


def recipe(root: Path, method: str, models: list[Path]) -> Path:
    data = {"merge_method": method, "models": [{"model": str(m), "parameters": {"weight": 1.0}}
                                               for m in models], "dtype": "float32"}
    if method == "layerwise_seg":
        data["base_model"] = str(models[0])
    path = root / f"{method}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--size", choices=sorted(SIZES), default="b5")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="merge_speed_"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    models = build_models(root, args.size)
    params = sum(p.stat().st_size for p in models[0].glob("*.safetensors")) / 4 / 1e6
    print(f"3 SegFormer-{args.size.upper()} models, {params:.1f} M parameters each "
          f"(built in {time.perf_counter() - started:.1f} s) in {root}")
    results = {}
    for name, code, extra in [
        ("import mergekit only", IMPORT_ONLY, []),
        ("naive load-and-average", RUN_NAIVE, [*map(str, models), str(root / "naive.safetensors")]),
        ("mergekit-yaml linear", RUN_MERGEKIT, [str(recipe(root, "linear", models)), str(root / "linear")]),
        ("mergekit-yaml layerwise_seg", RUN_MERGEKIT,
         [str(recipe(root, "layerwise_seg", models)), str(root / "layerwise")]),
    ]:
        runs = [run(code, *extra) for _ in range(args.repeats)]
        results[name] = (min(r[0] for r in runs), max(r[1] for r in runs))
    naive = results["naive load-and-average"][0]
    linear = results["mergekit-yaml linear"][0]
    print(f"{'approach':32s} {'wall s':>8s} {'peak RSS MiB':>13s} {'x naive':>8s} {'x linear':>9s}")
    for name, (seconds, rss) in results.items():
        print(f"{name:32s} {seconds:8.2f} {rss:13.0f} {seconds / naive:8.2f} {seconds / linear:9.2f}")


if __name__ == "__main__":
    main()
