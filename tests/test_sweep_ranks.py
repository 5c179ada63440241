"""`layerseg sweep` in memory (the data decoded once, one model per anchor) and under torchrun, and
`layerseg recalibrate` under torchrun: the numbers of one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from eval_data import semantic_folder
from helpers import free_port, tensors

from layerseg_merge.cli import main

WORKER = Path(__file__).with_name("cli_worker.py")


def run(*args):
    return CliRunner().invoke(main, [*map(str, args)])


def demo_recipe(tmp_path: Path, name: str) -> Path:
    from layerseg_merge.cli.demo import recipe_for
    from layerseg_merge.resources import DEMO_ASSETS

    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(yaml.safe_dump(recipe_for(name, False, DEMO_ASSETS)))
    return recipe


@pytest.mark.parametrize("scenario, metric", [("miniature_different_heads", "mIoU"),
                                              ("miniature_semantic_into_panoptic", "PQ")])
def test_sweep_scores_equal_evaluating_each_merge_and_decode_the_data_once(tmp_path, monkeypatch, scenario, metric):
    from layerseg_merge.engine.in_memory import Candidate, LoadedInputs
    from layerseg_merge.engine.settings import ScheduleSettings
    from layerseg_merge.eval import images as images_module
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.eval.options import DataOptions, InferenceOptions
    from layerseg_merge.resources import DEMO_ASSETS
    from layerseg_merge.tools.sweep import SweepOptions, read_recipe, run_sweep

    val = DEMO_ASSETS / "target_val"
    data = (f"coco-panoptic:{val / 'images'},{val / 'panoptic.json'},{val / 'panoptic'}" if metric == "PQ"
            else f"folder:{val}")
    setup = read_recipe(demo_recipe(tmp_path, scenario), lambda message: None)
    reads = []
    decode = images_module._decode
    monkeypatch.setattr(images_module, "_decode", lambda path, mode: reads.append(path) or decode(path, mode))
    grid = {"uniform_until": [0.0, 1.0], "anchor_max": [0.5, 1.0], "schedule": ["cosine"]}
    log = []
    result = run_sweep(setup, DataOptions(data, limit=5, workers=0), SweepOptions(metric, grid),
                       InferenceOptions("cpu", 3), log=log.append, progress=False)
    per_pass = 5 * (1 if metric == "PQ" else 2)  # images (+ labels; panoptic ids are read apart)
    assert len(result["candidates"]) >= 4 and len(reads) == per_pass
    assert any(line.startswith("models reused across candidates:") and "built per candidate: none" in line
               for line in log), log
    fresh = LoadedInputs(setup.dirs, setup.weights)  # the sweep never changed the inputs it merged from
    assert sum(row["alone"] for row in result["candidates"]) == len({row["anchor"] for row in result["candidates"]})
    for row in result["candidates"]:
        anchor = setup.models.index(row["anchor"])
        tensors = None  # an input alone: its directory as it is
        if not row["alone"]:
            settings = ScheduleSettings(row["uniform_until"], row["anchor_max"], row["schedule"], setup.heads,
                                        setup.buffers)
            tensors = fresh.merge(Candidate(anchor, settings))
        report = evaluate(setup.dirs[anchor], DataOptions(data, limit=5, workers=0),
                          "panoptic" if metric == "PQ" else "semantic", InferenceOptions("cpu", 3), progress=False,
                          tensors=tensors)
        assert row["score"] == (report["All"]["pq"] if metric == "PQ" else report["mIoU"]), row


def test_a_negative_cache_budget_is_refused(tmp_path):
    recipe = demo_recipe(tmp_path, "miniature_different_heads")
    result = run("sweep", recipe, "--data", "folder:nowhere", "--out", tmp_path / "out", "--cache-gb", "-1")
    assert result.exit_code != 0 and "--cache-gb" in result.output


def test_a_cache_too_small_decodes_per_candidate_with_the_same_scores(tmp_path):
    from layerseg_merge.eval.options import DataOptions, InferenceOptions
    from layerseg_merge.resources import DEMO_ASSETS
    from layerseg_merge.tools.sweep import SweepOptions, read_recipe, run_sweep

    setup = read_recipe(demo_recipe(tmp_path, "miniature_different_heads"), lambda message: None)
    grid = {"uniform_until": [0.0, 1.0], "anchor_max": [1.0], "schedule": ["linear"]}
    on, infer = DataOptions(f"folder:{DEMO_ASSETS / 'target_val'}", limit=4, workers=0), InferenceOptions(batch_size=2)
    log = []
    small = run_sweep(setup, on, SweepOptions(grid=grid, anchors=[0], cache_gb=1e-6), infer, log=log.append,
                      progress=False)
    assert any("passes --cache-gb" in line for line in log), log
    assert small["candidates"] == run_sweep(setup, on, SweepOptions(grid=grid, anchors=[0]), infer,
                                            progress=False)["candidates"]


def test_sweep_and_recalibrate_under_torchrun_equal_one_process(tmp_path, models):
    from layerseg_merge.resources import DEMO_ASSETS

    recipe = demo_recipe(tmp_path, "miniature_different_heads")
    val = DEMO_ASSETS / "target_val"
    grid = ["--grid", "uniform_until=0,1", "--grid", "anchor_max=1", "--grid", "schedule=linear",
            "--grid", "anchor=0,2"]
    # one torch thread everywhere (each rank gets one of the 2 cores anyway): the same kernels, the same bits
    common = ["--device", "cpu", "--workers", "0", "--threads", "1", "--batch-size", "1", "--limit", "5", *grid]
    data = semantic_folder(tmp_path / "bn_data", count=5, size=(48, 40))

    def commands(tag: str) -> list[list[str]]:
        return [["sweep", str(recipe), "--data", f"folder:{val}", "--out", str(tmp_path / f"sweep_{tag}"), *common],
                ["sweep", str(recipe), "--data", f"images:{val}", "--unsupervised", "--out",
                 str(tmp_path / f"free_{tag}"), *common],
                ["recalibrate", str(models[0]), "--data", f"images:{data}", "--out", str(tmp_path / f"bn_{tag}"),
                 "--device", "cpu", "--workers", "0", "--threads", "1", "--batch-size", "2"]]

    for command in commands("one"):
        result = run(*command)
        assert result.exit_code == 0, result.output
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
              str(free_port()), str(WORKER)]
    for command in commands("two"):
        launch += [*command, "--then"]
    done = subprocess.run(launch[:-1], capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "on 2 processes" in done.stderr
    for name in ("sweep", "free"):
        one, two = (json.loads((tmp_path / f"{name}_{tag}" / "candidates.json").read_text()) for tag in ("one", "two"))
        assert one["ranks"] == 1 and two["ranks"] == 2
        assert one["candidates"] == two["candidates"] and len(one["candidates"]) == 5 + 2  # + the 2 anchors alone
        assert ((tmp_path / f"{name}_one" / "best_recipe.yaml").read_text()
                == (tmp_path / f"{name}_two" / "best_recipe.yaml").read_text())
        assert sorted(p.name for p in (tmp_path / f"{name}_two").iterdir()) == [
            "best_recipe.yaml", "candidates.json", "candidates.md", "candidates.png"]
    one, two, before = tensors(tmp_path / "bn_one"), tensors(tmp_path / "bn_two"), tensors(models[0])
    assert one.keys() == two.keys() and all(torch.equal(one[n], two[n]) for n in one)
    assert not torch.equal(one["decode_head.batch_norm.running_mean"], before["decode_head.batch_norm.running_mean"])
    assert int(two["decode_head.batch_norm.num_batches_tracked"]) == 3  # 5 images in batches of 2, dealt to 2 ranks
    notes = [json.loads((tmp_path / f"bn_{tag}" / "config.json").read_text())["layerseg_recalibrated"]
             for tag in ("one", "two")]
    assert notes[0] == notes[1] and notes[0]["images"] == 5
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left behind
