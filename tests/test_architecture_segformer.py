"""The SegFormer definition covers every tensor of the files, with DESIGN.md depths."""

import pytest
from helpers import save_model, segformer_depths, tensors, tiny_segformer_config

from layerseg_merge.architectures import UnsupportedArchitecture, layout_of


@pytest.mark.parametrize("host", ["SegformerForSemanticSegmentation", "SegformerModel"])
def test_every_tensor_is_covered_once_with_its_depth(tmp_path, host):
    import transformers

    config = tiny_segformer_config()
    path = save_model(getattr(transformers, host), config, tmp_path / host, seed=0)
    layout = layout_of(str(path))

    names = list(tensors(path))
    listed = [t.name for layer in layout.layers for t in layer] + [t.name for t in layout.heads]
    assert sorted(listed) == sorted(names)  # exactly once each
    oracle = segformer_depths(config)
    for name in names:
        role, depth = oracle(name)
        info = layout.tensors[name]
        assert info.role == role, name
        assert info.depth == pytest.approx(depth) if depth is not None else info.depth is None
    assert len(layout.layers) == sum(config.depths)


def test_depth_is_monotone_in_forward_order_and_spans_zero_to_one(segformers):
    layout = layout_of(str(segformers[0]))
    depths = [t.depth for layer in layout.layers for t in layer]
    assert depths == sorted(depths)
    assert depths[0] == 0.0 and depths[-1] == 1.0
    assert "segformer.encoder.patch_embeddings.0.proj.weight" in {t.name for t in layout.layers[0]}
    assert layout.tensors["segformer.encoder.layer_norm.3.weight"].depth == 1.0


def test_stages_without_spatial_reduction_have_no_sr_tensors(segformers):
    layout = layout_of(str(segformers[0]))
    sr = [n for n in layout.tensors if ".attention.self.sr." in n]
    assert sr and all(n.startswith(("segformer.encoder.block.0.", "segformer.encoder.block.1.")) for n in sr)


def test_heads_are_everything_after_the_backbone(segformers):
    layout = layout_of(str(segformers[0]))
    assert {t.name.split(".")[0] for t in layout.heads} == {"decode_head"}


def test_unsupported_architecture_lists_the_supported_ones(tmp_path):
    from transformers import BertConfig, BertModel

    path = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=8, vocab_size=10)).save_pretrained(path)
    with pytest.raises(UnsupportedArchitecture, match="'BertModel' is not supported.*SegformerModel"):
        layout_of(str(path))
