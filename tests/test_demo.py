"""The README's main job (`layerseg demo`) and the miniature UDA training code."""

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import needs_clone

from layerseg_merge.cli import main
from layerseg_merge.resources import DEMO_ASSETS as ASSETS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(main, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture(scope="module")
def demo_out(demo_run):
    return demo_run[0]


def test_demo_writes_every_row_with_values_in_range(demo_out):
    rows = json.loads((demo_out / "results.json").read_text())
    kinds = {(row["kind"], row["scenario"]) for row in rows}
    assert {r["name"] for r in rows if r["kind"] == "single"} == {
        "source_only", "dr", "dacs", "mic", "dacs_source2", "panoptic"}
    for scenario in ("different_sources", "different_heads", "semantic_into_panoptic"):
        assert ("uniform", scenario) in kinds and ("layerwise_seg", scenario) in kinds
    for row in rows:
        assert 0 <= row["mIoU"] <= 1
        if row["name"] == "panoptic" or row["scenario"] == "semantic_into_panoptic":
            assert 0 <= row["PQ"] <= 1
    from PIL import Image

    from layerseg_merge.cli.demo import KIND_COLOURS

    with Image.open(demo_out / "results.png") as chart:  # wide, one colour per kind of row
        assert chart.size[0] >= 1200
        colours = {colour for _, colour in chart.convert("RGB").getcolors(1 << 20)}
    for kind, colour in KIND_COLOURS.items():
        assert tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5)) in colours, kind


def test_every_demo_merge_has_its_model_card(demo_out):
    """README: every `layerwise_seg` merge gets a segmentation card, the demo's included."""
    merges = sorted((demo_out / "merged").iterdir())
    assert len(merges) == 6
    for merged in merges:
        card = (merged / "README.md").read_text()
        assert "pipeline_tag: image-segmentation" in card, merged
        assert (merged / "coefficients.png").is_file(), merged


def test_demo_prints_no_progress_bars(demo_run):
    output = demo_run[1]  # stdout and stderr
    assert "Loading weights" not in output and "it/s" not in output and "mIoU" in output


def test_demo_numbers_match_layerseg_eval_by_hand(demo_out, tmp_path):
    rows = {row["name"]: row for row in json.loads((demo_out / "results.json").read_text())}
    test = ASSETS / "target_test"
    merged = demo_out / "merged" / "semantic_into_panoptic_layerwise_seg"
    result = CliRunner().invoke(main, ["eval", str(merged), "--data", f"folder:{test}", "--workers", "0",
                                       "--out", str(tmp_path / "semantic.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "semantic.json").read_text())["mIoU"] == rows[
        "semantic_into_panoptic/layerwise_seg"]["mIoU"]
    result = CliRunner().invoke(main, ["eval", str(merged), "--task", "panoptic", "--workers", "0", "--data",
                                       f"coco-panoptic:{test / 'images'},{test / 'panoptic.json'},{test / 'panoptic'}",
                                       "--out", str(tmp_path / "panoptic.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "panoptic.json").read_text())["All"]["pq"] == rows[
        "semantic_into_panoptic/layerwise_seg"]["PQ"]


def test_demo_on_a_reduced_split(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo"), "--limit", "4"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert len(rows) == 12 and all(0 <= row["mIoU"] <= 1 for row in rows)


@needs_clone
def test_training_code_runs_on_a_tiny_schedule(tmp_path):
    sys.path.insert(0, str(ROOT / "examples" / "miniature_uda"))
    import train

    log = train.main(["--out", str(tmp_path), "--seed", "5", "--scale", "0.01", "--test-images", "4"])
    assert set(log) == {"pretrain", "source_only", "dr", "dacs", "mic", "dacs_source2", "panoptic"}
    config = json.loads((tmp_path / "models" / "panoptic" / "config.json").read_text())
    assert config["panoptic_head"]["type"] == "center_offset"
    assert (tmp_path / "target_test" / "panoptic.json").exists()


@pytest.mark.slow
@needs_clone
def test_retrain_one_seed_end_to_end(tmp_path):
    """Opt-in (-m slow): full training of one seed, then the demo on it (its time: examples/miniature_uda/README.md)."""
    sys.path.insert(0, str(ROOT / "examples" / "miniature_uda"))
    import train

    from layerseg_merge.cli.demo import run_demo

    log = train.main(["--out", str(tmp_path / "assets"), "--seed", "7"])
    for name in ("dr", "dacs", "mic", "dacs_source2"):
        assert log[name] > log["source_only"], name
    rows = run_demo(tmp_path / "demo", assets=tmp_path / "assets")
    assert len(rows) == 12
