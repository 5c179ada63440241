"""One merge engine: `layerseg merge`, `merge_in_memory` and the sweep's in-memory merges agree bit for bit.

Every pair of hosts of the architecture table that can merge (the same backbone config) is merged
with each `heads:` policy (the anchor alternating between the two hosts) in memory through mergekit
(`merge_in_memory`) and through the sweep's `LoadedInputs`, and once per pair by `merge` onto disk.
"""

import itertools

import pytest
import torch
from helpers import tensors, write_recipe
from hosts import HOSTS, build
from mmseg_fixtures import TINY_HEADS, daformer_checkpoint, save_checkpoint
from test_mmseg import SMALL, import_, small_hf_segformer

from layerseg_merge.architectures import check_compatible, layout_of
from layerseg_merge.engine.in_memory import Candidate, LoadedInputs
from layerseg_merge.engine.settings import ScheduleSettings

POLICIES = ("anchor", "schedule", "uniform")
BUFFERS = ("pooled", "anchor", "mean")


def _segformer_family(root):
    """SegFormer hosts on one MiT config: transformers' three classes and imported DAFormer / HRDA / EDAPS."""
    import transformers as T

    models = {"segformer": small_hf_segformer(root / "segformer", seed=0)}
    for index, cls in enumerate((T.SegformerModel, T.SegformerForImageClassification), 1):
        torch.manual_seed(index)
        model = cls(T.SegformerConfig.from_pretrained(models["segformer"]))
        with torch.no_grad():
            for tensor in model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.add_(torch.randn_like(tensor) * 0.01)
        model.save_pretrained(root / cls.__name__)
        models[cls.__name__] = root / cls.__name__
    for seed, kind in enumerate(("daformer", "hrda", "edaps"), 3):
        data = daformer_checkpoint(kind, variant=SMALL, sizes=TINY_HEADS, seed=seed)
        models[kind] = import_(save_checkpoint(data, root / f"{kind}.pth"), root / kind)[0]
    return models


@pytest.fixture(scope="module")
def host_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hosts")
    models = {name: build(name, root / name, seed=i) for i, name in enumerate(HOSTS) if not name.startswith("segf")}
    return models | _segformer_family(root)


def mergeable_pairs(models) -> list[tuple[str, str]]:
    layouts = {name: layout_of(str(path)) for name, path in models.items()}
    pairs = []
    for a, b in itertools.combinations(sorted(models), 2):
        try:
            check_compatible(layouts[a], layouts[b])
            check_compatible(layouts[b], layouts[a])
        except ValueError:
            continue
        pairs.append((a, b))
    return pairs


FAMILIES = ("segformer", "swin", "convnext", "vit")


def test_the_table_has_mergeable_pairs_in_every_backbone_family(host_models):
    pairs = mergeable_pairs(host_models)
    families = {layout_of(str(host_models[a])).family.name for a, _ in pairs}
    assert len(pairs) >= 25 and families == set(FAMILIES), pairs


@pytest.mark.parametrize("family", FAMILIES)
def test_every_mergeable_pair_merges_the_same_through_every_path(tmp_path, host_models, family):
    from layerseg_merge import merge, merge_in_memory

    pairs = [(a, b) for a, b in mergeable_pairs(host_models) if layout_of(str(host_models[a])).family.name == family]
    assert pairs, family
    for number, ((a, b), heads) in enumerate(itertools.product(pairs, POLICIES)):
        anchor, other = (a, b) if number % 2 == 0 else (b, a)
        buffers = BUFFERS[number % 3]
        paths = [host_models[anchor], host_models[other]]
        parameters = dict(heads=heads, buffers=buffers, uniform_until=0.25, schedule="cosine")
        recipe = write_recipe(tmp_path / f"r{number}.yaml", paths, paths[0], weights=[1.0, 3.0], **parameters)
        in_memory = merge_in_memory(recipe)
        # every pair is written to disk once (with the policy whose turn it is), the other policies in memory
        on_disk = tensors(merge(recipe, tmp_path / f"out{number}")) if number % 3 == number // 3 % 3 else in_memory
        swept = LoadedInputs([str(p) for p in paths], [1.0, 3.0]).merge(Candidate(
            0, ScheduleSettings(uniform_until=0.25, schedule="cosine", heads=heads, buffers=buffers)))
        label = f"{anchor} + {other}, heads: {heads}, buffers: {buffers}"
        assert on_disk.keys() == in_memory.keys() == swept.keys() == tensors(paths[0]).keys(), label
        for name, value in on_disk.items():
            for got in (in_memory[name], swept[name]):
                assert got.dtype == value.dtype and torch.equal(got, value), f"{label}: {name}"


def test_host_specific_norms_stay_the_anchors_across_hosts_with_the_same_names(tmp_path, host_models):
    """Mask2Former and OneFormer name their Swin output norms alike; each feeds its own pixel decoder."""
    from layerseg_merge import merge_in_memory

    paths = [host_models["mask2former_swin"], host_models["oneformer_swin"]]
    anchor, other = tensors(paths[0]), tensors(paths[1])
    norms = [n for n in anchor if ".hidden_states_norms." in n]
    assert len(norms) == 8 and all(n in other and not torch.equal(anchor[n], other[n]) for n in norms)
    for heads in POLICIES:
        recipe = write_recipe(tmp_path / f"{heads}.yaml", paths, paths[0], heads=heads)
        merged = merge_in_memory(recipe)
        assert all(torch.equal(merged[n], anchor[n]) for n in norms), heads


def test_a_module_takes_the_same_members_for_each_of_its_tensors(tmp_path, segformers):
    """An input that lacks one tensor of a head module takes part in none of that module's tensors."""
    import shutil

    from safetensors.torch import save_file

    from layerseg_merge import merge_in_memory

    partial = tmp_path / "partial"
    shutil.copytree(segformers[1], partial)
    state = tensors(partial)
    del state["decode_head.classifier.bias"]
    (partial / "model.safetensors").unlink()
    save_file(state, partial / "model.safetensors", metadata={"format": "pt"})
    recipe = write_recipe(tmp_path / "r.yaml", [segformers[0], partial], segformers[0], heads="uniform")
    merged, anchor = merge_in_memory(recipe), tensors(segformers[0])
    for name in ("decode_head.classifier.weight", "decode_head.classifier.bias"):
        assert torch.equal(merged[name], anchor[name]), name
    fused = "decode_head.linear_fuse.weight"
    assert torch.equal(merged[fused], ((anchor[fused] + state[fused]) / 2).to(merged[fused].dtype))


def test_merge_in_memory_takes_a_parsed_recipe(tmp_path, segformers):
    import yaml

    from layerseg_merge import merge_in_memory

    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[1], heads="schedule")
    from_file = merge_in_memory(recipe)
    data = yaml.safe_load(recipe.read_text())
    from_mapping = merge_in_memory(data)
    assert yaml.safe_load(recipe.read_text()) == data  # the caller's mapping is left as it was
    assert from_file.keys() == from_mapping.keys()
    assert all(torch.equal(from_file[n], from_mapping[n]) for n in from_file)


def test_two_merges_in_one_process_keep_their_own_coefficients(tmp_path, segformers):
    import threading

    from conftest import run_in_process

    from layerseg_merge.plugin.planning import merge_record

    records = {}

    def one(name, anchor, heads):
        recipe = write_recipe(tmp_path / f"{name}.yaml", segformers[:2], anchor, heads=heads)
        run_in_process(recipe, tmp_path / name)
        records[name] = merge_record()

    threads = [threading.Thread(target=one, args=("a", segformers[0], "anchor")),
               threading.Thread(target=one, args=("b", segformers[1], "uniform"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    head = "decode_head.classifier.weight"
    assert records["a"].out_path.endswith("a") and records["b"].out_path.endswith("b")
    assert records["a"].coefficients[head][2] == {str(segformers[0]): 1.0, str(segformers[1]): 0.0}
    assert records["b"].coefficients[head][2] == {str(segformers[0]): 0.5, str(segformers[1]): 0.5}


def test_plans_live_and_die_with_their_layouts(segformers):
    """The plan caches belong to the anchor's layout: no global cache keeps layouts alive after they are dropped."""
    import gc
    import weakref

    from layerseg_merge.architectures import layout as layout_module
    from layerseg_merge.engine.plan import plan_tensor

    layout_module._cached_layout.cache_clear()
    layouts = [layout_module.layout_of(str(p)) for p in segformers[:2]]
    for name in layouts[0].tensors:
        plan_tensor(layouts, 0, name, [1.0, 1.0], ScheduleSettings(heads="uniform"))
    assert layouts[0].cache["members"]
    watched = [weakref.ref(layout) for layout in layouts]
    del layouts
    layout_module._cached_layout.cache_clear()
    gc.collect()
    assert all(ref() is None for ref in watched)
