"""`layerseg recipes`: whole descriptions, and copies of the shipped recipes that work from any directory."""

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from helpers import mergekit_yaml

from layerseg_merge import resources
from layerseg_merge.cli import main
from layerseg_merge.resources import DEMO_ASSETS, recipe_files, recipe_summary, recipe_text

MINIATURE = ("miniature_different_sources", "miniature_different_heads", "miniature_semantic_into_panoptic")


def printed(name: str) -> str:
    result = CliRunner().invoke(main, ["recipes", name])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("name", MINIATURE)
def test_a_printed_miniature_recipe_names_the_installed_models(name):
    recipe = yaml.safe_load(printed(name))
    paths = [recipe["base_model"], *(entry["model"] for entry in recipe["models"])]
    for path in paths:
        assert Path(path).is_absolute() and Path(path).is_dir() and path.startswith(str(DEMO_ASSETS / "models"))
    shipped = yaml.safe_load(recipe_files()[name].read_text())
    assert [p.removeprefix(str(DEMO_ASSETS) + "/") for p in paths] == [
        p.removeprefix(resources.DEMO_ASSETS_IN_RECIPES + "/")
        for p in (shipped["base_model"], *(entry["model"] for entry in shipped["models"]))]
    assert {k: v for k, v in recipe.items() if k not in ("base_model", "models")} == {
        k: v for k, v in shipped.items() if k not in ("base_model", "models")}


def test_a_copied_recipe_merges_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the clone: relative shipped paths would not resolve here
    (tmp_path / "r.yaml").write_text(printed("miniature_different_heads"))
    result = CliRunner().invoke(main, ["merge", "r.yaml", "m1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m1" / "model.safetensors").is_file()
    code, text = mergekit_yaml(tmp_path / "r.yaml", tmp_path / "m2")
    assert code == 0, text
    assert (tmp_path / "m2" / "model.safetensors").is_file()


def test_an_installed_path_that_yaml_would_misread_is_quoted(tmp_path, monkeypatch):
    odd = tmp_path / "site packages: #1" / "miniature_uda"
    monkeypatch.setattr(resources, "DEMO_ASSETS", odd)
    recipe = yaml.safe_load(recipe_text(recipe_files()["miniature_different_sources"]))
    assert recipe["base_model"] == str(odd / "models" / "dacs")
    assert recipe["models"][1]["model"] == str(odd / "models" / "dacs_source2")


def test_other_recipes_are_printed_unchanged():
    for name in ("layerwise_seg_template", "uda_daformer_hrda_mic"):
        assert printed(name) == recipe_files()[name].read_text()


def test_the_listing_shows_whole_first_sentences_and_where_the_models_are():
    output = CliRunner().invoke(main, ["recipes"], env={"COLUMNS": "100"}).output
    entries = re.split(r"\n(?=\S)", output.strip())
    listed = {entry.split()[0]: " ".join(entry.split()[1:]) for entry in entries if entry.split()[0] in recipe_files()}
    assert set(listed) == set(recipe_files())
    for name, text in listed.items():
        assert text == recipe_summary(recipe_files()[name]) and text.endswith("."), name
    assert listed["miniature_different_heads"].endswith("the backbone is merged, the anchor keeps its head.")
    assert listed["layerwise_seg_template"].endswith("(Alcover-Couso et al. 2024, https://arxiv.org/abs/2409.15813).")
    assert str(DEMO_ASSETS / "models") in output
    assert max(len(line) for line in output.splitlines() if not line.startswith("The miniature")) <= 100
