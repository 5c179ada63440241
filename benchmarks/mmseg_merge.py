"""One MiT-B5-size merge of three mmseg UDA checkpoints (DAFormer, HRDA, MIC-like) through `layerseg merge`.

    python benchmarks/mmseg_merge.py [--workdir DIR] [--container training|published]

Generates three random checkpoints with the reference's exact B5 names and shapes (tests/mmseg_fixtures.py),
then times `layerseg merge RECIPE OUT.pth` in a fresh process twice: the first run imports the .pth files
(hash + conversion into the cache), the second merges from the cache. Prints wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


# Runs one command and prints its own wall time and peak RSS (KiB) on the last line.
MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:]).returncode
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""


def run(command: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``command`` alone, measured in a fresh parent process."""
    result = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, env=env)
    seconds, peak, code = result.stdout.strip().splitlines()[-1].split()
    if int(code):
        sys.exit(result.stderr[-3000:])
    return float(seconds), float(peak) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the temporary folder goes (created when missing, and then removed again)")
    parser.add_argument("--container", choices=["training", "published"], default="training")
    args = parser.parse_args()
    created = _make_workdir(parser, args.workdir)
    try:
        measure(args)
    finally:
        for folder in created:  # empty again: only the temporary folder inside was used
            folder.rmdir()


def _make_workdir(parser: argparse.ArgumentParser, workdir: Path | None) -> list[Path]:
    """Create ``workdir`` (and missing parents); returns the folders this run created, deepest first."""
    if workdir is None or workdir.is_dir():
        return []
    if workdir.exists():
        parser.error(f"--workdir {workdir} is not a folder")
    missing = [folder for folder in (workdir, *workdir.parents) if not folder.exists()]
    workdir.mkdir(parents=True)
    return missing


def measure(args: argparse.Namespace) -> None:
    from mmseg_fixtures import daformer_checkpoint, save_checkpoint

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        paths = []
        start = time.perf_counter()
        for name, kind, seed in (("hrda", "hrda", 1), ("daformer", "daformer", 2), ("mic", "hrda", 3)):
            paths.append(save_checkpoint(daformer_checkpoint(kind, "b5", container=args.container, seed=seed),
                                         work / f"{name}.pth"))
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 2**20:.0f} MiB" for p in paths)
        print(f"generated 3 MiT-B5 checkpoints ({args.container} form: {sizes}) in {time.perf_counter() - start:.0f} s")
        recipe = work / "recipe.yaml"
        recipe.write_text(yaml.safe_dump({"merge_method": "layerwise_seg", "base_model": str(paths[0]),
                                          "models": [{"model": str(p)} for p in paths],
                                          "parameters": {"heads": "schedule"}}))
        env = dict(os.environ, LAYERSEG_CACHE=str(work / "cache"))
        layerseg = str(Path(sys.executable).parent / "layerseg")
        first = run([layerseg, "merge", str(recipe), str(work / "merged.pth")], env)
        second = run([layerseg, "merge", str(recipe), str(work / "merged2.pth")], env)
        print(f"layerseg merge, importing the 3 .pth files: {first[0]:6.1f} s, peak RSS {first[1]:6.0f} MiB")
        print(f"layerseg merge, from the import cache:      {second[0]:6.1f} s, peak RSS {second[1]:6.0f} MiB")
        print(f"output {(work / 'merged.pth').stat().st_size / 2**20:.0f} MiB (an mmseg checkpoint, model.* keys)")


if __name__ == "__main__":
    main()
