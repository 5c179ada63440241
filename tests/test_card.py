"""The model card of a merge and `layerseg eval --card`: Hugging Face metadata that parses."""

import json
import shutil
import subprocess

import yaml
from click.testing import CliRunner
from eval_data import semantic_folder
from helpers import write_recipe
from PIL import Image
from test_merge import MERGEKIT_YAML

from layerseg_merge.card import front_matter
from layerseg_merge.cli import main


def card(model_dir) -> tuple[dict, str]:
    return front_matter((model_dir / "README.md").read_text())


def test_merge_writes_a_segmentation_card_with_the_schedule_plot(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[1], uniform_until=0.25)
    result = CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    metadata, body = card(tmp_path / "merged")
    assert metadata["pipeline_tag"] == "image-segmentation" and metadata["library_name"] == "transformers"
    assert {"layerwise_seg", "mergekit", "semantic-segmentation"} <= set(metadata["tags"])
    assert "base_model" not in metadata  # local paths are not Hub ids
    assert body.startswith("# merged\n") and "language model" not in body
    assert "uniform_until: 0.25" in body and f"`{segformers[1]}` (anchor)" in body
    with Image.open(tmp_path / "merged" / "coefficients.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 300


def test_the_plot_records_the_coefficients_the_kernel_used(tmp_path, segformers):
    from conftest import run_in_process
    from helpers import expected_coefficients, segformer_depths, tiny_segformer_config

    from layerseg_merge.method import merge_record

    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0], weights=[2.0, 1.0, 1.0],
                          schedule="cosine", heads="schedule", anchor_max=0.8)
    run_in_process(recipe, tmp_path / "out")
    role_depth = segformer_depths(tiny_segformer_config())
    record = merge_record()
    assert record.out_path == str(tmp_path / "out") and len(record.coefficients) > 100
    for name, (_, _, used) in record.coefficients.items():
        want = expected_coefficients([2.0, 1.0, 1.0], 0, *role_depth(name), schedule="cosine", heads="schedule",
                                     anchor_max=0.8)
        assert [used[str(p)] for p in segformers] == [__import__("pytest").approx(w) for w in want], name


def test_plain_mergekit_yaml_writes_our_card_too(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    result = subprocess.run([MERGEKIT_YAML, str(recipe), str(tmp_path / "out"), "--no-copy-tokenizer"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert card(tmp_path / "out")[0]["pipeline_tag"] == "image-segmentation"
    assert (tmp_path / "out" / "coefficients.png").exists()


def test_eval_card_adds_model_index_results(tmp_path, segformers):
    model = tmp_path / "model"
    shutil.copytree(segformers[0], model)  # has a preprocessor config, no card yet
    data = semantic_folder(tmp_path / "data", count=2)
    args = ["eval", str(model), "--data", f"folder:{data}", "--workers", "0", "--card",
            "--out", str(tmp_path / "r.json")]
    for _ in range(2):  # a second run replaces the result instead of adding another
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    metadata, _ = card(model)
    (entry,) = metadata["model-index"]
    assert entry["name"] == "model"
    (result_entry,) = entry["results"]
    assert result_entry["task"]["type"] == "semantic-segmentation"
    assert result_entry["dataset"] == {"name": "data", "type": "folder", "split": "val"}
    metrics = {m["name"]: m["value"] for m in result_entry["metrics"]}
    assert metrics["mIoU"] == round(100 * report["mIoU"], 2) and set(metrics) == {"mIoU", "aAcc", "mAcc"}
    yaml.safe_dump(metadata)  # round-trips


def test_eval_card_keeps_the_merge_card(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    assert CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "merged")]).exit_code == 0
    data = semantic_folder(tmp_path / "data", count=2)
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "merged"), "--data", f"folder:{data}", "--workers",
                                       "0", "--card", "--split", "test"])
    assert result.exit_code == 0, result.output
    metadata, body = card(tmp_path / "merged")
    assert metadata["pipeline_tag"] == "image-segmentation" and "layerwise_seg" in metadata["tags"]
    assert metadata["model-index"][0]["results"][0]["dataset"]["split"] == "test"
    assert "## Recipe" in body
