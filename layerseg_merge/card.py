"""The model card of a ``layerwise_seg`` merge: Hugging Face metadata, the recipe and a schedule plot.

mergekit's own card describes "a merge of pre-trained language models" and looks
input paths up on the Hub; ours is a segmentation card built offline. The plot
shows the coefficients the kernel actually used (gradients and filters included),
recorded per tensor during the merge.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

PLOT_FILE = "coefficients.png"


def hub_ids(models: Sequence[str]) -> list[str]:
    """The inputs named by a Hub id (``org/name``, not a local path), without their ``@revision``."""
    from layerseg_merge.hub import is_hub_id

    names = (m.split("@", 1)[0] for m in models)
    return sorted({name for name in names if is_hub_id(name)})


def card_text(models: Sequence[str], anchor: str, recipe_yaml: str, task: str | None,
              name: str, plot: bool) -> str:
    """README.md of a merged model: YAML front matter plus a short description."""
    tags = ["image-segmentation", "mergekit", "merge", "layerseg-merge", "layerwise_seg"]
    if task:
        tags.append(f"{task}-segmentation")
    metadata: dict = {"library_name": "transformers", "pipeline_tag": "image-segmentation", "tags": tags}
    bases = hub_ids(models)
    if bases:
        metadata["base_model"] = bases
    listed = "\n".join(f"* `{m}`" + (" (anchor)" if m == anchor else "") for m in models)
    picture = (f"\n![Coefficient of each input along the backbone depth]({PLOT_FILE})\n\n"
               "The plot shows the coefficient each input received, per backbone depth (0 = stem, 1 = last "
               "block) and for the heads, as used in this merge.\n") if plot else ""
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False).strip()}
---
# {name}

A segmentation model merged with layerseg-merge (`layerwise_seg`, a
[mergekit](https://github.com/arcee-ai/mergekit) method): the early backbone layers of the inputs
are averaged, the late layers and the heads are biased toward the anchor
(Alcover-Couso et al., *Layer-wise Model Merging for Unsupervised Domain Adaptation in
Segmentation Tasks*, 2024, [arXiv:2409.15813](https://arxiv.org/abs/2409.15813)). The output has
the anchor's architecture, config, image processor and heads.

## Models merged

{listed}
{picture}
## Recipe

```yaml
{recipe_yaml.strip()}
```
"""


def plot_coefficients(records: Mapping[str, tuple[str, float | None, Mapping[str, float]]], path: Path,
                      anchor: str) -> None:
    """Mean coefficient of each input per backbone depth, plus the heads, as a line plot (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_depth: dict[float, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    heads: dict[str, list[float]] = defaultdict(list)
    for role, depth, coefficients in records.values():
        target = heads if role == "head" else by_depth[float(depth)]
        for model, value in coefficients.items():
            target[model].append(value)
    models = sorted({m for r in records.values() for m in r[2]}, key=lambda m: (m != anchor, m))
    depths = sorted(by_depth)
    figure, axis = plt.subplots(figsize=(7, 3.6), dpi=100)
    for index, model in enumerate(models):
        color = f"C{index}"
        values = [sum(v) / len(v) if (v := by_depth[d].get(model)) else float("nan") for d in depths]
        label = f"{Path(model).name or model}" + (" (anchor)" if model == anchor else "")
        style = "-" if model == anchor else (0, (4, 2 + index))
        axis.plot(depths, values, marker=".", color=color, linestyle=style, label=label)
        if heads.get(model):
            axis.scatter([1.08], [sum(heads[model]) / len(heads[model])], marker="s", color=color)
    axis.set_xlabel("backbone depth (0 = stem, 1 = last block); squares: heads")
    axis.set_ylabel("coefficient")
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlim(-0.02, 1.12)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_card(out_dir: str | Path, models: Sequence[str], anchor: str, recipe_yaml: str,
               records: Mapping[str, tuple[str, float | None, Mapping[str, float]]]) -> str:
    """Write the coefficient plot (when coefficients were recorded) and return the card text."""
    out_dir = Path(out_dir)
    task = None
    config = out_dir / "config.json"
    if config.exists():
        import json

        data = json.loads(config.read_text())
        universal = any("Universal" in a or "Instance" in a for a in data.get("architectures") or [])
        task = "panoptic" if universal or data.get("panoptic_head") else "semantic"
    if records:
        plot_coefficients(records, out_dir / PLOT_FILE, anchor)
    staged = re.fullmatch(r"\.(.+)\.partial-\d+-[0-9a-f]{8}", out_dir.name)  # layerseg merge's staging
    return card_text(models, anchor, recipe_yaml, task, staged[1] if staged else out_dir.name, plot=bool(records))


def front_matter(text: str) -> tuple[dict, str]:
    """Split a model card into its YAML metadata and its body."""
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            metadata = yaml.safe_load(text[4:end]) or {}
            body = text[end + 4:].lstrip("\n")
            return (metadata if isinstance(metadata, dict) else {}), body
    return {}, text


def _dataset(data: str) -> tuple[str, str]:
    """(dataset type, dataset name) of a ``KIND:PATH`` spec, for the Hub's model-index."""
    kind, _, path = data.partition(":")
    first = path.split(",")[0].rstrip("/")
    if kind == "cityscapes":
        return "cityscapes", "Cityscapes"
    if kind == "coco-panoptic":
        return "coco-panoptic", f"COCO panoptic ({Path(first).name})"
    return kind, Path(first).name or kind


def add_eval_result(model_dir: str | Path, report: dict, data: str, split: str) -> Path:
    """Add (or replace) the report's headline numbers as Hugging Face ``model-index`` results in the card.

    Values are percentages, as papers quote them: mIoU, aAcc, mAcc for semantic reports; PQ, SQ, RQ
    for panoptic ones. A card is created when the model has none.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from layerseg_merge.output import write_file_atomically

    path = Path(model_dir) / "README.md"
    if path.exists():
        card = ModelCard.load(path, ignore_metadata_errors=True)
    else:
        metadata = ModelCardData(library_name="transformers", pipeline_tag="image-segmentation")
        card = ModelCard(f"---\n{metadata.to_yaml()}\n---\n# {Path(model_dir).resolve().name}\n")
    dataset_type, dataset_name = _dataset(data)
    if "All" in report:
        task, metrics = "panoptic-segmentation", [(k.upper(), f"panoptic_{k}", report["All"][k])
                                                 for k in ("pq", "sq", "rq")]
    else:
        task, metrics = "semantic-segmentation", [("mIoU", "mean_iou", report["mIoU"]),
                                                  ("aAcc", "overall_accuracy", report["aAcc"]),
                                                  ("mAcc", "mean_accuracy", report["mAcc"])]
    new = [EvalResult(task_type=task, task_name=task.replace("-", " ").capitalize(), dataset_type=dataset_type,
                      dataset_name=dataset_name, dataset_split=split, metric_type=metric_type, metric_name=name,
                      metric_value=round(100 * value, 2))
           for name, metric_type, value in metrics if value is not None]
    kept = [r for r in card.data.eval_results or [] if not any(r.is_equal_except_value(n) for n in new)]
    card.data.eval_results = kept + new
    card.data.model_name = card.data.model_name or Path(model_dir).resolve().name
    write_file_atomically(path, str(card))
    return path
