"""One answer to "is this model panoptic?" for the card, the demo and the sweep (config.json, read once)."""

import json

import pytest

from layerseg_merge.model_info import ModelInfo


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
