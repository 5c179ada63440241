"""What `layerseg eval --show-dir` (painted predictions) costs against the same eval without it, in one run.

    python benchmarks/painting_overhead.py [--device auto] [--images 16] [--size 512x1024] [--repeats 3]
                                           [--workers 0] [--show N] [--scenarios demo,street]

Scenarios: ``demo``, the shipped miniature target split (48 images of 64x64, the dacs model); ``street``,
generated street-like scenes at --size with a random-weight SegFormer-B0 of the 19 Cityscapes classes
(benchmarks/eval_throughput.py's data and model). The runs alternate (without, with, without, ...); each prints its
wall time around ``evaluate()``, the batch loop's time (``timing.seconds``: the first batch to the last image
written, painting included) and the CPU time of this process and its DataLoader workers. The summary gives the
medians and the overhead of painting; the target is at most 10 % on the loop.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_throughput import build_segformer, make_data  # noqa: E402

from layerseg_merge.eval.evaluate import evaluate  # noqa: E402
from layerseg_merge.eval.options import DataOptions, InferenceOptions  # noqa: E402
from layerseg_merge.resources import DEMO_ASSETS  # noqa: E402


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def one_run(model: Path, data: str, infer: InferenceOptions, workers: int, show_dir: Path | None,
            show: int | None) -> dict:
    cpu, wall = cpu_seconds(), time.perf_counter()
    report = evaluate(model, DataOptions(data, workers=workers), "semantic", infer, progress=False,
                      show_dir=show_dir, show=show)
    return {"wall": time.perf_counter() - wall, "loop": report["timing"]["seconds"], "cpu": cpu_seconds() - cpu,
            "mIoU": report["mIoU"]}


def scenario(name: str, model: Path, data: str, args, work: Path) -> None:
    infer = InferenceOptions(args.device, args.batch_size)
    one_run(model, data, infer, args.workers, None, None)  # warm-up: imports, first-call kernels, page cache
    runs: dict[str, list[dict]] = {"plain": [], "painted": []}
    for repeat in range(args.repeats):
        for kind in ("plain", "painted"):
            shown = work / f"{name}_shown" if kind == "painted" else None
            result = one_run(model, data, infer, args.workers, shown, args.show)
            runs[kind].append(result)
            print(f"  {name} {kind:7s} run {repeat + 1}: wall {result['wall']:.2f} s, loop {result['loop']:.2f} s, "
                  f"CPU {result['cpu']:.2f} s, load {os.getloadavg()[0]:.2f}", flush=True)
    assert len({r["mIoU"] for r in runs["plain"] + runs["painted"]}) == 1, "painting changed the numbers"
    for summary in (statistics.median, min):
        values = {kind: {key: summary(r[key] for r in rs) for key in ("wall", "loop", "cpu")}
                  for kind, rs in runs.items()}
        plain, painted = values["plain"], values["painted"]
        changes = ", ".join(f"{key} {plain[key]:.2f} -> {painted[key]:.2f} s "
                            f"({100 * (painted[key] / plain[key] - 1):+.1f} %)" for key in ("wall", "loop", "cpu"))
        print(f"{name}: {summary.__name__} without -> with painting: {changes}", flush=True)
    print(f"{name}: mIoU identical in all {2 * args.repeats} runs", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", default="512x1024", help="HxW of the generated street scenes")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--show", type=int, default=None, help="paint N images (default: all)")
    parser.add_argument("--scenarios", default="demo,street")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    print(f"cores: {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), torch threads "
          f"{torch.get_num_threads()}, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}, "
          f"device {args.device}, workers {args.workers}, batch {args.batch_size}, painting "
          f"{args.show or 'all'} images", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if "demo" in args.scenarios:
            scenario("demo", DEMO_ASSETS / "models" / "dacs", f"folder:{DEMO_ASSETS / 'target_test'}", args, work)
        if "street" in args.scenarios:
            data, _ = make_data(work / "street", args.images, (height, width))
            model = build_segformer(work / "b0", "b0", (height, width))
            scenario(f"street {height}x{width} x{args.images}", model, data, args, work)
    print(f"load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
