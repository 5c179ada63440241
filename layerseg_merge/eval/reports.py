"""Report files: JSON (DESIGN.md §5), a Markdown table for people, a per-class bar chart (PNG)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


FORMATS = ("markdown", "csv", "latex")


@dataclass(frozen=True)
class Comparison:
    """Reports side by side: a row of numbers (fractions, None for n/a) per report label, under ``columns``;
    ``reference``: the label the differences are taken to (None: no differences)."""

    columns: list[str]
    rows: dict[str, list[float | None]]
    reference: str | None = None

    def deltas(self, label: str) -> list[float | None] | None:
        """``label``'s differences to the reference row, in percentage points (None: no reference, or this is it)."""
        if self.reference is None or label == self.reference:
            return None
        return [None if value is None or base is None else 100 * (value - base)
                for value, base in zip(self.rows[label], self.rows[self.reference])]


def reference_label(labels: list[str], given: str) -> str:
    """The label ``given`` names: a label, else a position counted from 1."""
    if given in labels:
        return given
    if given.isdigit() and 1 <= int(given) <= len(labels):
        return labels[int(given) - 1]
    raise ValueError(f"--delta-to {given}: no report has that label; give a label ({', '.join(labels)}) or a "
                     f"position from 1 to {len(labels)}")


def comparison(reports: dict[str, dict], per_class: bool = False, reference: str | None = None) -> Comparison:
    """The numbers of several reports of one task: the report metrics (:data:`report_metrics.METRICS`), or with
    ``per_class`` the per-class IoU (panoptic: PQ per category) of every class any report has, then the task's
    headline metric (mIoU, PQ), as UDA papers print them."""
    first = next(iter(reports.values()))
    if not per_class:
        columns = list(headline(first))
        return Comparison(columns, {label: [headline(r).get(c) for c in columns] for label, r in reports.items()},
                          reference)
    values = {label: per_class_values(r) for label, r in reports.items()}
    classes = list(dict.fromkeys(name for row in values.values() for name in row))
    main = next(metric for metric in metrics_of(task_of(first)) if metric.headline)
    rows = {label: [values[label].get(c) for c in classes] + [main.value(r)] for label, r in reports.items()}
    return Comparison([*classes, main.header], rows, reference)


def _latex_escaped(text: str) -> str:
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(special.get(char, char) for char in text)


def table(compared: Comparison, fmt: str = "markdown") -> str:
    """``compared`` as a Markdown, CSV or LaTeX (booktabs) table, in percent with 2 decimals; a row's difference to
    the reference follows its value in the cell (CSV: in a column of its own after each value)."""
    if fmt == "csv":
        import csv

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        delta = compared.reference is not None
        writer.writerow(["model", *(name for c in compared.columns for name in ((c, f"{c} delta") if delta else (c,)))])
        for label, values in compared.rows.items():
            deltas = compared.deltas(label) or [None] * len(values)
            cells = [("" if v is None else f"{100 * v:.2f}", "" if d is None else f"{d:+.2f}")
                     for v, d in zip(values, deltas)]
            writer.writerow([label, *(cell for pair in cells for cell in (pair if delta else pair[:1]))])
        return buffer.getvalue().rstrip("\n")
    latex = fmt == "latex"
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; use {', '.join(FORMATS)}")

    def cell(value: float | None, delta: float | None) -> str:
        text = "--" if latex and value is None else _pct(value)
        if delta is None:
            return text
        if latex:  # the sign in math mode: a minus, not a hyphen
            return rf"{text} {{\scriptsize(${'+' if delta >= 0 else '-'}${abs(delta):.2f})}}"
        return f"{text} ({delta:+.2f})"

    rows = [(label, [cell(v, d) for v, d in zip(values, compared.deltas(label) or [None] * len(values))])
            for label, values in compared.rows.items()]
    if latex:
        lines = ["% needs \\usepackage{booktabs}" + (f"; in parentheses: points to {compared.reference}"
                                                   if compared.reference else ""),
                 rf"\begin{{tabular}}{{l{'r' * len(compared.columns)}}}", r"\toprule",
                 " & ".join(["model", *map(_latex_escaped, compared.columns)]) + r" \\", r"\midrule",
                 *(" & ".join([_latex_escaped(label), *cells]) + r" \\" for label, cells in rows),
                 r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines)
    lines = ["| model | " + " | ".join(compared.columns) + " |", "| --- |" + " ---: |" * len(compared.columns)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
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
