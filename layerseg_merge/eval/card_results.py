"""An evaluation's numbers on the model card: Hugging Face ``model-index`` results, for ``layerseg eval --card``.

What a result is called and which dataset it names come from the registries (report metrics, dataset
kinds); the card itself is :mod:`layerseg_merge.models.card`'s.
"""

from __future__ import annotations

from pathlib import Path

from layerseg_merge.eval.datasets import card_dataset, evaluated_split
from layerseg_merge.eval.report_metrics import card_metrics, task_of


def add_eval_result(model_dir: str | Path, report: dict, data: str, split: str) -> Path:
    """Add (or replace) the report's card metrics as ``model-index`` results in ``model_dir``'s card.

    Values are percentages, as papers quote them (:func:`layerseg_merge.eval.report_metrics.card_metrics`:
    mIoU, aAcc, mAcc or PQ, SQ, RQ; over a class subset the names say so, mIoU16). The dataset entry
    records what was read: the split only for kinds that read one, the ACDC conditions or Mapillary's id
    table as its config. A card is created when the model has none.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from layerseg_merge.io.output import write_file_atomically
    from layerseg_merge.models.card import library_name, loading_section
    from layerseg_merge.models.info import ModelInfo

    path = Path(model_dir) / "README.md"
    if path.exists():
        card = ModelCard.load(path, ignore_metadata_errors=True)
    else:
        info = ModelInfo.from_dir(model_dir) if (Path(model_dir) / "config.json").is_file() else None
        name = Path(model_dir).resolve().name
        metadata = ModelCardData(library_name=library_name(info), pipeline_tag="image-segmentation")
        card = ModelCard(f"---\n{metadata.to_yaml()}\n---\n# {name}\n{loading_section(info, name)}")
    dataset_type, dataset_name, dataset_config = card_dataset(data)
    task = f"{task_of(report)}-segmentation"
    new = [EvalResult(task_type=task, task_name=task.replace("-", " ").capitalize(), dataset_type=dataset_type,
                      dataset_name=dataset_name, dataset_config=dataset_config,
                      dataset_split=evaluated_split(data, split), metric_type=metric_type, metric_name=name,
                      metric_value=round(100 * value, 2))
           for name, metric_type, value in card_metrics(report) if value is not None]
    kept = [r for r in card.data.eval_results or [] if not any(r.is_equal_except_value(n) for n in new)]
    card.data.eval_results = kept + new
    card.data.model_name = card.data.model_name or Path(model_dir).resolve().name
    write_file_atomically(path, str(card))
    return path
