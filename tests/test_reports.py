"""Report tables for people: panoptic categories by name."""

import json

from click.testing import CliRunner
from eval_data import CATEGORIES, coco_panoptic

from layerseg_merge.cli import main
from layerseg_merge.eval.reports import markdown, name_categories, per_class_values

PANOPTIC = {"All": {"pq": 0.5, "sq": 0.8, "rq": 0.6, "n": 2}, "Things": {"pq": 0.5, "sq": 0.8, "rq": 0.6, "n": 1},
            "Stuff": {"pq": 0.5, "sq": 0.8, "rq": 0.6, "n": 1},
            "per_class": {"3": {"pq": 0.5, "sq": 0.8, "rq": 0.6, "tp": 1, "fp": 0, "fn": 1},
                          "9": {"pq": 0.5, "sq": 0.8, "rq": 0.6, "tp": 1, "fp": 1, "fn": 0}}}


def test_categories_are_named_from_a_coco_list_or_an_id_mapping():
    from_list = name_categories(PANOPTIC, CATEGORIES)
    from_mapping = name_categories(PANOPTIC, {c["id"]: c for c in CATEGORIES})
    assert from_list == from_mapping
    assert from_list["per_class"]["3"]["name"] == "car" and "name" not in from_list["per_class"]["9"]  # not listed
    table = markdown(from_list)
    assert "| car (3) | 50.00 | 80.00 | 60.00 | 1 | 0 | 1 |" in table and "| 9 | 50.00 |" in table
    assert list(per_class_values(from_list)) == ["car (3)", "9"]
    assert "name" not in PANOPTIC["per_class"]["3"]  # the input report is not modified


def test_score_panoptic_prints_and_writes_category_names(tmp_path):
    images, gt_json, pngs = coco_panoptic(tmp_path / "data")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["score", "panoptic", "--gt-json", str(gt_json), "--gt-folder", str(pngs),
                                       "--pred-json", str(gt_json), "--pred-folder", str(pngs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for category in CATEGORIES:
        assert f"| {category['name']} ({category['id']}) | 100.00 |" in result.output
    report = json.loads(out.read_text())
    assert {cid: entry["name"] for cid, entry in report["per_class"].items()} == {
        str(c["id"]): c["name"] for c in CATEGORIES}
