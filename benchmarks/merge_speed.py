"""Merge speed: layerwise_seg vs mergekit `linear` vs a naive state-dict average.

Builds 3 random SegFormer-B5-sized models (safetensors), then runs each way of
merging in its own process and prints wall time and peak RSS (the best of
--repeats rounds; each round runs every way once). With --mergekit-tree DIR
(an unpacked mergekit with patches applied, e.g. the upstream/ series; may be
given more than once) the mergekit-based ways run again with DIR first on
PYTHONPATH, labelled by DIR's name, and their merged files are compared byte
for byte with the installed mergekit's. Usage:

    python benchmarks/merge_speed.py [--workdir DIR] [--size b5|b0] [--repeats N]
        [--mergekit-tree DIR ...]
"""

from __future__ import annotations

import argparse
import filecmp
import os
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

# Each runner prints "<wall seconds> <CPU seconds> <peak RSS in KiB>" on its last line.
RUN_MERGEKIT = """
import resource, sys, time
start = time.perf_counter()
from mergekit.scripts.run_yaml import main
sys.argv = ["mergekit-yaml", sys.argv[1], sys.argv[2], "--no-copy-tokenizer", "--quiet"]
try:
    main()
except SystemExit as e:
    if e.code: raise
usage = resource.getrusage(resource.RUSAGE_SELF)
print(time.perf_counter() - start, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
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
usage = resource.getrusage(resource.RUSAGE_SELF)
print(time.perf_counter() - start, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
"""
IMPORT_ONLY = """
import resource, time
start = time.perf_counter()
import mergekit.merge, mergekit.scripts.run_yaml
usage = resource.getrusage(resource.RUSAGE_SELF)
print(time.perf_counter() - start, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
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


def run(code: str, *args: str, tree: Path | None = None) -> tuple[float, float, float]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            env=env)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    seconds, cpu_seconds, rss_kib = result.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(cpu_seconds), float(rss_kib) / 1024


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
    parser.add_argument("--mergekit-tree", type=Path, action="append", default=[],
                        help="also run the mergekit-based ways with this mergekit source tree")
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.mergekit_tree]
    for tree in trees:
        if not (tree / "mergekit" / "__init__.py").is_file():
            raise SystemExit(f"{tree}: no mergekit/__init__.py; pass an unpacked mergekit source tree")
    if len({tree.name for tree in trees}) < len(trees):
        raise SystemExit("--mergekit-tree: give the trees different folder names (they label the rows)")
    # absolute, so that the recipes' model paths are not taken for Hub ids
    root = (args.workdir or Path(tempfile.mkdtemp(prefix="merge_speed_"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    models = build_models(root, args.size)
    params = sum(p.stat().st_size for p in models[0].glob("*.safetensors")) / 4 / 1e6
    print(f"3 SegFormer-{args.size.upper()} models, {params:.1f} M parameters each "
          f"(built in {time.perf_counter() - started:.1f} s) in {root}")
    linear_recipe, layerwise_recipe = recipe(root, "linear", models), recipe(root, "layerwise_seg", models)
    ways = [("naive load-and-average", RUN_NAIVE, [*map(str, models), str(root / "naive.safetensors")], None)]
    for label, suffix, where in [("", "", None)] + [(f" ({t.name})", f"_{t.name}", t) for t in trees]:
        ways += [
            (f"import mergekit only{label}", IMPORT_ONLY, [], where),
            (f"mergekit-yaml linear{label}", RUN_MERGEKIT, [str(linear_recipe), str(root / f"linear{suffix}")],
             where),
            (f"mergekit-yaml layerwise_seg{label}", RUN_MERGEKIT,
             [str(layerwise_recipe), str(root / f"layerwise{suffix}")], where),
        ]
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in ways}
    for _ in range(args.repeats):  # rounds, so that a busy spell on the machine hits every way
        for name, code, extra, where in ways:
            runs[name].append(run(code, *extra, tree=where))
    # wall and CPU time: the best round; CPU time is less sensitive to other work on the machine
    results = {name: (min(r[0] for r in rs), min(r[1] for r in rs), max(r[2] for r in rs))
               for name, rs in runs.items()}
    naive, naive_cpu, _ = results["naive load-and-average"]
    linear = results["mergekit-yaml linear"][0]
    print(f"{'approach':40s} {'wall s':>7s} {'x naive':>8s} {'x linear':>9s} {'CPU s':>7s} {'x naive':>8s} "
          f"{'peak RSS MiB':>13s}")
    for name, (seconds, cpu, rss) in results.items():
        print(f"{name:40s} {seconds:7.2f} {seconds / naive:8.2f} {seconds / linear:9.2f} {cpu:7.2f} "
              f"{cpu / naive_cpu:8.2f} {rss:13.0f}")
    for tree in trees:
        print(f"{tree.name}: {tree}")
        for way, out in [("linear", "linear"), ("layerwise_seg", "layerwise")]:
            installed = root / out / "model.safetensors"
            same = filecmp.cmp(installed, root / f"{out}_{tree.name}" / "model.safetensors", shallow=False)
            print(f"  {way}: model.safetensors {'identical to' if same else 'DIFFERS from'} the installed "
                  "mergekit's")


if __name__ == "__main__":
    main()
