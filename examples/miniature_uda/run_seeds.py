"""Train + merge + evaluate the miniature UDA experiment for several seeds; write RESULTS.md.

    python examples/miniature_uda/run_seeds.py [--seeds 0 1 2] [--work runs/miniature]

Each seed trains every model from scratch (train.py), runs the demo's merges through
mergekit and scores everything on the same target test split.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import select_recipes  # noqa: E402
import train  # noqa: E402

from layerseg_merge.cli.demo import run_demo  # noqa: E402


def summarise(per_seed: dict[int, list[dict]]) -> str:
    names = [row["name"] for row in next(iter(per_seed.values()))]
    kinds = {row["name"]: row["kind"] for row in next(iter(per_seed.values()))}
    seeds = sorted(per_seed)
    lines = ["| model | kind | target mIoU (mean ± std) | per seed | PQ (mean ± std) |",
             "| --- | --- | ---: | --- | ---: |"]
    for name in names:
        rows = [next(r for r in per_seed[s] if r["name"] == name) for s in seeds]
        miou = [100 * r["mIoU"] for r in rows]
        pq = [100 * r["PQ"] for r in rows if r.get("PQ") is not None]
        spread = statistics.stdev(miou) if len(miou) > 1 else 0.0
        pq_text = f"{statistics.mean(pq):.1f} ± {statistics.stdev(pq) if len(pq) > 1 else 0:.1f}" if pq else ""
        lines.append(f"| {name} | {kinds[name]} | {statistics.mean(miou):.1f} ± {spread:.1f} | "
                     f"{' / '.join(f'{v:.1f}' for v in miou)} | {pq_text} |")
    return "\n".join(lines)


def _spread(values: list[float]) -> str:
    values = [100 * v for v in values]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {spread:.1f} | {' / '.join(f'{v:.1f}' for v in values)}"


def summarise_selection(per_seed: dict[int, dict]) -> str:
    """Test-split scores of the recipes chosen on the validation split, with and without recalibration."""
    seeds = sorted(per_seed)
    first = per_seed[seeds[0]]
    parts = []
    for scenario, content in first.items():
        metric = content["metric"]
        lines = [f"**{scenario}** (selection by {metric} on the validation split; test-split {metric} below)", "",
                 f"| row | BN statistics | test {metric} (mean ± std) | per seed | chosen (per seed: anchor, "
                 "uniform_until, anchor_max, schedule) |", "| --- | --- | ---: | --- | --- |"]
        for row in content["rows"]:
            chosen = " / ".join(
                "{anchor} {uniform_until:g} {anchor_max:g} {schedule}".format(**per_seed[s][scenario]["rows"][row][
                    "candidate"]) if "candidate" in per_seed[s][scenario]["rows"][row] else "-" for s in seeds)
            for treatment, label in (("stored", "as stored"), ("recalibrated", "recalibrated on target val")):
                values = [per_seed[s][scenario]["rows"][row][treatment][metric] for s in seeds]
                lines.append(f"| {row} | {label} | {_spread(values)} | {chosen if treatment == 'stored' else ''} |")
        rho = [per_seed[s][scenario]["spearman_unsupervised_vs_test"] for s in seeds]
        timing = [per_seed[s][scenario]["seconds_per_candidate"]["labelled"] for s in seeds]
        lines += ["", f"Candidates per seed: {content['candidates']}; Spearman rank correlation between the "
                  f"label-free score and test {metric} over all candidates: "
                  + " / ".join(f"{r:+.2f}" for r in rho) + f" (mean {statistics.mean(rho):+.2f}); "
                  f"{statistics.mean(timing):.2f} s per candidate (merge in memory + score 48 images, CPU).", ""]
        parts.append("\n".join(lines))
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "miniature")
    parser.add_argument("--write", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    per_seed, selection = {}, {}
    for seed in args.seeds:
        assets = args.work / f"seed{seed}"
        if not (assets / "train_log.json").exists():
            train.main(["--out", str(assets), "--seed", str(seed)])
        per_seed[seed] = run_demo(args.work / f"seed{seed}_demo", assets=assets)
        (args.work / f"seed{seed}_results.json").write_text(json.dumps(per_seed[seed], indent=2))
        selection[seed] = select_recipes.run(assets)
        (args.work / f"seed{seed}_selection.json").write_text(json.dumps(selection[seed], indent=2))
    table = summarise(per_seed)
    print(table)
    template = (HERE / "RESULTS.template.md").read_text()
    args.write.write_text(template.replace("{{TABLE}}", table).replace(
        "{{SEEDS}}", ", ".join(map(str, args.seeds))).replace("{{SELECTION}}", summarise_selection(selection)))


if __name__ == "__main__":
    main()
