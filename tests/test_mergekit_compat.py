"""mergekit_compat: each runtime change of mergekit is installed exactly where mergekit lacks its feature.

On the pinned mergekit 0.1.5 every workaround is active; with the upstream series applied
(`bash upstream/check.sh` runs this file on the patched tree) none is, and the plugin works
through mergekit's public hooks. What a fresh interpreter installs, with the start-up hook and without:
tests/test_startup.py.
"""

from pathlib import Path

from layerseg_merge import mergekit_compat
from layerseg_merge.mergekit_compat import WORKAROUNDS, lacks


def test_features_are_all_missing_or_all_present():
    missing = [name for name in WORKAROUNDS if lacks(name)]
    assert missing in (list(WORKAROUNDS), []), f"a partly patched mergekit: {missing}"


def test_each_workaround_is_in_place_exactly_when_active():
    import mergekit.merge
    from mergekit.architecture import arch_info_for_config
    from mergekit.common import ModelReference
    from mergekit.io.tasks import SaveTensor
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.task_adapter import ExecuteMergeMethodTask
    from mergekit.plan import MergePlanner
    from transformers import SegformerConfig

    import layerseg_merge
    from layerseg_merge.architectures.mergekit_glue import SEGMENTATION_ARCHITECTURE
    from layerseg_merge.method import layerwise_seg

    layerseg_merge.register()
    tagged = {
        "hub_offline": ModelReference.local_path,
        "kernel_inputs": ExecuteMergeMethodTask.execute,
        "model_card": mergekit.merge.generate_card,
        "recipe_source": mergekit.merge.run_merge,
        "config_cache": ModelReference.config,
        "out_dtype_check": SaveTensor.execute,
    }
    for name, function in tagged.items():
        assert (getattr(function, "_layerseg", None) == name) == lacks(name), name
    planner_wrapped = getattr(MergePlanner.__init__, "_layerseg", None) == "planner"
    assert planner_wrapped == any(lacks(n) for n in ("parameter_checks", "output_path", "model_card"))
    # either way mergekit resolves our hosts to our definition and layerwise_seg to our method
    config = SegformerConfig(architectures=["SegformerForSemanticSegmentation"])
    assert arch_info_for_config(config) is SEGMENTATION_ARCHITECTURE
    assert {m.spec.name: m for m in registry.registered_methods()}["layerwise_seg"] is layerwise_seg
    assert set(mergekit_compat.active()) <= {name for name in WORKAROUNDS if lacks(name)}


def test_every_workaround_names_a_patch_of_the_series():
    upstream = Path(__file__).resolve().parents[1] / "upstream"
    patches = {p.name for p in upstream.glob("*.patch")} if upstream.is_dir() else set(WORKAROUNDS.values())
    assert set(WORKAROUNDS.values()) <= patches
    assert len(WORKAROUNDS) == 12


def test_an_inputs_config_is_parsed_once_per_file_state_and_handed_out_as_copies(tmp_path, monkeypatch):
    """mergekit asks for an input's config once per tensor the input lacks; each answer is the file's."""
    import transformers
    from mergekit.common import ModelReference

    import layerseg_merge

    layerseg_merge.register()
    transformers.SegformerConfig(num_labels=3).save_pretrained(tmp_path)
    model = ModelReference.parse(str(tmp_path))
    calls = []
    parse = transformers.AutoConfig.from_pretrained
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *a, **k: calls.append(a) or parse(*a, **k))
    first = model.config()
    first.num_labels = 7  # a caller's change stays its own
    assert model.config().num_labels == 3
    if lacks("config_cache"):
        assert len(calls) == 1
    transformers.SegformerConfig(num_labels=5).save_pretrained(tmp_path)  # a new file state
    assert model.config().num_labels == 5
