"""Hub ids in recipes, resolved through a local Hugging Face cache (no network).

Merges run in a subprocess: transformers and huggingface_hub read HF_HUB_OFFLINE and
HF_HUB_CACHE when they are imported, as they do for a user's command.
"""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from conftest import run_in_process
from helpers import assert_one_line_error, tensors, write_recipe

from layerseg_merge.cli import main
from layerseg_merge.models.card import front_matter

COMMITS = ["a" * 40, "b" * 40, "c" * 40]


@pytest.fixture()
def hub_cache(tmp_path, segformers, monkeypatch):
    """A Hub cache layout (refs + snapshots) holding the three tiny models as org/m0 .. org/m2."""
    cache = tmp_path / "hf_cache"
    for index, (path, commit) in enumerate(zip(segformers, COMMITS)):
        repo = cache / f"models--org--m{index}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
        shutil.copytree(path, repo / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return cache


# `layerseg merge` and then the plain `mergekit-yaml` command, in one interpreter started offline
BOTH_COMMANDS = """
import sys
from layerseg_merge.cli import main
main(["merge", sys.argv[1], sys.argv[2]], standalone_mode=False)
from mergekit.scripts.run_yaml import main as mergekit_yaml
mergekit_yaml([sys.argv[3], sys.argv[4], "--no-copy-tokenizer", "--quiet"], standalone_mode=False)
"""


def test_recipe_with_hub_ids_merges_from_the_cache_with_both_commands(tmp_path, segformers, hub_cache):
    local = run_in_process(write_recipe(tmp_path / "local.yaml", segformers, segformers[0]), tmp_path / "local")
    recipe = write_recipe(tmp_path / "hub.yaml", ["org/m0", f"org/m1@{COMMITS[1]}", "org/m2"], "org/m0")
    plain = write_recipe(tmp_path / "plain.yaml", ["org/m0", "org/m1"], "org/m0")
    result = subprocess.run([sys.executable, "-c", BOTH_COMMANDS, str(recipe), str(tmp_path / "merged"), str(plain),
                             str(tmp_path / "out")], capture_output=True, text=True, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    want, got = tensors(local), tensors(tmp_path / "merged")
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    metadata, _ = front_matter((tmp_path / "merged" / "README.md").read_text())
    assert metadata["base_model"] == ["org/m0", "org/m1", "org/m2"]
    assert (tmp_path / "out" / "model.safetensors").exists()  # the plain mergekit-yaml resolved them too


def test_uncached_model_offline_is_a_clear_error(tmp_path, segformers, hub_cache):
    recipe = write_recipe(tmp_path / "hub.yaml", ["org/m0", "org/missing"], "org/m0")
    assert_one_line_error(CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "out")]),
                          "model path 'org/missing' not found", "not in", "HF_HUB_OFFLINE is set",
                          "hf download org/missing")
    recipe = write_recipe(tmp_path / "hub2.yaml", ["org/m0", f"org/m1@{'d' * 40}"], "org/m0")
    assert_one_line_error(CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "out")]),
                          f"model path 'org/m1@{'d' * 40}' not found")
    assert not (tmp_path / "out").exists()
