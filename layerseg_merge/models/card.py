"""The model card of a ``layerwise_seg`` merge: Hugging Face metadata, the recipe and a schedule plot.

mergekit's own card describes "a merge of pre-trained language models" and looks
input paths up on the Hub; ours is a segmentation card built offline. The plot
shows the coefficients the kernel actually used (gradients and filters included),
recorded per tensor during the merge.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from layerseg_merge.models.info import ModelInfo

PLOT_FILE = "coefficients.png"


def hub_ids(models: Sequence[str]) -> list[str]:
    """The inputs named by a Hub id (``org/name``, not a local path), without their ``@revision``."""
    from layerseg_merge.io.hub import is_hub_id

    names = (m.split("@", 1)[0] for m in models)
    return sorted({name for name in names if is_hub_id(name)})


def library_name(info: ModelInfo | None) -> str:
    """The Hub's ``library_name``: ``transformers`` unless the model is an imported mmseg one with its own heads,
    which transformers would load with a random head (the Hub assumes transformers for a folder with a
    config.json that names no other library)."""
    return "layerseg-merge" if info is not None and info.imported_heads else "transformers"


def loading_section(info: ModelInfo | None, name: str) -> str:
    """How to run an imported mmseg model with its own heads, for its card; empty for transformers models."""
    if info is None or not info.imported_heads:
        return ""
    if info.mmseg_kind == "edaps":
        run = ("`layerseg eval` cannot run it either (transformers has no Mask R-CNN counterpart): export it back to "
               "an mmseg checkpoint and evaluate that with EDAPS's repository:\n\n```bash\n"
               f"layerseg export mmseg path/to/{name} {name}.pth\n```\n")
    else:
        run = ("evaluate it with `layerseg eval` (mmseg's test pipeline and the repository's test procedure), or "
               "export it back to an mmseg checkpoint for the repository's own tools:\n\n```bash\n"
               f"layerseg eval path/to/{name} --data cityscapes:/data/cityscapes\n"
               f"layerseg export mmseg path/to/{name} {name}.pth\n```\n")
    return f"""
## How to load it

An imported mmsegmentation model (`{info.architecture}` in `config.json`): its MiT backbone is stored
under transformers' SegFormer names, its heads under mmseg's. Do not load it with transformers' Auto
classes: `AutoModelForSemanticSegmentation.from_pretrained` builds a SegFormer whose decode head is
randomly initialised (this model's head tensors are left unused), without an error. With
layerseg-merge installed, {run}"""


def card_text(models: Sequence[str], anchor: str, recipe_yaml: str, task: str | None,
              name: str, plot: bool, info: ModelInfo | None = None) -> str:
    """README.md of a merged model: YAML front matter plus a short description (``info``: the output's, which
    says how to run an imported mmseg model)."""
    tags = ["image-segmentation", "mergekit", "merge", "layerseg-merge", "layerwise_seg"]
    if task:
        tags.append(f"{task}-segmentation")
    metadata: dict = {"library_name": library_name(info), "pipeline_tag": "image-segmentation", "tags": tags}
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
{loading_section(info, name)}
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
    info = None
    if (out_dir / "config.json").exists():
        from layerseg_merge.models.info import ModelInfo

        info = ModelInfo.from_dir(out_dir)
    if records:
        plot_coefficients(records, out_dir / PLOT_FILE, anchor)
    from layerseg_merge.io.output import staged_name

    name = staged_name(out_dir.name) or out_dir.name
    return card_text(models, anchor, recipe_yaml, info.task if info else None, name, plot=bool(records), info=info)


def front_matter(text: str) -> tuple[dict, str]:
    """Split a model card into its YAML metadata and its body."""
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            metadata = yaml.safe_load(text[4:end]) or {}
            body = text[end + 4:].lstrip("\n")
            return (metadata if isinstance(metadata, dict) else {}), body
    return {}, text


RECALIBRATION_HEADING = "## BatchNorm recalibration"


def note_recalibration(model_dir: str | Path, data: str, read: str | None, images: int, batches: int) -> Path | None:
    """Record a BatchNorm recalibration in ``model_dir``'s card (None: the model has no card); ``read``: the split of
    ``data`` that was read (None: the data is read whole).

    The card's ``model-index`` results were measured on the weights before the recalibration: they are
    removed, and the new section says so. A section from an earlier recalibration is replaced.
    """
    from layerseg_merge.io.output import write_file_atomically

    path = Path(model_dir) / "README.md"
    if not path.is_file():
        return None
    metadata, body = front_matter(path.read_text(encoding="utf-8"))
    dropped = sum(len(result.get("metrics") or []) for entry in metadata.pop("model-index", None) or []
                  if isinstance(entry, dict) for result in entry.get("results") or [] if isinstance(result, dict))
    start = body.find(RECALIBRATION_HEADING)
    if start != -1:
        end = body.find("\n## ", start + len(RECALIBRATION_HEADING))
        body = body[:start] + (body[end + 1:] if end != -1 else "")
    removed = (f" The {dropped} evaluation metric{'s' if dropped != 1 else ''} this card held (model-index) "
               "described the weights before the recalibration and were removed; evaluate the model again "
               "(`layerseg eval MODEL --data KIND:PATH --card`)." if dropped else "")
    section = (f"{RECALIBRATION_HEADING}\n\nThe BatchNorm running statistics were re-estimated with `layerseg "
               f"recalibrate` on {images} image{'s' if images != 1 else ''} of `{data}`"
               + (f" (split `{read}`)" if read else "") + f", in {batches} batch{'es' if batches != 1 else ''}; "
               "every other tensor is unchanged. Numbers quoted elsewhere in this card, if any, describe the model "
               f"before the recalibration.{removed}\n")
    text = body.rstrip("\n") + "\n\n" + section
    if metadata:
        text = f"---\n{yaml.safe_dump(metadata, sort_keys=False).strip()}\n---\n{text}"
    write_file_atomically(path, text)
    return path
