"""Merges across hosts that share one backbone (the paper's cross-architecture and cross-task cases)."""

import pytest
import torch
import transformers
from helpers import expected_coefficients, mergekit_yaml, tensors, write_recipe
from hosts import HOSTS, build, swin_config, upernet

from layerseg_merge.architectures import layout_of

WEIGHTS = [1.0, 3.0]


@pytest.mark.parametrize(
    "anchor_host,other_host",
    [("mask2former_swin", "upernet_swin"), ("segformer", "segformer_model"),
     ("upernet_convnext", "convnext_classifier")],
)
def test_backbone_follows_the_formula_and_heads_are_the_anchors(tmp_path, anchor_host, other_host):
    anchor = build(anchor_host, tmp_path / "anchor", seed=0)
    other = build(other_host, tmp_path / "other", seed=1)
    recipe = write_recipe(tmp_path / "r.yaml", [anchor, other], anchor, weights=WEIGHTS,
                          uniform_until=0.25, schedule="cosine", anchor_max=0.9)
    code, text = mergekit_yaml(recipe, tmp_path / "out")
    assert code == 0, text[-3000:]
    out, a, o = tensors(tmp_path / "out"), tensors(anchor), tensors(other)
    assert sorted(out) == sorted(a)
    anchor_layout, other_layout = layout_of(str(anchor)), layout_of(str(other))
    shared = {t.name for layer in anchor_layout.layers for t in layer}
    for name, value in out.items():
        info = anchor_layout.tensors[name]
        if name in shared:
            c = expected_coefficients(WEIGHTS, 0, "backbone", info.depth, uniform_until=0.25,
                                      schedule="cosine", anchor_max=0.9)
            twin = o[other_layout.counterpart(info).name]
            torch.testing.assert_close(value, (c[0] * a[name].double() + c[1] * twin.double()).float(),
                                       msg=name)
        else:
            assert torch.equal(value, a[name]), name  # heads and host-specific tensors: the anchor's
    config = transformers.AutoConfig.from_pretrained(tmp_path / "out")
    model = getattr(transformers, config.architectures[0]).from_pretrained(tmp_path / "out").eval()
    assert type(model).__name__ == layout_of(str(anchor)).architecture
    with torch.no_grad():
        model(**HOSTS[anchor_host][1]())


def test_mismatched_backbone_config_is_refused_before_writing(tmp_path):
    anchor = build("mask2former_swin", tmp_path / "anchor", seed=0)
    torch.manual_seed(1)
    upernet(swin_config(depths=[1, 1, 1, 1])).save_pretrained(tmp_path / "other")
    recipe = write_recipe(tmp_path / "r.yaml", [anchor, tmp_path / "other"], anchor)
    code, text = mergekit_yaml(recipe, tmp_path / "out")
    assert code != 0
    assert "backbone configs differ" in text
    assert "depths: [1, 2, 1, 1] vs [1, 1, 1, 1]" in text
    assert not (tmp_path / "out").exists()


def test_different_backbone_families_are_refused(tmp_path):
    anchor = build("upernet_swin", tmp_path / "anchor", seed=0)
    other = build("upernet_convnext", tmp_path / "other", seed=1)
    recipe = write_recipe(tmp_path / "r.yaml", [anchor, other], anchor)
    code, text = mergekit_yaml(recipe, tmp_path / "out")
    assert code != 0
    assert "has a swin backbone" in text and "a convnext one" in text
    assert not (tmp_path / "out").exists()
