"""Start-up time of `layerseg` commands (wall time of a fresh process, best of N), against `import torch`.

    python benchmarks/startup.py [--repeats 5]

Targets (issue 9): `--help` and `--version` <= 1 s; `score` start-up <= the torch import + 0.5 s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def best(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    layerseg = str(Path(sys.executable).parent / "layerseg")
    with tempfile.TemporaryDirectory() as tmp:
        labels = Path(tmp) / "labels"
        labels.mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(labels / "a.png")
        rows = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
            ("layerseg --help", [layerseg, "--help"]),
            ("layerseg --version", [layerseg, "--version"]),
            ("layerseg architectures", [layerseg, "architectures"]),
            ("layerseg score semantic (1 tiny image)", [layerseg, "score", "semantic", "--gt", str(labels), "--pred",
                                                        str(labels), "--num-classes", "2", "--workers", "0"]),
            ("layerseg merge --help", [layerseg, "merge", "--help"]),
        ]
        figures = {name: best(command, args.repeats) for name, command in rows}
    torch_import = figures["python -c 'import torch'"]
    print(f"best of {args.repeats} fresh processes (wall time, seconds)")
    for name, seconds in figures.items():
        print(f"  {name:42s} {seconds:6.2f} s   ({seconds / torch_import:4.2f}x the torch import)")
    print(f"score start-up minus the torch import: "
          f"{figures['layerseg score semantic (1 tiny image)'] - torch_import:+.2f} s (target <= +0.5 s)")


if __name__ == "__main__":
    main()
