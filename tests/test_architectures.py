"""Every supported host: coverage, depths in forward order, and merges through the real mergekit-yaml."""

import pytest
import torch
import transformers
from conftest import run_in_process
from helpers import mergekit_yaml, tensors, write_recipe
from hosts import HOSTS, build, forward_order

from layerseg_merge.architectures import layout_of

# transformers 5 renames these models' tensors in memory (files keep the legacy names),
# so forward hooks cannot see them; their depths are checked against file names instead.
RENAMED_IN_MEMORY = {"segformer", "segformer_model", "beit", "upernet_swin", "mask2former_swin", "oneformer_swin"}


@pytest.fixture(scope="module")
def trios(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            root = tmp_path_factory.mktemp(name)
            cache[name] = [build(name, root / f"m{seed}", seed) for seed in range(3)]
        return cache[name]

    return get


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_layout_covers_every_tensor_once_and_depth_follows_the_forward_pass(host, trios):
    path = trios(host)[0]
    layout = layout_of(str(path))
    names = [t.name for layer in layout.layers for t in layer] + [t.name for t in layout.heads]
    assert sorted(names) == sorted(tensors(path))
    backbone = {t.name: t.depth for t in layout.tensors.values() if t.role == "backbone"}
    assert min(backbone.values()) == 0.0 and max(backbone.values()) == 1.0
    config = transformers.AutoConfig.from_pretrained(path)
    model = getattr(transformers, config.architectures[0]).from_pretrained(path).eval()
    order = forward_order(model, HOSTS[host][1]())
    # Per-stage output norms run on side branches after the whole encoder; their depth is
    # that of the stage they normalise, so they are left out of the execution order.
    seen = {n: d for n, d in backbone.items() if n in order and "hidden_states_norms" not in n}
    along = sorted((order[n], d) for n, d in seen.items())
    if host not in RENAMED_IN_MEMORY:
        assert len({layout.tensors[n].layer for n in seen}) >= 2
    depths = [d for _, d in along]
    assert depths == sorted(depths), f"{host}: depth decreases along the forward pass"


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_uniform_recipe_through_mergekit_yaml_is_the_plain_mean(host, trios, tmp_path):
    models = trios(host)
    recipe = write_recipe(tmp_path / "r.yaml", models, models[1], uniform_until=1.0, heads="uniform",
                          buffers="mean")
    code, text = mergekit_yaml(recipe, tmp_path / "out")
    assert code == 0, text[-3000:]
    out, inputs = tensors(tmp_path / "out"), [tensors(m) for m in models]
    assert sorted(out) == sorted(inputs[1])  # every anchor tensor exactly once, nothing else
    for name, value in out.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(x[name] for x in inputs) / 3, msg=name)
        else:
            assert torch.equal(value, inputs[1][name]) and value.dtype == inputs[1][name].dtype
    config = transformers.AutoConfig.from_pretrained(tmp_path / "out")
    model = getattr(transformers, config.architectures[0]).from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        model(**HOSTS[host][1]())


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_step_recipe_keeps_the_anchor_beyond_depth_zero(host, trios, tmp_path):
    models = trios(host)
    recipe = write_recipe(tmp_path / "r.yaml", models, models[2], schedule="step", uniform_until=0.0,
                          anchor_max=1.0)
    out = tensors(run_in_process(recipe, tmp_path / "out"))
    inputs = [tensors(m) for m in models]
    layout = layout_of(str(models[2]))
    for info in layout.tensors.values():
        if info.role == "head" or info.depth > 0 or not out[info.name].is_floating_point():
            assert torch.equal(out[info.name], inputs[2][info.name]), info.name
        else:
            torch.testing.assert_close(out[info.name], sum(x[info.name] for x in inputs) / 3, msg=info.name)
