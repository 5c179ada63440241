"""One answer to "is this model panoptic?" for the card, the demo and the sweep (config.json, read once)."""

import json

import pytest

from layerseg_merge.models.info import ModelInfo


@pytest.mark.parametrize("config,gives_panoptic,task", [
    ({"model_type": "segformer", "architectures": ["SegformerForSemanticSegmentation"]}, False, "semantic"),
    ({"model_type": "segformer", "architectures": ["SegformerForSemanticSegmentation"],
      "panoptic_head": {"type": "center_offset", "num_classes": 6, "thing_ids": [4, 5]}}, True, "panoptic"),
    ({"model_type": "mask2former", "architectures": ["Mask2FormerForUniversalSegmentation"]}, True, "panoptic"),
    ({"model_type": "maskformer", "architectures": ["MaskFormerForInstanceSegmentation"]}, True, "panoptic"),
    ({"model_type": "segformer", "architectures": ["EDAPSForPanopticSegmentation"],
      "layerseg_mmseg": {"kind": "edaps"}}, False, "panoptic"),  # panoptic, but eval cannot run it
    ({"model_type": "upernet", "architectures": ["UperNetForSemanticSegmentation"]}, False, "semantic"),
])
def test_task_and_panoptic_scoring_come_from_the_config(tmp_path, config, gives_panoptic, task):
    (tmp_path / "config.json").write_text(json.dumps(config))
    info = ModelInfo.from_dir(tmp_path)
    assert (info.gives_panoptic, info.task) == (gives_panoptic, task)


def test_the_shipped_models_agree_with_the_demo():
    from layerseg_merge.resources import DEMO_ASSETS

    models = DEMO_ASSETS / "models"
    assert [m.name for m in sorted(models.iterdir()) if ModelInfo.from_dir(m).gives_panoptic] == ["panoptic"]


def test_a_registered_loader_runs_the_models_it_claims(tmp_path, monkeypatch):
    """A format adds its runnable model through the registry; every other directory keeps its loader."""
    import torch

    from layerseg_merge.models import loading

    monkeypatch.setattr(loading, "LOADERS", list(loading.LOADERS))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "toy", "toy_kind": True}))
    built = []

    def load_toy(model_dir, info, tensors):
        built.append((model_dir, info.model_type, tensors))
        return torch.nn.Identity().train()

    assert loading.loader_for(ModelInfo.from_dir(tmp_path)).name == "transformers"
    loading.register_loader("toy", lambda info: info.model_type == "toy", load_toy)
    model = loading.load_model(tmp_path, tensors={"w": torch.ones(1)})
    assert isinstance(model, torch.nn.Identity) and not model.training
    assert built == [(tmp_path, "toy", {"w": torch.ones(1)})]
    with pytest.raises(ValueError, match="'toy' is already registered"):
        loading.register_loader("toy", lambda info: True, load_toy)


def test_imported_heads_choose_the_mmseg_loader(tmp_path):
    from layerseg_merge.models.loading import loader_for

    for kind, loader in (("daformer", "mmseg_uda"), ("hrda", "mmseg_uda"), ("edaps", "mmseg_uda"),
                         ("segformer", "mmseg_segformer")):
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "segformer",
                                                          "layerseg_mmseg": {"kind": kind}}))
        assert loader_for(ModelInfo.from_dir(tmp_path)).name == loader, kind
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "segformer"}))
    assert loader_for(ModelInfo.from_dir(tmp_path)).name == "transformers"
