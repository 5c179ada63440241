"""Seconds per candidate of `layerseg sweep` on a shipped miniature recipe, against the example's path.

    python benchmarks/sweep_speed.py [--recipe miniature_different_heads] [--repeats 2] [--budget N]
        [--baseline-path DIR] [-- extra sweep options, e.g. --workers 0 --batch-size 16]

Runs, taking turns (best of R each, so that load changes hit every variant alike):
* `layerseg sweep RECIPE --data folder:target_val` as a user types it (its own figure, candidates.json);
* with --baseline-path DIR, the same command from another copy of the package (e.g. `git archive HEAD
  layerseg_merge | tar -x -C DIR`: the code before a change), with torch's default OpenMP wait policy and
  with OMP_WAIT_POLICY=PASSIVE (which `layerseg sweep` now sets unless the user set it);
* the example's former path in a fresh process (OMP_WAIT_POLICY=PASSIVE): per candidate an in-memory merge
  and `evaluate(..., tensors=merge)` (batches of 16, no DataLoader workers), which builds a model and decodes
  the images for every candidate.
It prints each figure and whether the rankings agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def sweep_once(recipe: Path, val: Path, out: Path, extra: list[str], env: dict[str, str]) -> dict:
    """One `layerseg sweep` run in a fresh interpreter (in `out`'s parent: the current directory would
    come first on the path and shadow a baseline package)."""
    command = [sys.executable, "-c", "from layerseg_merge.cli import main; main()", "sweep", str(recipe), "--data",
               f"folder:{val}", "--out", str(out), "--overwrite", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=out.parent)
    if done.returncode != 0:
        sys.exit(f"sweep failed:\n{done.stderr[-3000:]}")
    result = json.loads((out / "candidates.json").read_text())
    result["wall"] = time.perf_counter() - started
    return result


def setting(row: dict) -> tuple:
    return row["anchor"], row["uniform_until"], row["anchor_max"], row["schedule"]


def example_path(recipe: Path, val: Path, budget: int | None) -> tuple[float, int]:
    """Seconds per candidate of merge + evaluate(tensors=...) with a fresh model and data per candidate."""
    from layerseg_merge.engine.in_memory import LoadedInputs
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.eval.options import DataOptions, InferenceOptions
    from layerseg_merge.tools.sweep import DEFAULT_GRID, candidates, read_recipe

    setup = read_recipe(recipe, lambda message: None)
    inputs = LoadedInputs(setup.dirs, setup.weights)
    pool = candidates(DEFAULT_GRID, range(len(setup.dirs)), setup.heads, setup.buffers)[:budget]
    started = time.perf_counter()
    for candidate in pool:
        evaluate(setup.dirs[candidate.anchor], DataOptions(f"folder:{val}", workers=0), "semantic",
                 InferenceOptions(device="cpu", batch_size=16), progress=False, tensors=inputs.merge(candidate))
    return (time.perf_counter() - started) / len(pool), len(pool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="miniature_different_heads")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--budget", type=int, default=None, help="at most N candidates (default: the full grid)")
    parser.add_argument("--baseline-path", type=Path, help="a folder holding another layerseg_merge package")
    parser.add_argument("--example-only", type=Path, help=argparse.SUPPRESS)  # internal: one example-path run
    parser.add_argument("extra", nargs="*", help="options passed to every `layerseg sweep` (after --)")
    args = parser.parse_args()
    from layerseg_merge.cli.demo import recipe_for
    from layerseg_merge.resources import DEMO_ASSETS

    val = DEMO_ASSETS / "target_val"
    if args.example_only:
        print(json.dumps(example_path(args.example_only, val, args.budget)))
        return
    extra = [*args.extra, "--device", "cpu"] + (["--budget", str(args.budget)] if args.budget else [])
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        recipe = root / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(recipe_for(args.recipe, False, DEMO_ASSETS)))
        plain = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        variants = {"layerseg sweep (this package)": plain}
        if args.baseline_path:
            baseline = {**plain, "PYTHONPATH": str(args.baseline_path)}
            variants["baseline package"] = baseline
            variants["baseline package, OMP_WAIT_POLICY=PASSIVE"] = {**baseline, "OMP_WAIT_POLICY": "PASSIVE"}
        best: dict[str, dict] = {}
        example = []
        for _ in range(args.repeats):
            for name, env in variants.items():
                result = sweep_once(recipe, val, root / "out", extra, env)
                if name not in best or result["seconds_per_candidate"] < best[name]["seconds_per_candidate"]:
                    best[name] = result
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--example-only", str(recipe), *(
                ["--budget", str(args.budget)] if args.budget else [])], capture_output=True, text=True,
                env={**plain, "OMP_WAIT_POLICY": "PASSIVE"}, cwd=root)
            if done.returncode != 0:
                sys.exit(f"example path failed:\n{done.stderr[-3000:]}")
            example.append(tuple(json.loads(done.stdout.strip().splitlines()[-1])))
    print(f"recipe {args.recipe}, data {val.name} ({len(list((val / 'images').glob('*.png')))} images), "
          f"sweep options: {' '.join(extra)}; best of {args.repeats}, load average {os.getloadavg()[0]:.1f}")
    for name, result in best.items():
        print(f"{name:42s} {result['seconds_per_candidate']:6.3f} s per candidate "
              f"({len(result['candidates'])} candidates, {result['wall']:.1f} s wall with start-up)")
    seconds, count = min(example)
    print(f"{'example path (merge + evaluate per candidate)':42s} {seconds:6.3f} s per candidate ({count} candidates)")
    names = list(best)
    for other in names[1:]:
        first, second = (best[name]["candidates"] for name in (names[0], other))
        same = [setting(r) for r in first] == [setting(r) for r in second]
        scores = {setting(r): r["score"] for r in second}
        gap = max(abs(r["score"] - scores[setting(r)]) for r in first)
        print(f"{names[0]} vs {other}: same ranking {same}, max |score difference| {gap:.3g}")


if __name__ == "__main__":
    main()
