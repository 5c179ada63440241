"""`layerseg compare`: the tables UDA papers print (per-class columns, differences to a reference row) as Markdown,
CSV or LaTeX."""

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

from layerseg_merge.cli import main

CLASSES = ("road", "sidewalk", "traffic light")


def semantic(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    iou = rng.uniform(0.1, 0.9, len(CLASSES))
    iou[2] = np.nan if seed == 2 else iou[2]  # a class the third model never saw: n/a
    per_class = {name: {"IoU": None if np.isnan(v) else float(v), "Acc": 0.5} for name, v in zip(CLASSES, iou)}
    return {"mIoU": float(np.nanmean(iou)), "aAcc": float(rng.uniform(0.6, 0.9)), "mAcc": 0.5, "per_class": per_class}


@pytest.fixture()
def reports(tmp_path):
    paths = []
    for seed, name in enumerate(("source", "dacs", "merged")):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(semantic(seed)))
    return [str(p) for p in paths]


def run(*args):
    result = CliRunner().invoke(main, ["compare", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def values(path: str) -> dict:
    return json.loads(open(path).read())


def test_the_default_table_is_unchanged(reports):
    lines = run(*reports).splitlines()
    assert lines[:2] == ["| model | mIoU | aAcc | mAcc |", "| --- | ---: | ---: | ---: |"]
    merged = values(reports[2])
    assert lines[4] == f"| merged | {100 * merged['mIoU']:.2f} | {100 * merged['aAcc']:.2f} | 50.00 |"
    assert len(lines) == 5


def test_per_class_columns_then_the_mean(reports):
    lines = run(*reports, "--per-class").splitlines()
    assert lines[0] == "| model | road | sidewalk | traffic light | mIoU |"
    dacs = values(reports[1])
    cells = [f"{100 * dacs['per_class'][c]['IoU']:.2f}" for c in CLASSES] + [f"{100 * dacs['mIoU']:.2f}"]
    assert lines[3] == "| dacs | " + " | ".join(cells) + " |"
    assert lines[4].split(" | ")[3] == "n/a"  # traffic light of the merged model


@pytest.mark.parametrize("given,reference", [("dacs", 1), ("2", 1), ("3", 2)])
def test_delta_to_a_label_or_a_position(reports, given, reference):
    lines = run(*reports, "--delta-to", given).splitlines()
    base = values(reports[reference])
    for row, path in zip(lines[2:], reports):
        report = values(path)
        cell = row.split(" | ")[1]
        if path == reports[reference]:
            assert cell == f"{100 * report['mIoU']:.2f}"  # the reference itself: no difference
        else:
            assert cell == f"{100 * report['mIoU']:.2f} ({100 * (report['mIoU'] - base['mIoU']):+.2f})"


def test_delta_to_alone_takes_the_first(reports):
    assert run(*reports, "--delta-to") == run(*reports, "--delta-to", "source")
    assert run(*reports, "--delta-to") != run(*reports)


def test_csv_has_a_column_per_difference(reports):
    rows = list(csv.reader(io.StringIO(run(*reports, "--per-class", "--delta-to", "--format", "csv"))))
    assert rows[0] == ["model", "road", "road delta", "sidewalk", "sidewalk delta", "traffic light",
                       "traffic light delta", "mIoU", "mIoU delta"]
    source, merged = values(reports[0]), values(reports[2])
    assert rows[1][1:3] == [f"{100 * source['per_class']['road']['IoU']:.2f}", ""]
    road = 100 * (merged["per_class"]["road"]["IoU"] - source["per_class"]["road"]["IoU"])
    assert rows[3][1:3] == [f"{100 * merged['per_class']['road']['IoU']:.2f}", f"{road:+.2f}"]
    assert rows[3][5:7] == ["", ""]  # n/a: empty cells
    plain = list(csv.reader(io.StringIO(run(*reports, "--format", "csv"))))
    assert plain[0] == ["model", "mIoU", "aAcc", "mAcc"] and len(plain) == 4


def test_latex_is_a_booktabs_tabular_with_escaped_names(tmp_path, reports):
    special = tmp_path / "a_b.json"
    special.write_text(json.dumps(semantic(5)))
    text = run(reports[0], special, "--per-class", "--delta-to", "--format", "latex", "--label", "source",
               "--label", "DACS_50%")
    lines = text.splitlines()
    assert lines[0].startswith("% needs \\usepackage{booktabs}") and "points to source" in lines[0]
    assert lines[1] == r"\begin{tabular}{lrrrr}" and lines[2] == r"\toprule"
    assert lines[3] == r"model & road & sidewalk & traffic light & mIoU \\"
    other, base = semantic(5), values(reports[0])
    delta = 100 * (other["mIoU"] - base["mIoU"])
    sign = "+" if delta >= 0 else "-"
    assert lines[6].startswith(r"DACS\_50\% & ")
    assert lines[6].endswith(rf"{100 * other['mIoU']:.2f} {{\scriptsize(${sign}${abs(delta):.2f})}} \\")
    assert lines[-2:] == [r"\bottomrule", r"\end{tabular}"]


def test_panoptic_per_category(tmp_path):
    paths = []
    for index, pq in enumerate((0.25, 0.5)):
        split = {"pq": pq, "sq": 0.8, "rq": 0.6, "n": 2}
        report = {"All": split, "Things": split, "Stuff": split,
                  "per_class": {"7": {"name": "road", "pq": pq, "sq": 0.8, "rq": 0.6, "tp": 1, "fp": 0, "fn": 0},
                                "26": {"name": "car", "pq": pq / 2, "sq": 0.8, "rq": 0.6, "tp": 1, "fp": 0, "fn": 1}}}
        paths.append(tmp_path / f"p{index}.json")
        paths[-1].write_text(json.dumps(report))
    lines = run(*paths, "--per-class", "--delta-to").splitlines()
    assert lines[0] == "| model | road (7) | car (26) | pq_All |"
    assert lines[3] == "| p1 | 50.00 (+25.00) | 25.00 (+12.50) | 50.00 (+25.00) |"


def test_an_unknown_reference_is_one_line(reports):
    result = CliRunner().invoke(main, ["compare", *reports, "--delta-to", "mic"])
    assert_one_line_error(result, "--delta-to mic: no report has that label; give a label (source, dacs, merged) or "
                          "a position from 1 to 3")
    assert_one_line_error(CliRunner().invoke(main, ["compare", *reports, "--delta-to", "4"]), "from 1 to 3")
