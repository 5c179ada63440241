"""Recipes that mergekit would read silently wrong are refused by `layerseg merge` and the plain
`mergekit-yaml` alike (run in-process through its own click command), with one line naming the cause."""

import logging

import pytest
import torch
import yaml
from click.testing import CliRunner
from helpers import assert_one_line_error, mergekit_yaml, save_model, tensors, tiny_segformer_config, write_recipe

from layerseg_merge.cli import main

pytestmark = pytest.mark.usefixtures("inputs_untouched")


def merge(*args):
    return CliRunner().invoke(main, ["merge", *map(str, args)])


def refused_by_both(tmp_path, recipe, *fragments):
    assert_one_line_error(merge(recipe, tmp_path / "out"), *fragments)
    code, message = mergekit_yaml(recipe, tmp_path / "plain")
    assert code != 0, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert not (tmp_path / "out").exists() and not (tmp_path / "plain").exists()


def base_text(segformers, **parameters) -> str:
    recipe = {"merge_method": "layerwise_seg", "base_model": str(segformers[0]),
              "models": [{"model": str(p)} for p in segformers[:2]]}
    if parameters:
        recipe["parameters"] = parameters
    return yaml.safe_dump(recipe, sort_keys=False)


def test_a_key_given_twice_is_refused(tmp_path, segformers):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(base_text(segformers) + "parameters:\n  heads: uniform\nparameters:\n  uniform_until: 0.2\n")
    refused_by_both(tmp_path, recipe, "key 'parameters' appears twice (lines", "merge the two into one")


def test_misplaced_top_level_parameters_are_refused(tmp_path, segformers):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(base_text(segformers) + "uniform_until: 0.0\n")
    refused_by_both(tmp_path, recipe, "unknown recipe key 'uniform_until'", "go under `parameters:`")


def test_an_alias_bomb_is_refused_at_once(tmp_path, segformers):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(base_text(segformers) + "\n".join(lines).replace("a0:", "tokenizer_source:", 1) + "\n")
    assert_one_line_error(merge(recipe, tmp_path / "out"), "expands to more than 100000 values")


def test_deep_nesting_is_refused_in_one_line(tmp_path, segformers):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(base_text(segformers) + "tokenizer_source: " + "[" * 5000 + "]" * 5000 + "\n")
    assert_one_line_error(merge(recipe, tmp_path / "out"), "nested")


@pytest.mark.parametrize("parameters,fragment", [
    ({"uniform_until": []}, "parameter 'uniform_until' in the recipe's `parameters:` is an empty list"),
    ({"anchor_max": [0.5, 1.5]}, "parameter 'anchor_max' in the recipe's `parameters:`: anchor_max must lie in "
                                 "[0, 1]; got 1.5"),
    ({"uniform_until": [{"filter": "decode_head", "value": []}]}, "'uniform_until' in the recipe's "
                                                                   "`parameters:` is an empty list"),
    ({"heads": ["anchor", "everything"]}, "parameter 'heads' in the recipe's `parameters:`: unknown heads "
                                          "'everything'; use one of: anchor, schedule, uniform"),
    ({"weight": "abc"}, "parameter 'weight' in the recipe's `parameters:`: weight must be a number; got 'abc'"),
])
def test_impossible_parameter_values_are_refused(tmp_path, segformers, parameters, fragment):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(base_text(segformers, **parameters))
    refused_by_both(tmp_path, recipe, fragment)


def test_an_integer_dtype_is_refused(tmp_path, segformers):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(base_text(segformers) + "dtype: int64\n")
    refused_by_both(tmp_path, recipe, "dtype: int64 is not a floating-point dtype")


def test_a_plus_in_a_model_path_is_explained(tmp_path, segformers):
    import shutil

    odd = tmp_path / "dacs+mic"
    shutil.copytree(segformers[1], odd)
    recipe = write_recipe(tmp_path / "r.yaml", [segformers[0], odd], segformers[0])
    assert_one_line_error(merge(recipe, tmp_path / "out"), f"model path '{odd}' as model {tmp_path / 'dacs'} with "
                          "the LoRA adapter mic", "rename the folder without '+'")


def test_a_filter_that_matches_nothing_is_named(tmp_path, segformers, caplog):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(base_text(segformers, uniform_until=[{"filter": "decoder_head", "value": 0.1},
                                                           {"value": 0.5}]))
    with caplog.at_level(logging.WARNING):
        result = merge(recipe, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "the filter 'decoder_head' of parameter 'uniform_until' matches no tensor of the anchor" in caplog.text


def test_heads_with_other_class_orders_are_not_averaged(tmp_path, segformers):
    from transformers import SegformerForSemanticSegmentation

    names = ["road", "person", "car", "sky", "tree"]
    models = []
    for index, order in enumerate((names, names[::-1])):
        config = tiny_segformer_config(id2label=dict(enumerate(order)), label2id={n: i for i, n in enumerate(order)})
        models.append(save_model(SegformerForSemanticSegmentation, config, tmp_path / f"labels{index}", seed=index))
    recipe = write_recipe(tmp_path / "r.yaml", models, models[0], heads="uniform")
    assert_one_line_error(merge(recipe, tmp_path / "out"), "predict different classes (class 0: 'road' vs 'tree')",
                          "use `heads: anchor`")
    recipe = write_recipe(tmp_path / "r.yaml", models, models[0], heads="anchor")
    assert merge(recipe, tmp_path / "out").exit_code == 0
    assert torch.equal(tensors(tmp_path / "out")["decode_head.classifier.weight"],
                       tensors(models[0])["decode_head.classifier.weight"])


def test_huge_weights_merge_like_their_ratios(tmp_path, segformers):
    """A regression guard: only the ratio of the weights counts, whatever their size."""
    from layerseg_merge import merge_in_memory

    unit = merge_in_memory(write_recipe(tmp_path / "a.yaml", segformers, segformers[0], weights=[1, 1, 2]))
    huge = merge_in_memory(write_recipe(tmp_path / "b.yaml", segformers, segformers[0], weights=[1e38, 1e38, 2e38]))
    assert all(torch.equal(unit[n], huge[n]) for n in unit)


@pytest.mark.parametrize("name,fragment", [
    ("x" * 240, "bytes long; this file system allows 255 per name"),
    ("fresh/..", "ends in '.' or '..'"),
])
def test_unusable_output_names_are_explained(tmp_path, segformers, name, fragment):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    (tmp_path / "target").mkdir()
    assert_one_line_error(merge(recipe, tmp_path / "target" / name), fragment)


def test_a_previous_pth_output_can_be_replaced_with_overwrite(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    old = tmp_path / "merged.pth"
    old.write_bytes(b"an earlier export")
    line = assert_one_line_error(merge(recipe, old, "--overwrite"), "is not an mmseg checkpoint")
    assert "is a file" not in line and old.read_bytes() == b"an earlier export"


def test_plain_mergekit_yaml_refuses_an_alias_bomb_before_validating_it(tmp_path, segformers):
    """Placed where mergekit's validation fails, a bomb made stock mergekit-yaml render its error for minutes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(base_text(segformers) + "\n".join(lines) + "\nchat_template: *a8\n")
    code, text = mergekit_yaml(recipe, tmp_path / "out")
    # ours (stock mergekit) says "values", the upstream patch "YAML nodes"
    assert code != 0 and "expands to more than 100000" in text
    assert not (tmp_path / "out").exists()


def test_weights_whose_sum_overflows_merge_as_equal_weights(tmp_path, segformers):
    """Weights 1e308, 1e308 are finite and equal: the merge is that of weights 1, 1 (was all zeros)."""
    from layerseg_merge import merge_in_memory

    huge = merge_in_memory(write_recipe(tmp_path / "huge.yaml", segformers[:2], segformers[0], [1e308, 1e308]))
    ones = merge_in_memory(write_recipe(tmp_path / "ones.yaml", segformers[:2], segformers[0], [1.0, 1.0]))
    assert huge.keys() == ones.keys()
    assert all(torch.equal(huge[name], ones[name]) for name in ones)


@pytest.mark.parametrize("heads,warned", [("uniform", True), ("schedule", True), ("anchor", False)])
def test_a_model_left_out_of_a_head_module_is_named(tmp_path, segformers, caplog, heads, warned):
    """An input of the anchor's host that lacks a head tensor takes no part in that module: say so, naming it."""
    import shutil

    from safetensors.torch import save_file

    partial = tmp_path / "partial"
    shutil.copytree(segformers[1], partial)
    state = tensors(partial)
    del state["decode_head.classifier.bias"]
    save_file(state, partial / "model.safetensors", metadata={"format": "pt"})
    recipe = write_recipe(tmp_path / "r.yaml", [segformers[0], partial, segformers[2]], segformers[0], heads=heads)
    with caplog.at_level(logging.WARNING):
        result = merge(recipe, tmp_path / "out")
    assert result.exit_code == 0, result.output
    message = (f"model {partial} lacks decode_head.classifier.bias of the anchor's head module "
               f"'decode_head.classifier', so it is left out of that module (heads: {heads})")
    assert (message in caplog.text) == warned, caplog.text
    assert caplog.text.count("left out of that module") == warned  # once, not per tensor of the module
    merged = tensors(tmp_path / "out")
    if heads == "uniform":  # the module merges the anchor and the third model only
        expected = (tensors(segformers[0])["decode_head.classifier.weight"]
                    + tensors(segformers[2])["decode_head.classifier.weight"]) / 2
        assert torch.allclose(merged["decode_head.classifier.weight"], expected)
