"""The numbers a report is quoted by: one table of report metrics for the comparison tables, the model cards'
``model-index`` results and what a sweep ranks by. A new metric is a function of the report plus one entry of
:data:`METRICS` (its value must be in the report: add it where the report is computed). No torch, no numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ReportMetric:
    """``name``: how people and options call it (``sweep --metric``, cards); ``value``: read from a report of
    ``task``; ``column``: its header in ``layerseg compare`` (default: the name); ``hub_type``: its type in Hugging
    Face ``model-index`` results (None: not on cards); ``per_subset``: named with the class count over a
    ``--classes`` subset (mIoU16); ``headline``: what a sweep ranks by (one per task)."""

    name: str
    task: str
    value: Callable[[dict], float | None]
    column: str | None = None
    hub_type: str | None = None
    per_subset: bool = False
    headline: bool = False

    @property
    def header(self) -> str:
        return self.column or self.name


def _split(split: str, key: str) -> Callable[[dict], float | None]:
    return lambda report: report[split][key]


METRICS: dict[str, ReportMetric] = {metric.name: metric for metric in (
    ReportMetric("mIoU", "semantic", lambda r: r["mIoU"], hub_type="mean_iou", per_subset=True, headline=True),
    ReportMetric("aAcc", "semantic", lambda r: r["aAcc"], hub_type="overall_accuracy"),
    ReportMetric("mAcc", "semantic", lambda r: r["mAcc"], hub_type="mean_accuracy", per_subset=True),
    *(ReportMetric(f"{key.upper()}{suffix}", "panoptic", _split(split, key), f"{key}_{split}",
                   hub_type=f"panoptic_{key}" if split == "All" else None, per_subset=split == "All",
                   headline=(key, split) == ("pq", "All"))
      for split, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")) for key in ("pq", "sq", "rq")),
)}


def register_metric(metric: ReportMetric) -> None:
    """Add a report metric (a name given twice is an error)."""
    if metric.name in METRICS:
        raise ValueError(f"a report metric named {metric.name!r} is already registered")
    METRICS[metric.name] = metric


def task_of(report: dict) -> str:
    """``panoptic`` or ``semantic``: the one answer to what a report describes."""
    return "panoptic" if "All" in report else "semantic"


def metrics_of(task: str) -> list[ReportMetric]:
    return [metric for metric in METRICS.values() if metric.task == task]


def headlines() -> dict[str, ReportMetric]:
    """The metric a sweep may rank by, per name (mIoU, PQ)."""
    return {metric.name: metric for metric in METRICS.values() if metric.headline}


def card_metrics(report: dict) -> list[tuple[str, str, float | None]]:
    """(name, Hugging Face metric type, value) of each metric of ``report`` that model cards carry; over a class
    subset (``report["classes"]``) the names say so (mIoU16)."""
    subset = str(len(report["classes"])) if report.get("classes") else ""
    return [(metric.name + (subset if metric.per_subset else ""), metric.hub_type, metric.value(report))
            for metric in metrics_of(task_of(report)) if metric.hub_type]
