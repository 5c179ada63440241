"""Dark Zurich: ``darkzurich:ROOT`` (its val split; the test split is scored on its server)."""

from __future__ import annotations

from pathlib import Path

from layerseg_merge.eval.datasets.base import DatasetKind, SemanticDataset
from layerseg_merge.eval.datasets.cityscapes import _train_id_dataset


def dark_zurich_dataset(root: Path, split: str) -> SemanticDataset:
    """Dark Zurich: ``rgb_anon/SPLIT/night/SEQ/*_rgb_anon.png`` + ``gt/SPLIT/night/SEQ/*_gt_labelTrainIds.png``."""
    layout = (f"a Dark Zurich root has rgb_anon/{split}/night/SEQUENCE/*_rgb_anon.png and gt/{split}/night/SEQUENCE/"
              "*_gt_labelTrainIds.png (Dark_Zurich_val_anon.zip; the test split is scored on its server)")
    return _train_id_dataset(root / "rgb_anon" / split, root / "gt" / split, "_rgb_anon.png", "_gt_", layout)



KIND = DatasetKind("darkzurich", "ROOT", "Dark Zurich", ("semantic",),
                   lambda path, split, task: dark_zurich_dataset(Path(path), split))
