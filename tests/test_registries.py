"""Change-cost probes: a new dataset layout or report metric is its own code plus one registry entry, and every
command takes it from there (eval, the output checks, the card, compare, sweep); nothing else is edited.

The probes register their entry at run time (a real addition is the same entry in
``eval/datasets/registry.py`` or ``eval/report_metrics.py``) and remove it afterwards.
"""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from eval_data import semantic_folder

from layerseg_merge.cli import main
from layerseg_merge.eval.datasets import KINDS, DatasetKind, SemanticDataset, card_dataset, evaluated_split
from layerseg_merge.eval.datasets import input_paths as paths_of
from layerseg_merge.eval.report_metrics import METRICS, ReportMetric, register_metric

# ---- the new layout's "own module": a flat folder of NAME.jpg images beside NAME_label.png labels


def open_flat(path: str, split: str, task: str) -> SemanticDataset:
    root = Path(path) / split
    pairs = [(image.name, image, image.with_name(image.stem + "_label.png")) for image in sorted(root.glob("*.png"))
             if not image.stem.endswith("_label")]
    return SemanticDataset(pairs, None)


FLAT = DatasetKind("flat", "ROOT", "Flat", ("semantic",), open_flat)


@pytest.fixture()
def flat_kind():
    KINDS["flat"] = FLAT  # the one registry entry
    yield FLAT
    del KINDS["flat"]


def flat_dataset(tmp_path: Path) -> Path:
    folder = semantic_folder(tmp_path / "source", count=3)
    for split in ("val", "test"):
        (tmp_path / "flat" / split).mkdir(parents=True)
        for image in sorted((folder / "images").rglob("*.png")):
            (tmp_path / "flat" / split / image.name).write_bytes(image.read_bytes())
            label = folder / "labels" / image.relative_to(folder / "images")
            (tmp_path / "flat" / split / f"{image.stem}_label.png").write_bytes(label.read_bytes())
    return tmp_path / "flat"


def test_a_new_dataset_layout_is_one_module_and_one_registry_entry(tmp_path, flat_kind, segformers):
    root = flat_dataset(tmp_path)
    spec = f"flat:{root}"
    assert paths_of(spec) == (str(root),) and evaluated_split(spec, "test") == "test"
    assert card_dataset(spec) == ("flat", "Flat", None)
    model = tmp_path / "model"
    shutil.copytree(segformers[0], model)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["eval", str(model), "--data", spec, "--split", "test", "--workers", "0",
                                       "--device", "cpu", "--out", str(out), "--card"])
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads(out.read_text())["mIoU"] <= 1
    card = (model / "README.md").read_text()
    assert "name: Flat" in card and "split: test" in card
    inside = CliRunner().invoke(main, ["eval", str(model), "--data", spec, "--out", str(root / "r.json")])
    assert inside.exit_code != 0 and "inside the input" in inside.output  # the output checks know its paths


def test_a_new_report_metric_is_one_function_and_one_registry_entry(tmp_path):
    metric = ReportMetric("IoU_road", "semantic", lambda report: report["per_class"]["road"]["IoU"],
                          hub_type="road_iou")
    register_metric(metric)  # the one registry entry
    try:
        reports = []
        for name, iou in (("a", 0.25), ("b", 0.5)):
            report = {"mIoU": iou, "aAcc": 0.9, "mAcc": 0.6, "per_class": {"road": {"IoU": iou, "Acc": 0.7}}}
            (tmp_path / f"{name}.json").write_text(json.dumps(report))
            reports.append(str(tmp_path / f"{name}.json"))
        result = CliRunner().invoke(main, ["compare", *reports])
        assert result.exit_code == 0, result.output
        assert "| model | mIoU | aAcc | mAcc | IoU_road |" in result.output and "| 50.00 |" in result.output
        from layerseg_merge.eval.card_results import add_eval_result

        add_eval_result(tmp_path, json.loads(Path(reports[0]).read_text()), "cityscapes:/c", "val")
        assert "type: road_iou" in (tmp_path / "README.md").read_text()
        with pytest.raises(ValueError, match="'IoU_road' is already registered"):
            register_metric(metric)
    finally:
        del METRICS["IoU_road"]
