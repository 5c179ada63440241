"""Report files: JSON (DESIGN.md §5), a Markdown table for people, a per-class bar chart (PNG)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from PIL import Image, ImageDraw

from layerseg_merge.eval.report_metrics import metrics_of, task_of


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def write_json(report: dict, path: str | Path) -> None:
    """Write ``report`` (NaN as null) atomically: a reader sees the old file or the new one."""
    from layerseg_merge.io.output import write_file_atomically

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(path, json.dumps(_clean(report), indent=2, allow_nan=False) + "\n")


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def is_panoptic(report: dict) -> bool:
    return task_of(report) == "panoptic"


def headline(report: dict) -> dict[str, float | None]:
    """Every report metric of the report's task (:data:`layerseg_merge.eval.report_metrics.METRICS`), by column."""
    return {metric.header: metric.value(report) for metric in metrics_of(task_of(report))}


def name_categories(report: dict, categories: Mapping[int, Mapping] | Iterable[Mapping]) -> dict:
    """``report`` with each panoptic ``per_class`` entry (keyed by category id) carrying its category's ``name``.

    ``categories``: id -> COCO category dict, or the COCO ``categories`` list; unnamed ones stay without.
    """
    pairs = categories.items() if isinstance(categories, Mapping) else ((c.get("id"), c) for c in categories)
    names = {str(cid): c["name"] for cid, c in pairs if isinstance(c.get("name"), str)}
    per_class = {cid: ({"name": names[cid]} | entry if cid in names else entry)
                 for cid, entry in report["per_class"].items()}
    return {**report, "per_class": per_class}


def _category(cid: str, entry: dict) -> str:
    return f"{entry['name']} ({cid})" if entry.get("name") else cid


def markdown(report: dict) -> str:
    """Summary and per-class tables, in percent with 2 decimals."""
    if is_panoptic(report):
        lines = ["| split | PQ | SQ | RQ | n |", "| --- | ---: | ---: | ---: | ---: |"]
        for split in ("All", "Things", "Stuff"):
            r = report[split]
            lines.append(f"| {split} | {_pct(r['pq'])} | {_pct(r['sq'])} | {_pct(r['rq'])} | {r['n']} |")
        lines += ["", "| category | PQ | SQ | RQ | TP | FP | FN |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for cid, r in report["per_class"].items():
            lines.append(f"| {_category(cid, r)} | {_pct(r['pq'])} | {_pct(r['sq'])} | {_pct(r['rq'])} | "
                         f"{r['tp']} | {r['fp']} | {r['fn']} |")
        return "\n".join(lines)
    values = headline(report)
    lines = ["| " + " | ".join(values) + " |", "|" + " ---: |" * len(values),
             "| " + " | ".join(_pct(value) for value in values.values()) + " |", "",
             "| class | IoU | Acc |", "| --- | ---: | ---: |"]
    for name, r in report["per_class"].items():
        lines.append(f"| {name} | {_pct(r['IoU'])} | {_pct(r['Acc'])} |")
    return "\n".join(lines)


def compare(reports: dict[str, dict]) -> str:
    """Several reports side by side (singles vs merges), one row each."""
    columns = list(headline(next(iter(reports.values()))))
    lines = ["| model | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for name, report in reports.items():
        values = headline(report)
        lines.append(f"| {name} | " + " | ".join(_pct(values.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def bar_chart(values: dict[str, float | None], path: str | Path, title: str) -> None:
    """A horizontal bar per entry (values in [0, 1]); n/a entries are drawn empty."""
    width, row, left = 720, 18, 250
    image = Image.new("RGB", (width, 30 + row * len(values)), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), title, fill="black")
    for i, (name, value) in enumerate(values.items()):
        y = 26 + i * row
        draw.text((8, y + 2), name[:40], fill="black")
        if value is not None:
            right = left + int((width - left - 70) * value)
            draw.rectangle([left, y + 2, right, y + row - 3], fill="#3b78c4")
        draw.text((width - 62, y + 2), _pct(value), fill="black")
    from layerseg_merge.io.output import write_file_atomically

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_file_atomically(path, buffer.getvalue())


def per_class_values(report: dict) -> dict[str, float | None]:
    if is_panoptic(report):
        return {_category(cid, r): r["pq"] for cid, r in report["per_class"].items()}
    return {name: r["IoU"] for name, r in report["per_class"].items()}
