"""mergekit_compat: each runtime change of mergekit is installed exactly where mergekit lacks its feature.

Each workaround is detected on its own, by the feature or the behaviour it makes up for, so any subset of
the upstream series may be applied: on mergekit 0.1.5 every workaround is active; with the whole series
(`bash upstream/check.sh` runs this file on the patched tree) none is, and the plugin works through
mergekit's public hooks; with half of it (check.sh again) the rest. What a fresh interpreter installs,
with the start-up hook and without: tests/test_startup.py.
"""

import ast
from pathlib import Path

from layerseg_merge.plugin import compat as mergekit_compat
from layerseg_merge.plugin.compat import WORKAROUNDS, lacks

TESTS = Path(__file__).resolve().parent
# What each workaround makes work, proven by a test that holds with and without it (on a mergekit that lacks the
# feature the workaround supplies it; on one that has it, mergekit does): every workaround is tested on its own.
BEHAVIOUR = {
    "tuple_aliases": "test_mmseg.py::test_daformer_head_lines_up_with_an_hrda_anchors_head",
    "hub_offline": "test_hub.py::test_recipe_with_hub_ids_merges_from_the_cache_with_both_commands",
    "plan_in_memory": "test_engine.py::test_every_mergeable_pair_merges_the_same_through_every_path",
    "parameter_checks": "test_strict_recipes.py::test_plain_mergekit_refuses_misspelled_parameters_too",
    "output_path": "test_output_safety.py::test_plain_mergekit_yaml_refuses_an_input_as_output",
    "kernel_inputs": "test_merge.py::test_integer_tensors_are_the_anchors_even_with_a_float_merge_dtype",
    "architecture_registry": "test_architectures.py::test_uniform_recipe_through_mergekit_yaml_is_the_plain_mean",
    "startup_hook": "test_startup.py::test_import_layerseg_merge_is_cheap_and_registers_when_mergekit_loads",
    "model_card": "test_card.py::test_plain_mergekit_yaml_writes_our_card_too",
    "recipe_source": "test_recipe_checks.py::test_a_key_given_twice_is_refused",
    "config_cache": "test_mergekit_compat.py::test_an_inputs_config_is_parsed_once_per_file_state",
    "out_dtype_check": "test_strict_recipes.py::test_an_out_dtype_that_overflows_is_refused_under_every_executor",
}


def test_every_workaround_has_a_test_of_what_it_makes_work():
    assert set(BEHAVIOUR) == set(WORKAROUNDS)
    for name, test in BEHAVIOUR.items():
        file, function = test.split("::")
        defined = {node.name for node in ast.walk(ast.parse((TESTS / file).read_text()))
                   if isinstance(node, ast.FunctionDef)}
        assert function in defined, (name, test)


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
    from layerseg_merge.plugin.architectures import SEGMENTATION_ARCHITECTURE
    from layerseg_merge.plugin.method import layerwise_seg

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


def test_an_inputs_config_is_parsed_once_per_file_state(tmp_path, monkeypatch):
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
