"""What a model directory's ``config.json`` says about the model, read once: the one answer to "is this
model panoptic?" and "which loader runs it?" for evaluation, the model card, the demo and the sweep."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# transformers' universal segmenters (AutoModelForUniversalSegmentation) whose image processors post-process
# panoptic output; every other model runs as a semantic one (AutoModelForSemanticSegmentation)
UNIVERSAL_MODEL_TYPES = ("mask2former", "maskformer", "oneformer")


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    model_type: str
    architecture: str
    panoptic_head: dict | None  # a center/offset head (eval/center_offset.py)
    mmseg: dict | None  # layerseg_mmseg: the settings of an imported mmseg checkpoint
    labels: tuple[str, ...] = ()  # the class names the model predicts (id2label), in output order

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> ModelInfo:
        from layerseg_merge.io.checkpoint import read_config

        config = read_config(model_dir)
        panoptic_head = config.get("panoptic_head") or None
        id2label = config.get("id2label") or {}
        labels = tuple(str(id2label[key]) for key in sorted(id2label, key=int))
        if panoptic_head:  # its extra output channels (centre, offsets) are no classes
            labels = labels[: panoptic_head["num_classes"]]
        return cls(Path(model_dir), config["model_type"], (config.get("architectures") or [""])[0],
                   panoptic_head, config.get("layerseg_mmseg") or None, labels)

    @property
    def universal(self) -> bool:
        return self.model_type in UNIVERSAL_MODEL_TYPES

    @property
    def gives_panoptic(self) -> bool:
        """``layerseg eval --task panoptic`` can score it: a universal model or a center/offset head."""
        return self.universal or self.panoptic_head is not None

    @property
    def mmseg_kind(self) -> str | None:
        """``daformer``, ``hrda``, ``segformer`` or ``edaps`` for an imported mmseg checkpoint, else None."""
        return (self.mmseg or {}).get("kind")

    @property
    def imported_heads(self) -> bool:
        """An imported mmseg model with its own heads (DAFormer, HRDA/MIC, EDAPS): not a transformers class, it
        runs mmseg's test pipeline. An imported SegFormer is a transformers ``SegformerForSemanticSegmentation``."""
        return self.mmseg_kind not in (None, "segformer")

    @property
    def task(self) -> str:
        """What the model predicts: ``panoptic`` also for an imported EDAPS, which eval cannot run."""
        edaps = self.mmseg_kind == "edaps"
        return "panoptic" if self.gives_panoptic or edaps else "semantic"
