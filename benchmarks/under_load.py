"""Sweep, eval, recalibrate and score, quiet and beside other people's torch jobs, in one run.

"Other people's jobs" are as many processes as this one may use cores, each a float32 matmul loop with
torch's default threads (as an unaware job runs). Each command runs in a fresh interpreter, twice per
condition (best of the two), with the thread policy (`--threads`/`--workers` left to layerseg) and with
the settings before it (`--threads` = the machine's cores, `--workers 2`: torch's default and the old
default). Prints seconds per unit (candidate, image), the loaded/quiet ratio of each, and the conditions
(cores, load average, wall time).

    python benchmarks/under_load.py [--rounds 2] [--candidates 6]
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

HOG = """
import torch
a = torch.randn(384, 384)
while True:
    a = (a @ a).clamp_(-1, 1)
"""


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def layerseg(*args: str) -> float:
    """Seconds of one `layerseg` command's work in a fresh interpreter: what it reports itself where it does (a
    sweep's seconds per candidate times the candidates, eval's seconds after its workers started), else the
    wall time of the whole command."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from layerseg_merge.cli import main; main()", *args],
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"layerseg {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    for line in done.stderr.splitlines():
        if " candidates, " in line and " s each" in line:  # sweep
            count, each = line.split(" candidates, ")
            return int(count) * float(each.split(" s each")[0])
        if " images in " in line and " img/s" in line:  # eval: its rate (the seconds are printed to 0.1 s)
            images = int(line.split(" images in ")[0].split()[-1])
            return images / float(line.split(" img/s")[0].split("(")[-1])
    return wall


def jobs(work: Path, candidates: int) -> dict:
    """name -> (command builder given extra options, units, unit name)."""
    from layerseg_merge.resources import DEMO_ASSETS, recipe_files, recipe_text

    recipe = work / "recipe.yaml"
    recipe.write_text(recipe_text(recipe_files()["miniature_different_heads"]))
    val, test = DEMO_ASSETS / "target_val", DEMO_ASSETS / "target_test"
    model = DEMO_ASSETS / "models" / "dacs"
    counter = iter(range(10**6))

    def out() -> str:
        return str(work / f"out{next(counter)}")

    return {
        "sweep": (lambda extra: ["sweep", str(recipe), "--data", f"folder:{val}", "--out", out(), "--device", "cpu",
                                 "--budget", str(candidates), *extra], candidates, "candidate"),
        "eval": (lambda extra: ["eval", str(model), "--data", f"folder:{test}", "--device", "cpu", *extra], 48,
                 "image"),
        "recalibrate": (lambda extra: ["recalibrate", str(model), "--data", f"images:{val}", "--out", out(),
                                       "--device", "cpu", *extra], 48, "image"),
        "score": (lambda extra: ["score", "panoptic", "--gt-json", str(test / "panoptic.json"), "--gt-folder",
                                 str(test / "panoptic"), "--pred-json", str(test / "panoptic.json"), "--pred-folder",
                                 str(test / "panoptic")], 48, "image"),
    }


def measure(rounds: int, candidates: int) -> dict:
    n = cores()
    settings = {"policy": [], "before": ["--threads", str(os.cpu_count() or 1), "--workers", "2"]}
    results: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        table = jobs(Path(folder), candidates)
        for condition in ("quiet", "loaded"):
            hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(n if condition == "loaded" else 0)]
            try:
                time.sleep(2 if hogs else 0)
                for name, (build, units, unit) in table.items():
                    for setting, extra in settings.items():
                        if name == "score" and setting == "before":
                            continue  # score runs numpy workers, no torch threads: one setting
                        before = os.getloadavg()[0]
                        best = min(layerseg(*build(extra)) for _ in range(rounds))
                        load = f"{before:.1f}-{os.getloadavg()[0]:.1f}"  # 1-minute load average before and after
                        results[(name, setting, condition)] = (best / units, unit, load)
            finally:
                for hog in hogs:
                    hog.kill()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=6)
    args = parser.parse_args()
    results = measure(args.rounds, args.candidates)
    print(f"{cores()} usable cores; loaded = {cores()} matmul jobs with torch's default threads beside; wall time, "
          f"best of {args.rounds}, per unit (sweep and eval: their own timing, without start-up; recalibrate and "
          "score: the whole command, start-up included)")
    print("| command | settings | quiet s/unit (load) | loaded s/unit (load) | loaded / quiet |")
    print("| --- | --- | ---: | ---: | ---: |")
    for (name, setting, condition), (seconds, unit, load) in results.items():
        if condition != "quiet":
            continue
        loaded, _, loaded_load = results[(name, setting, "loaded")]
        print(f"| {name} ({unit}) | {setting} | {seconds:.3f} ({load}) | {loaded:.3f} ({loaded_load}) | "
              f"{loaded / seconds:.1f}x |")
    print(json.dumps({f"{k[0]}/{k[1]}/{k[2]}": v[0] for k, v in results.items()}))


if __name__ == "__main__":
    main()
