"""The option objects of eval, sweep and recalibrate (what to run on, how to infer): each impossible value
is refused in one line by the object, from Python and through the command line, before any work."""

import math

import pytest
import yaml
from click.testing import CliRunner
from helpers import assert_one_line_error

from layerseg_merge.cli import main
from layerseg_merge.eval.options import DataOptions, InferenceOptions
from layerseg_merge.tools.sweep import SweepOptions

SLIDE = "CROP and STRIDE must be positive and STRIDE at most CROP"
IMPOSSIBLE = [
    (DataOptions, dict(data="folder:x", limit=0), "a limit of 0 images leaves none to use; give at least 1"),
    (DataOptions, dict(data="folder:x", limit=-3), "a limit of -3 images leaves none to use"),
    (DataOptions, dict(data="folder:x", workers=-1), "--workers -1: give 0 (decode in this process) or more"),
    (DataOptions, dict(data="folder:x", workers=1.5), "--workers 1.5: give 0"),
    (InferenceOptions, dict(batch_size=0), "--batch-size 0: give at least 1 image per batch"),
    (InferenceOptions, dict(batch_size=True), "--batch-size True: give at least 1"),
    (InferenceOptions, dict(amp="fp8"), "--amp fp8: use off, bf16 or fp16"),
    (InferenceOptions, dict(preprocess="gpu"), "preprocess must be auto, device or processor, not 'gpu'"),
    (InferenceOptions, dict(slide=(32, 0)), f"--slide 32,0: {SLIDE}"),
    (InferenceOptions, dict(slide=(16, 32)), f"--slide 16,32: {SLIDE}"),
    (InferenceOptions, dict(slide=(-8, 4)), f"--slide -8,4: {SLIDE}"),
    (InferenceOptions, dict(slide=(512,)), "--slide (512,): give CROP,STRIDE, two whole numbers of pixels"),
    (InferenceOptions, dict(slide=(64.5, 32)), "--slide 64.5,32: give CROP,STRIDE, two whole numbers"),
    (InferenceOptions, dict(compile="yes"), "compile must be True or False, not 'yes'"),
    (SweepOptions, dict(metric="mAP"), "--metric must be mIoU or PQ, not 'mAP'"),
    (SweepOptions, dict(budget=0), "--budget 0: score at least 1 candidate"),
    (SweepOptions, dict(cache_gb=-1.0), "--cache-gb must be 0 or more, not -1"),
    (SweepOptions, dict(cache_gb=math.nan), "--cache-gb must be 0 or more, not nan"),
]


@pytest.mark.parametrize("kind, values, message", IMPOSSIBLE)
def test_an_impossible_value_is_refused_by_its_option_object_in_one_line(kind, values, message):
    with pytest.raises(ValueError) as caught:
        kind(**values)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_possible_values_are_kept_and_a_slide_list_becomes_a_pair():
    infer = InferenceOptions("cpu", 1, "bf16", [512, 341], "processor", True)
    assert (infer.batch_size, infer.slide, infer.compile) == (1, (512, 341), True)
    assert DataOptions("folder:x", "test", 1, 0).limit == 1 and SweepOptions(budget=1, cache_gb=0).cache_gb == 0


@pytest.fixture()
def nothing_runs(monkeypatch):
    """Refusals come before the work: evaluating, sweeping or recalibrating fails the test."""
    import layerseg_merge.eval.evaluate as evaluate_module
    import layerseg_merge.tools.recalibrate as recalibrate_module
    import layerseg_merge.tools.sweep as sweep_module

    def refuse(name):
        return lambda *args, **kwargs: pytest.fail(f"{name} ran")

    for module, name in ((evaluate_module, "evaluate"), (sweep_module, "read_recipe"),
                         (recalibrate_module, "recalibrate_directory")):
        monkeypatch.setattr(module, name, refuse(name))


def run(*args):
    return CliRunner().invoke(main, [*map(str, args)])


@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "--batch-size 0: give at least 1 image per batch"),
    ("--workers", "-1", "--workers -1: give 0 (decode in this process) or more DataLoader workers"),
    ("--slide", "32,0", f"--slide 32,0: {SLIDE}"),
])
def test_eval_refuses_impossible_options_in_one_line(tmp_path, segformers, nothing_runs, option, value, message):
    assert_one_line_error(run("eval", segformers[0], "--data", f"folder:{tmp_path}", option, value), message)


@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "--batch-size 0: give at least 1 image per batch"),
    ("--workers", "-2", "--workers -2: give 0 (decode in this process) or more"),
    ("--limit", "0", "a limit of 0 images leaves none to use; give at least 1 (or no limit, for all)"),
])
def test_sweep_refuses_impossible_options_in_one_line(tmp_path, nothing_runs, option, value, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("merge_method: layerwise_seg\n")
    line = assert_one_line_error(run("sweep", recipe, "--data", f"folder:{tmp_path}", "--out", tmp_path / "out",
                                     option, value), message)
    assert "sweep failed" not in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "--batch-size 0: give at least 1 image per batch"),
    ("--workers", "-1", "--workers -1: give 0"),
])
def test_recalibrate_refuses_impossible_options_in_one_line(tmp_path, segformers, nothing_runs, option, value,
                                                            message):
    assert_one_line_error(run("recalibrate", segformers[0], "--data", f"images:{tmp_path}", "--out",
                              tmp_path / "out", option, value), message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, value", [("--amp", "fp8"), ("--preprocess", "gpu"), ("--task", "depth")])
def test_eval_choices_are_refused_by_click(tmp_path, segformers, nothing_runs, option, value):
    result = run("eval", segformers[0], "--data", f"folder:{tmp_path}", option, value)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output


@pytest.mark.parametrize("infer", [InferenceOptions(amp="bf16"), InferenceOptions(slide=(32, 16)),
                                   InferenceOptions(compile=True)])
def test_recalibration_refuses_inference_options_it_cannot_use(tmp_path, models, infer):
    from layerseg_merge.tools.recalibrate import recalibrate_directory

    with pytest.raises(ValueError, match="recalibration runs the model in float32 on whole images: amp, slide and "
                                         "compile do not apply"):
        recalibrate_directory(models[0], DataOptions(f"images:{tmp_path}", workers=0), tmp_path / "out", tmp_path,
                              infer, progress=False)
    assert not (tmp_path / "out").exists()


def test_the_sweep_infers_as_its_inference_options_say(tmp_path):
    """Sliding windows change the demo model's scores; the sweep's score of each candidate is evaluate()'s with
    the same options."""
    from layerseg_merge.cli.demo import recipe_for
    from layerseg_merge.engine.in_memory import LoadedInputs
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.resources import DEMO_ASSETS
    from layerseg_merge.tools.sweep import candidates, read_recipe, run_sweep

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(recipe_for("miniature_different_heads", False, DEMO_ASSETS)))
    setup = read_recipe(recipe, lambda message: None)
    on = DataOptions(f"folder:{DEMO_ASSETS / 'target_val'}", limit=2, workers=0)
    grid = {"uniform_until": [1.0], "anchor_max": [1.0], "schedule": ["linear"]}
    search = SweepOptions(grid=grid, anchors=[0])
    (uniform,) = candidates(grid, [0], setup.heads, setup.buffers)
    merged = LoadedInputs(setup.dirs, setup.weights).merge(uniform)
    scores = {}
    for slide in (None, (48, 16)):
        infer = InferenceOptions("cpu", 2, slide=slide)
        rows = run_sweep(setup, on, search, infer, progress=False)["candidates"]
        (row,) = [r for r in rows if r["uniform_until"] == 1.0 and r["anchor"] == setup.models[0]]
        scores[slide] = row["score"]
        assert row["score"] == evaluate(setup.dirs[0], on, "semantic", infer, progress=False, tensors=merged)["mIoU"]
    assert scores[None] != scores[(48, 16)]


def test_the_former_plain_arguments_are_refused_naming_the_option_object(segformers):
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.eval.inference import Segmenter

    with pytest.raises(TypeError, match=r"give the data as DataOptions\('folder:x'\) \(with split, limit, workers\)"):
        evaluate(segformers[0], "folder:x")
    with pytest.raises(TypeError, match=r"give how to infer as InferenceOptions\(...\), not 'cpu'"):
        Segmenter(segformers[0], "cpu")
