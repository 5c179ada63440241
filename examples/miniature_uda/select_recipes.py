"""Choosing the recipe honestly: select on the target validation split, score on the test split.

For one seed's models (``train.py`` output) and each scenario of the demo:
* ``layerseg sweep`` (labelled validation split; mIoU, or PQ for the panoptic scenario) and
  ``layerseg sweep --unsupervised`` (the same images, no labels) over the anchor, uniform_until,
  anchor_max and schedule; the test split is never read by either;
* every selected recipe (and the scenario's own recipe, and the anchor alone) scored on the test
  split with the BatchNorm statistics as stored and after ``recalibrate`` on the validation images;
* for the analysis only, every candidate scored on the test split, to give the rank correlation
  between the label-free score and the test metric.

    python examples/miniature_uda/select_recipes.py --assets DIR [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import yaml
from scipy.stats import spearmanr

from layerseg_merge.cli.demo import SCENARIOS, recipe_for
from layerseg_merge.engine.in_memory import Candidate, LoadedInputs
from layerseg_merge.engine.settings import ScheduleSettings
from layerseg_merge.eval.evaluate import evaluate
from layerseg_merge.eval.options import DataOptions, InferenceOptions
from layerseg_merge.models.info import ModelInfo
from layerseg_merge.tools.recalibrate import recalibrate_directory
from layerseg_merge.tools.sweep import SweepOptions, read_recipe, run_sweep

BATCHES_OF_16 = InferenceOptions(batch_size=16)


def test_scores(model_dir: Path, test: Path, panoptic: bool, tensors=None) -> dict:
    scores = {"mIoU": evaluate(model_dir, DataOptions(f"folder:{test}", workers=0), "semantic", BATCHES_OF_16,
                               progress=False, tensors=tensors)["mIoU"]}
    if panoptic:
        spec = f"coco-panoptic:{test / 'images'},{test / 'panoptic.json'},{test / 'panoptic'}"
        scores["PQ"] = evaluate(model_dir, DataOptions(spec, workers=0), "panoptic", BATCHES_OF_16, progress=False,
                                tensors=tensors)["All"]["pq"]
    return scores


def recalibrated_scores(anchor_dir: Path, tensors, val: Path, test: Path, panoptic: bool, work: Path) -> dict:
    """Write the merge, re-estimate its BatchNorm statistics on the validation images, score it on test."""
    from safetensors.torch import save_file

    merged, out = work / "merged", work / "recalibrated"
    for folder in (merged, out):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(anchor_dir / name, merged / name)
    save_file({k: v.contiguous() for k, v in tensors.items()}, merged / "model.safetensors", metadata={"format": "pt"})
    scratch = work / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    recalibrate_directory(merged, DataOptions(f"images:{val}", workers=0), out, scratch, progress=False)
    return test_scores(out, test, panoptic)


def candidate_of(setup, row) -> Candidate:
    settings = ScheduleSettings(row["uniform_until"], row["anchor_max"], row["schedule"], setup.heads, setup.buffers)
    return Candidate(setup.models.index(row["anchor"]), settings)


def run(assets: Path, log=print) -> dict:
    val, test = assets / "target_val", assets / "target_test"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for scenario, recipe_name in SCENARIOS:
            recipe = work / f"{scenario}.yaml"
            recipe.write_text(yaml.safe_dump(recipe_for(recipe_name, False, assets)))
            setup = read_recipe(recipe, lambda message: None)
            panoptic = scenario == "semantic_into_panoptic"
            metric = "PQ" if panoptic else "mIoU"
            anchors = [i for i, d in enumerate(setup.dirs) if not panoptic or ModelInfo.from_dir(d).gives_panoptic]
            spec = (f"coco-panoptic:{val / 'images'},{val / 'panoptic.json'},{val / 'panoptic'}" if panoptic
                    else f"folder:{val}")
            started = time.perf_counter()
            labelled = run_sweep(setup, DataOptions(spec, workers=0), SweepOptions(metric, anchors=anchors),
                                 BATCHES_OF_16, progress=False)
            unlabelled = run_sweep(setup, DataOptions(f"images:{val}", workers=0),
                                   SweepOptions(anchors=anchors, unsupervised=True), BATCHES_OF_16, progress=False)
            inputs = LoadedInputs(setup.dirs, setup.weights)
            tested = []  # analysis only: every candidate on the test split
            for row in unlabelled["candidates"]:
                scores = test_scores(setup.dirs[setup.models.index(row["anchor"])], test, panoptic,
                                     inputs.merge(candidate_of(setup, row)))
                tested.append((row["score"], scores[metric]))
            correlation = spearmanr([a for a, _ in tested], [b for _, b in tested]).statistic
            rows = {}
            picks = {"recipe": setup.recipe_candidate, "sweep (labelled val)": labelled["best"],
                     "sweep --unsupervised": unlabelled["best"]}
            anchor = setup.recipe_candidate.anchor
            anchor_dir = Path(setup.dirs[anchor])
            rows["anchor alone"] = {"stored": test_scores(anchor_dir, test, panoptic),
                                    "recalibrated": recalibrated_scores(anchor_dir, inputs.tensors[anchor], val, test,
                                                                        panoptic, work)}
            for name, candidate in picks.items():
                tensors = inputs.merge(candidate)
                anchor_dir = Path(setup.dirs[candidate.anchor])
                rows[name] = {"candidate": {"anchor": Path(setup.models[candidate.anchor]).name,
                                            "uniform_until": candidate.settings.uniform_until,
                                            "anchor_max": candidate.settings.anchor_max,
                                            "schedule": candidate.settings.schedule},
                              "stored": test_scores(anchor_dir, test, panoptic, tensors),
                              "recalibrated": recalibrated_scores(anchor_dir, tensors, val, test, panoptic, work)}
            results[scenario] = {
                "metric": metric, "candidates": len(labelled["candidates"]),
                "seconds_per_candidate": {"labelled": labelled["seconds_per_candidate"],
                                          "unsupervised": unlabelled["seconds_per_candidate"]},
                "spearman_unsupervised_vs_test": correlation, "rows": rows,
                "scenario_seconds": time.perf_counter() - started,
            }
            log(f"{scenario}: {len(labelled['candidates'])} candidates, "
                f"{labelled['seconds_per_candidate']:.2f} s each (labelled), Spearman {correlation:+.2f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = run(args.assets)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
