"""Every bad input gets a message naming what is wrong and what to do; nothing half-written."""

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import run_in_process
from helpers import save_model, tiny_segformer_config, write_recipe

from layerseg_merge.cli import main


def edit(recipe, **changes):
    data = yaml.safe_load(recipe.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    recipe.write_text(yaml.safe_dump(data))
    return recipe


def merge_error(recipe, out):
    with pytest.raises(Exception) as info:
        run_in_process(recipe, out)
    assert not (out / "config.json").exists()
    return str(info.value)


def test_missing_base_model(tmp_path, segformers):
    recipe = edit(write_recipe(tmp_path / "r.yaml", segformers, segformers[0]), base_model=None)
    assert "layerwise_seg needs an anchor" in merge_error(recipe, tmp_path / "out")
    result = CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "o2")])
    assert result.exit_code != 0 and "add `base_model:`" in result.output


def test_anchor_not_among_the_models(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers[1:], segformers[0])
    result = CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "is not among the models; list it under `models:`" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "parameters,message",
    [
        ({"schedule": "exponential"}, "unknown schedule 'exponential'; use one of: linear, cosine, step"),
        ({"heads": "drop"}, "unknown heads 'drop'; use one of: anchor, schedule, uniform"),
        ({"buffers": "reset"}, "unknown buffers 'reset'; use one of: pooled, anchor, mean"),
        ({"uniform_until": 1.5}, "uniform_until must lie in [0, 1]; got 1.5"),
        ({"anchor_max": -0.2}, "anchor_max must lie in [0, 1]; got -0.2"),
    ],
)
def test_bad_parameters(tmp_path, segformers, parameters, message):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0], **parameters)
    assert message in merge_error(recipe, tmp_path / "out")


def test_negative_weight(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers[:2], segformers[0], weights=[1.0, -1.0])
    assert "weight must be a finite number >= 0; got -1.0" in merge_error(recipe, tmp_path / "out")


def test_fewer_than_two_models(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers[:1], segformers[0])
    assert "layerwise_seg merges at least 2 models" in merge_error(recipe, tmp_path / "out")


def test_head_shape_mismatch_is_an_error_unless_heads_anchor(tmp_path, segformers):
    from helpers import tensors
    from transformers import SegformerForSemanticSegmentation

    other = save_model(SegformerForSemanticSegmentation, tiny_segformer_config(num_labels=7),
                       tmp_path / "seven", seed=3)
    recipe = write_recipe(tmp_path / "r.yaml", [segformers[0], other], segformers[0], heads="uniform")
    message = merge_error(recipe, tmp_path / "out")
    assert "shape mismatch for tensor 'decode_head.classifier." in message
    assert str(other) in message and str(segformers[0]) in message and "`heads: anchor`" in message
    # With heads: anchor the other label set is simply left out (a 7-class model into a 5-class anchor).
    recipe = write_recipe(tmp_path / "r2.yaml", [segformers[0], other], segformers[0], heads="anchor")
    out = tensors(run_in_process(recipe, tmp_path / "out2"))
    anchor = tensors(segformers[0])
    assert torch.equal(out["decode_head.classifier.weight"], anchor["decode_head.classifier.weight"])
    name = "segformer.encoder.patch_embeddings.0.proj.weight"
    torch.testing.assert_close(out[name], (anchor[name] + tensors(other)[name]) / 2)


def test_backbone_config_mismatch_names_the_first_difference(tmp_path, segformers):
    from transformers import SegformerForSemanticSegmentation

    other = save_model(SegformerForSemanticSegmentation, tiny_segformer_config(depths=[1, 1, 1, 1]),
                       tmp_path / "shallow", seed=3)
    recipe = write_recipe(tmp_path / "r.yaml", [segformers[0], other], segformers[0])
    message = merge_error(recipe, tmp_path / "out")
    assert "backbone configs differ" in message and "depths: [1, 2, 1, 1] vs [1, 1, 1, 1]" in message
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_unsupported_architecture(tmp_path, segformers):
    from transformers import BertConfig, BertModel

    bert = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=8, vocab_size=10)).save_pretrained(bert)
    recipe = write_recipe(tmp_path / "r.yaml", [segformers[0], bert], segformers[0])
    result = CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "'BertModel' is not supported by layerseg-merge; supported:" in result.output
    assert "SegformerForSemanticSegmentation" in result.output


def test_failed_cli_merge_leaves_nothing_behind(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0], schedule="bad")
    result = CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "out")])
    assert result.exit_code != 0 and "unknown schedule 'bad'" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_bad_yaml_names_the_file(tmp_path):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("merge_method: [layerwise_seg\n")
    result = CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "out")])
    assert result.exit_code != 0 and f"{recipe}: not valid YAML" in result.output


def test_architectures_command_lists_hosts_and_backbones():
    result = CliRunner().invoke(main, ["architectures"])
    assert result.exit_code == 0
    for name in ("Mask2FormerForUniversalSegmentation", "UperNetForSemanticSegmentation", "Dinov2Backbone",
                 "SegformerModel", "swin, maskformer-swin"):
        assert name in result.output


def test_cli_checks_output_holds_exactly_the_anchors_tensors(tmp_path, segformers):
    from layerseg_merge.api import MergeFailed, check_output_names

    out = tmp_path / "partial"
    out.mkdir()
    from helpers import tensors
    from safetensors.torch import save_file
    kept = dict(list(tensors(segformers[0]).items())[:-1])
    save_file(kept, out / "model.safetensors")
    with pytest.raises(MergeFailed, match=r"missing \['segformer.encoder.patch_embeddings"):
        check_output_names(out, str(segformers[0]))
