"""`layerseg fit`: coefficients per input and depth step learned on unlabelled images, written as a recipe that
`layerseg merge` and the plain `mergekit-yaml` reproduce bit for bit; N torchrun ranks learn what one process does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from helpers import free_port, mergekit_yaml, tensors

from layerseg_merge.cli import main
from layerseg_merge.resources import DEMO_ASSETS

WORKER = Path(__file__).parent / "cli_worker.py"
IMAGES = f"images:{DEMO_ASSETS / 'target_val'}"


def recipe(tmp_path) -> Path:
    from layerseg_merge.cli.demo import recipe_for

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe_for("miniature_different_heads", False, DEMO_ASSETS)))
    return path


def fit_command(tmp_path, out: str, *options: str) -> list[str]:
    return ["fit", str(recipe(tmp_path)), "--data", IMAGES, "--limit", "6", "--out", str(tmp_path / out),
            "--device", "cpu", "--workers", "0", "--threads", "1", *options]


@pytest.mark.parametrize("objective", ["kl", "entropy"])
def test_fit_lowers_its_own_objective(tmp_path, objective):
    from layerseg_merge.eval.options import DataOptions, InferenceOptions
    from layerseg_merge.tools.fit import FitOptions, fit
    from layerseg_merge.tools.sweep import read_recipe

    setup = read_recipe(recipe(tmp_path), lambda message: None)
    result = fit(setup, DataOptions(IMAGES, limit=6, workers=0), FitOptions(steps=12, lr=0.1, images=6,
                                                                            objective=objective),
                 InferenceOptions("cpu"))
    history = result["history"]  # the same 6 images every step: the objective itself
    assert history[-1] < history[0], history
    start, end = torch.tensor(result["start"]), torch.tensor(result["coefficients"])
    assert torch.allclose(start.sum(1), torch.ones(len(start)), atol=1e-9)
    assert torch.allclose(end.sum(1), torch.ones(len(end)), atol=1e-9) and not torch.allclose(start, end)


def test_the_fitted_recipe_reproduces_the_fits_merge_through_both_commands(tmp_path):
    result = CliRunner().invoke(main, fit_command(tmp_path, "fit", "--steps", "3", "--images", "3"))
    assert result.exit_code == 0, result.output
    out = tmp_path / "fit"
    assert sorted(p.name for p in out.iterdir()) == ["fit.json", "model", "recipe.yaml"]
    written = yaml.safe_load((out / "recipe.yaml").read_text())
    assert written["parameters"]["uniform_until"] == 1.0
    depth_steps = len(json.loads((out / "fit.json").read_text())["coefficients"])
    assert all(len(entry["parameters"]["weight"]) == depth_steps for entry in written["models"])
    fitted = tensors(out / "model")
    assert CliRunner().invoke(main, ["merge", str(out / "recipe.yaml"), str(tmp_path / "again")]).exit_code == 0
    code, message = mergekit_yaml(out / "recipe.yaml", tmp_path / "plain")
    assert code == 0, message
    for other in (tensors(tmp_path / "again"), tensors(tmp_path / "plain")):
        assert other.keys() == fitted.keys() and all(torch.equal(other[n], fitted[n]) for n in fitted)


def test_two_torchrun_ranks_learn_what_one_process_learns(tmp_path):
    options = ("--steps", "2", "--images", "4")
    result = CliRunner().invoke(main, fit_command(tmp_path, "one", *options))
    assert result.exit_code == 0, result.output
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
              str(free_port()), str(WORKER), *fit_command(tmp_path, "two", *options)]
    done = subprocess.run(launch, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    one, two = (json.loads((tmp_path / name / "fit.json").read_text()) for name in ("one", "two"))
    assert one["ranks"] == 1 and two["ranks"] == 2
    assert one["history"] == two["history"] and one["coefficients"] == two["coefficients"]


@pytest.mark.parametrize("option,message", [(("--lr", "-1"), "--lr -1"), (("--data", "folder:nowhere"), "nowhere")])
def test_impossible_fits_are_refused_in_one_line(tmp_path, option, message):
    result = CliRunner().invoke(main, [*fit_command(tmp_path, "out"), *option])  # (the last value given counts)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
