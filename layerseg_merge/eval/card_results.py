"""An evaluation's numbers on the model card: Hugging Face ``model-index`` results, for ``layerseg eval --card``.

What a result is called and which dataset it names come from the registries (report metrics, dataset
kinds); the card itself is :mod:`layerseg_merge.models.card`'s.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from layerseg_merge.eval.datasets import card_dataset, evaluated_split
from layerseg_merge.eval.report_metrics import card_metrics, task_of

if TYPE_CHECKING:
    from huggingface_hub import EvalResult

_COUNTED = re.compile(r" \(\d+ images?\)$")  # the image count a dataset name carries


def counted(name: str, images: int | None) -> str:
    """A dataset's name with the number of images scored, as people read it on the Hub (``Cityscapes (8 images)``)."""
    return name if images is None else f"{name} ({images} image{'s' if images != 1 else ''})"


def _measure(result: EvalResult) -> dict:
    """What a result measured, whatever its value and on however many images: a newer one replaces it."""
    return {key: value for key, value in vars(result).items() if key not in ("metric_value", "dataset_args")} | {
        "dataset_name": _COUNTED.sub("", result.dataset_name)}


def _keep_apart(new: list[EvalResult], present: list[EvalResult]) -> None:
    """Give ``new`` results their dataset name as config where a present result of another dataset name has their
    task, dataset type, config and split: huggingface_hub writes results grouped by those, under the first one's
    name, so two ``folder:`` datasets would read as one."""
    names = {r.unique_identifier: _COUNTED.sub("", r.dataset_name) for r in present}
    for result in new:
        name = _COUNTED.sub("", result.dataset_name)
        if names.get(result.unique_identifier, name) != name:
            result.dataset_config = ",".join(filter(None, (result.dataset_config, name)))


def add_eval_result(model_dir: str | Path, report: dict, data: str, split: str) -> Path:
    """Add (or replace) the report's card metrics as ``model-index`` results in ``model_dir``'s card.

    Values are percentages, as papers quote them (:func:`layerseg_merge.eval.report_metrics.card_metrics`:
    mIoU, aAcc, mAcc or PQ, SQ, RQ; over a class subset the names say so, mIoU16). The dataset entry
    records what was read: the split only for kinds that read one, the ACDC conditions or Mapillary's id
    table as its config, and, from the report's provenance, the number of images scored, in its name
    (``Cityscapes (8 images)``) and as ``args: {images: 8}`` (model-index has no field for it); an ``eval
    --test-scale`` result names its scale (``Cityscapes, test scale 256x128``, config ``test-scale-256x128``), apart
    from the protocol's. A result
    for the same task, dataset, config, split and metric is replaced, whatever its image count. A card is created
    when the model has none.
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
    provenance = report.get("provenance") or {}
    images = (provenance.get("data") or {}).get("images")
    scale = (provenance.get("pipeline") or {}).get("test_scale")
    if scale:  # not the paper's protocol: a result of its own, which says so. huggingface_hub groups results by
        # task, dataset type, config and split (not name or args): the config keeps them apart on the card
        dataset_name = f"{dataset_name}, test scale {scale[0]}x{scale[1]}"
        dataset_config = ",".join(filter(None, (dataset_config, f"test-scale-{scale[0]}x{scale[1]}")))
    args = {key: value for key, value in (("images", images), ("test_scale", scale)) if value is not None}
    task = f"{task_of(report)}-segmentation"
    new = [EvalResult(task_type=task, task_name=task.replace("-", " ").capitalize(), dataset_type=dataset_type,
                      dataset_name=counted(dataset_name, images), dataset_config=dataset_config,
                      dataset_split=evaluated_split(data, split),
                      dataset_args=args or None, metric_type=metric_type,
                      metric_name=name, metric_value=round(100 * value, 2))
           for name, metric_type, value in card_metrics(report) if value is not None]
    _keep_apart(new, card.data.eval_results or [])
    measures = [_measure(n) for n in new]
    kept = [r for r in card.data.eval_results or [] if _measure(r) not in measures]
    card.data.eval_results = kept + new
    card.data.model_name = card.data.model_name or Path(model_dir).resolve().name
    write_file_atomically(path, str(card))
    return path
