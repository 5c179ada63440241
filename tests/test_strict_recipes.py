"""Typos, non-finite inputs, zero weights and dtypes are errors or honoured, never silently wrong."""

import json
import shutil

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import run_in_process
from helpers import assert_one_line_error, save_model, tensors, tiny_segformer_config, tree_digest, write_recipe
from safetensors.torch import save_file

from layerseg_merge.cli import main
from layerseg_merge.engine.recipe_yaml import RecipeError

pytestmark = pytest.mark.usefixtures("inputs_untouched")  # every test: inputs untouched


def merge(*args):
    return CliRunner().invoke(main, ["merge", *map(str, args)])


def edited(recipe, change):
    data = yaml.safe_load(recipe.read_text())
    change(data)
    recipe.write_text(yaml.safe_dump(data))
    return recipe


@pytest.mark.parametrize("change,message", [
    (lambda d: d.setdefault("parameters", {}).update(uniform_untill=1.0),
     "unknown parameter 'uniform_untill' in the recipe's `parameters:` (did you mean 'uniform_until'?); "
     "layerwise_seg takes anchor_max, buffers, heads, schedule, uniform_until, weight there"),
    (lambda d: d["models"][1].update(parameters={"wieght": 5}),
     "unknown parameter 'wieght' for model"),
    (lambda d: d["models"][1].update(parameters={"uniform_until": 0.2}),
     "parameter 'uniform_until' for model"),
    (lambda d: d.update(uniform_until=1.0), "unknown recipe key 'uniform_until'"),
])
def test_misspelled_or_misplaced_parameters_are_errors(tmp_path, segformers, change, message):
    recipe = edited(write_recipe(tmp_path / "r.yaml", segformers, segformers[0]), change)
    assert_one_line_error(merge(recipe, tmp_path / "out"), message)
    assert not (tmp_path / "out").exists()


def test_plain_mergekit_refuses_misspelled_parameters_too(tmp_path, segformers):
    recipe = edited(write_recipe(tmp_path / "r.yaml", segformers, segformers[0]),
                    lambda d: d["models"][1].update(parameters={"wieght": 5}))
    with pytest.raises(RecipeError, match="unknown parameter 'wieght' for model .* takes weight there"):
        run_in_process(recipe, tmp_path / "out")


def test_a_non_finite_input_tensor_is_named(tmp_path, segformers):
    import shutil

    broken = tmp_path / "nan_model"
    shutil.copytree(segformers[2], broken)
    state = tensors(broken)
    name = "segformer.encoder.block.1.0.mlp.dense1.weight"
    state[name][0, 0] = float("nan")
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    before = tree_digest(*segformers[:2], broken)
    recipe = write_recipe(tmp_path / "r.yaml", [segformers[0], segformers[1], broken], segformers[0])
    line = assert_one_line_error(merge(recipe, tmp_path / "out"), f"tensor {name!r} of model {broken}",
                                 "NaN or infinite")
    assert "fix or re-export" in line
    assert tree_digest(*segformers[:2], broken) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan_model", "r.yaml"]


def test_all_weights_zero_is_refused(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0], weights=[0, 0, 0])
    assert_one_line_error(merge(recipe, tmp_path / "out"), "every model has weight 0")
    with pytest.raises(ValueError, match="sum to 0"):  # plain mergekit: the kernel refuses
        run_in_process(recipe, tmp_path / "out2")


def test_recipe_dtype_is_honoured_for_float_tensors(tmp_path, segformers):
    recipe = edited(write_recipe(tmp_path / "r.yaml", segformers, segformers[0]),
                    lambda d: d.update(dtype="bfloat16"))
    assert merge(recipe, tmp_path / "out").exit_code == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    out = tensors(tmp_path / "out")
    assert {t.dtype for t in out.values() if t.is_floating_point()} == {torch.bfloat16}
    name = "decode_head.batch_norm.num_batches_tracked"
    assert out[name].dtype == torch.int64 and torch.equal(out[name], tensors(segformers[0])[name])


def test_compare_keeps_reports_with_the_same_file_name_apart(tmp_path):
    for run, value in (("c1", 0.4), ("c2", 0.5)):
        (tmp_path / run).mkdir()
        (tmp_path / run / "report.json").write_text(json.dumps({"mIoU": value, "aAcc": 0.9, "mAcc": 0.6,
                                                                "per_class": {}}))
    paths = [str(tmp_path / "c1" / "report.json"), str(tmp_path / "c2" / "report.json")]
    result = CliRunner().invoke(main, ["compare", *paths])
    assert result.exit_code == 0, result.output
    assert "40.00" in result.output and "50.00" in result.output
    assert f"| {tmp_path / 'c1' / 'report'} |" in result.output
    result = CliRunner().invoke(main, ["compare", *paths, "--label", "DACS", "--label", "merged"])
    assert "| DACS | 40.00 |" in result.output and "| merged | 50.00 |" in result.output
    assert_one_line_error(CliRunner().invoke(main, ["compare", *paths, "--label", "x"]), "one per report")


def test_other_head_shape_is_still_left_out_with_heads_anchor(tmp_path, segformers):
    from transformers import SegformerForSemanticSegmentation

    other = save_model(SegformerForSemanticSegmentation, tiny_segformer_config(num_labels=7), tmp_path / "m7", 3)
    recipe = write_recipe(tmp_path / "r.yaml", [segformers[0], other], segformers[0])
    assert merge(recipe, tmp_path / "out").exit_code == 0


@pytest.mark.parametrize("weight", [".nan", ".inf", "-.inf"])
def test_non_finite_weights_are_refused_by_both_commands(tmp_path, segformers, weight):
    recipe = write_recipe(tmp_path / "r.yaml", segformers[:2], segformers[0])
    recipe.write_text(recipe.read_text().replace(f"model: {segformers[1]}\n",
                                                 f"model: {segformers[1]}\n  parameters: {{weight: {weight}}}\n"))
    assert f"weight: {weight}" in recipe.read_text()
    assert_one_line_error(merge(recipe, tmp_path / "out"), "weight must be a finite number >= 0")
    with pytest.raises(Exception, match="weight must be a finite number >= 0"):
        run_in_process(recipe, tmp_path / "out2")
    assert not (tmp_path / "out").exists()


def test_an_overflow_in_the_anchors_float16_is_named(tmp_path, segformers):
    """Finite float16 inputs whose pooled BatchNorm variance is finite in float32 but beyond float16's range."""
    models = []
    for index, mean in enumerate((-250.0, 250.0)):
        folder = tmp_path / f"half{index}"
        shutil.copytree(segformers[index], folder)
        state = {k: v.half() if v.is_floating_point() else v for k, v in tensors(folder).items()}
        state["decode_head.batch_norm.running_var"].fill_(60000.0)
        state["decode_head.batch_norm.running_mean"].fill_(mean)
        (folder / "model.safetensors").unlink()
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        models.append(folder)
    recipe = write_recipe(tmp_path / "r.yaml", models, models[0], heads="uniform", buffers="pooled")
    # pooled variance = 60000 + 250^2 = 122500: finite in float32, beyond float16's 65504
    for command in ("layerseg", "run_merge"):
        if command == "layerseg":
            line = assert_one_line_error(merge(recipe, tmp_path / "out"), "merged tensor "
                                         "'decode_head.batch_norm.running_var' overflows torch.float16")
        else:
            with pytest.raises(ValueError) as error:
                run_in_process(recipe, tmp_path / "out2")
            line = str(error.value)
        assert "although it is finite in torch.float32" in line and "dtype: float32" in line
    assert not (tmp_path / "out").exists()
    recipe = write_recipe(tmp_path / "r32.yaml", models, models[0], heads="uniform", buffers="anchor")
    assert merge(recipe, tmp_path / "anchor_buffers").exit_code == 0


def _large_models(tmp_path, segformers, value=1e6):
    """Copies of two tiny SegFormers whose first patch embedding holds ``value`` (finite in float32, beyond
    float16's 65504)."""
    models = []
    for index in range(2):
        folder = tmp_path / f"large{index}"
        shutil.copytree(segformers[index], folder)
        state = tensors(folder)
        name = next(n for n in state if n.endswith("patch_embeddings.0.proj.weight"))
        state[name].view(-1)[0] = value
        (folder / "model.safetensors").unlink()
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        models.append(folder)
    return models, name


class _KernelsInAThread:
    """mergekit's Executor driven from a worker thread, as its --multi-gpu executor runs kernels: the thread
    starts with an empty contextvars context."""

    def __init__(self, executor_class):
        self.executor_class = executor_class

    def __call__(self, *args, **kwargs):
        import concurrent.futures

        executor = self.executor_class(*args, **kwargs)
        run = executor.run

        def in_thread(quiet=False):
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                yield from pool.submit(lambda: list(run(quiet=quiet))).result()

        executor.run = in_thread
        return executor


@pytest.mark.parametrize("threaded", [False, True])
def test_an_out_dtype_that_overflows_is_refused_under_every_executor(tmp_path, segformers, monkeypatch, threaded):
    import mergekit.merge

    models, name = _large_models(tmp_path, segformers)
    if threaded:
        monkeypatch.setattr(mergekit.merge, "Executor", _KernelsInAThread(mergekit.merge.Executor))
    recipe = edited(write_recipe(tmp_path / "r.yaml", models, models[0]), lambda r: r.update(out_dtype="float16"))
    with pytest.raises(ValueError) as error:
        run_in_process(recipe, tmp_path / "out")
    assert f"merged tensor {name!r} overflows torch.float16 (the recipe's out_dtype)" in str(error.value)
    line = assert_one_line_error(merge(recipe, tmp_path / "out2"), f"merged tensor {name!r} overflows torch.float16")
    assert "out_dtype: float32" in line
    assert not (tmp_path / "out2").exists()
    from layerseg_merge import merge_in_memory

    with pytest.raises(ValueError, match=f"merged tensor {name!r} overflows torch.float16 .the recipe's out_dtype"):
        merge_in_memory(recipe)


def test_a_recipe_dtype_that_overflows_an_input_is_named_as_the_cast(tmp_path, segformers):
    """`dtype: float16` makes mergekit cast each input: a finite float32 input that overflows is the cast's fault,
    not the model's."""
    models, name = _large_models(tmp_path, segformers)
    recipe = edited(write_recipe(tmp_path / "r.yaml", models, models[0]), lambda r: r.update(dtype="float16"))
    line = assert_one_line_error(merge(recipe, tmp_path / "out"), f"tensor {name!r} of model {models[0]}",
                                 "overflows torch.float16 (the recipe's dtype)", "finite as stored (torch.float32)",
                                 "dtype: float32")
    assert "holds NaN" not in line
    with pytest.raises(ValueError, match="overflows torch.float16"):
        run_in_process(recipe, tmp_path / "out2")
