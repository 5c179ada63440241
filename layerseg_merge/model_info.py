"""What a model directory's ``config.json`` says about the model, read once: the one answer to "is this
model panoptic?" for the model card, the demo and the sweep."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# transformers' universal segmenters: their image processors post-process panoptic output
UNIVERSAL_ARCHITECTURES = ("Mask2FormerForUniversalSegmentation", "MaskFormerForInstanceSegmentation",
                           "OneFormerForUniversalSegmentation")


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    architecture: str
    panoptic_head: dict | None  # a center/offset head (eval/center_offset.py)
    mmseg: dict | None  # layerseg_mmseg: the settings of an imported mmseg checkpoint

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> ModelInfo:
        from layerseg_merge.checkpoint import read_config

        config = read_config(model_dir)
        return cls(Path(model_dir), (config.get("architectures") or [""])[0], config.get("panoptic_head") or None,
                   config.get("layerseg_mmseg") or None)

    @property
    def universal(self) -> bool:
        return self.architecture in UNIVERSAL_ARCHITECTURES

    @property
    def gives_panoptic(self) -> bool:
        """``layerseg eval --task panoptic`` can score it: a universal model or a center/offset head."""
        return self.universal or self.panoptic_head is not None

    @property
    def task(self) -> str:
        """What the model predicts: ``panoptic`` also for an imported EDAPS, which eval cannot run."""
        edaps = (self.mmseg or {}).get("kind") == "edaps"
        return "panoptic" if self.gives_panoptic or edaps else "semantic"
