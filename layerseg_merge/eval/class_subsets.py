"""The class subsets of the SYNTHIA -> Cityscapes benchmarks: ``--classes 19|16|13``.

SYNTHIA labels 16 of the 19 Cityscapes classes (no terrain, truck, train); the papers also report
13 (further without wall, fence, pole). The model still predicts 19 classes and the scoring is the
19-class one; only the averages are taken over the subset, as DAFormer, HRDA, MIC (their
README: "mIoU16 = mIoU19 * 19 / 16", the 3 missing classes having IoU 0) and EDAPS (mPQ over the
16 classes) report them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from layerseg_merge.eval.datasets import CITYSCAPES_CLASSES

DROPPED = {19: (), 16: ("terrain", "truck", "train"), 13: ("terrain", "truck", "train", "wall", "fence", "pole")}


def subset_names(count: int) -> tuple[str, ...]:
    """The Cityscapes class names of ``--classes count``, in train-id order."""
    if count not in DROPPED:
        raise ValueError(f"--classes {count}: use 19, 16 or 13 (SYNTHIA's subsets of the Cityscapes classes)")
    return tuple(name for name in CITYSCAPES_CLASSES if name not in DROPPED[count])


def _mean(values: list) -> float | None:
    kept = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(kept)) if kept else None


def restrict_report(report: dict, count: int, categories: Mapping[int, dict] | None = None) -> dict:
    """``report`` averaged over the ``count``-class subset (19: unchanged).

    Semantic: mIoU and mAcc over the subset's classes (aAcc, a pixel count, is unchanged).
    Panoptic (``categories``: id -> {name, isthing}): PQ/SQ/RQ of All/Things/Stuff over the subset's
    categories that occur, as panopticapi averages them. ``per_class`` keeps the subset only.
    """
    names = subset_names(count)
    if count == 19:
        return report
    if categories is None:
        missing = [name for name in names if name not in report["per_class"]]
        if missing:
            raise ValueError(f"--classes {count} needs the Cityscapes class names; the model has no class "
                             f"{missing[0]!r} (its id2label names the classes)")
        per_class = {name: report["per_class"][name] for name in names}
        return {**report, "mIoU": _mean([r["IoU"] for r in per_class.values()]),
                "mAcc": _mean([r["Acc"] for r in per_class.values()]), "per_class": per_class,
                "classes": list(names)}
    by_name = {info.get("name"): cid for cid, info in categories.items()}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ValueError(f"--classes {count} needs the Cityscapes categories; the ground truth has no category "
                         f"{missing[0]!r}")
    keep = {str(by_name[name]) for name in names}
    per_class = {cid: r for cid, r in report["per_class"].items() if cid in keep}
    out = {**report, "per_class": per_class, "classes": list(names)}
    for split, thing in (("All", None), ("Things", True), ("Stuff", False)):
        chosen = [r for cid, r in per_class.items()
                  if thing is None or bool(categories[int(cid)].get("isthing", 0)) == thing]
        out[split] = {key: (float(np.mean([r[key] for r in chosen])) if chosen else None)
                      for key in ("pq", "sq", "rq")} | {"n": len(chosen)}
    return out
