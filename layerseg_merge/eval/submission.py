"""The files ``layerseg predict`` writes: its own formats and each benchmark server's submission layout.

Facts, each from the benchmark's own scripts or the instructions its authors publish (read, not copied):

* ``train-ids`` (default, semantic): one PNG of class indices per image at the image's relative path (``.png``),
  so ``layerseg score semantic --gt ROOT/labels --pred DIR`` pairs them as a ``folder:`` dataset pairs images and
  labels.
* ``coco-panoptic`` (default, panoptic): ``panoptic.json`` + ``panoptic/`` PNGs (id = R + 256 G + 256^2 B,
  panopticapi's format), which ``layerseg score panoptic`` and ``pq_compute`` read; image ids are the ground
  truth's where the data has some.
* ``cityscapes``: cityscapesScripts ``evaluation/evalPixelLevelSemanticLabeling.py`` (the server's script) takes
  single-channel PNGs of the regular label ids (``labels.py`` ``id``, not ``trainId``: road 7 ... bicycle 33) at
  the image's size, and finds the prediction of ``CITY_SEQ_FRAME_gtFine_labelIds.png`` by searching the results
  folder recursively for exactly one file matching ``CITY_SEQ_FRAME*.png`` (``getPrediction``). Written flat,
  named as the images (``CITY_SEQ_FRAME_leftImg8bit.png``, as mmsegmentation's Cityscapes ``format_results``
  names them); a pixel of a class outside the 19 gets id 0 (unlabeled).
* ``cityscapes-panoptic``: cityscapesScripts ``evaluation/evalPanopticSemanticLabeling.py``: COCO panoptic JSON +
  the PNG folder of the same name (``cityscapes_panoptic_SPLIT.json`` + ``cityscapes_panoptic_SPLIT/``), image ids
  ``CITY_SEQ_FRAME`` (as ``preparation/createPanopticImgs.py`` gives the ground truth), category ids the label ids
  ("test set evaluation assumes prediction use 'id' and not 'trainId'").
* ``acdc``: the ACDC server (acdc.vision.ee.ethz.ch/submit) takes train ids (road 0) at the input's size
  (1920x1080), one PNG per test image, in a ``labelTrainIds/`` folder, named as the image
  (``GOPRxxxx_frame_xxxxxx_rgb_anon.png``), as the ACDC authors' Refign (brdav/refign) and HRDA/MIC
  (lhoyer/HRDA ``--format-only ... imgfile_prefix=labelTrainIds to_label_id=False``) write them.
* ``darkzurich``: the Dark Zurich server (CodaLab competition 3783, uncertainty-aware evaluation of Sakaridis et
  al., ICCV 2019) takes a zip with ``labelTrainIds/``, ``labelTrainIds_invalid/`` and ``confidence/`` (BIT-DA/SePiCo
  README): train ids; the same with 255 where the prediction is declared invalid (here: none, so its UIoU
  equals the IoU); and 16-bit PNGs of the confidence, 0..65535 for 0..1 (here: the softmax probability of the
  predicted class).
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerseg_merge.eval.datasets import CITYSCAPES_LABEL_IDS
from layerseg_merge.eval.images import DatasetError

MANIFEST = "layerseg_predict.json"
ARCHIVE = "submission.zip"
IGNORE = 255  # a pixel predicted as a class the output's classes lack
CITYSCAPES_IMAGE = re.compile(r"([a-z_]+_\d{6}_\d{6})_leftImg8bit\.png")
SEQUENCE_FRAME_IMAGE = re.compile(r"[A-Za-z0-9]+_frame_\d{6}_rgb_anon\.png")
# train id -> Cityscapes label id (cityscapesScripts labels.py); 255 (no class of the 19) -> 0, unlabeled
TRAIN_TO_LABEL_ID = np.zeros(256, dtype=np.uint8)
TRAIN_TO_LABEL_ID[: len(CITYSCAPES_LABEL_IDS)] = CITYSCAPES_LABEL_IDS


@dataclass(frozen=True)
class Format:
    """One output layout: its ``task``, whether its values are the 19 Cityscapes classes' (``cityscapes``), what
    its image names must look like (``names``: a pattern and the layout that gives it) and a summary for --help."""

    name: str
    task: str
    summary: str
    cityscapes: bool = False
    names: tuple[re.Pattern, str] | None = None
    confidence: bool = False

    def check_names(self, images: Mapping[str, Path]) -> None:
        """Refuse, before any work, an image (name -> file) whose name the server cannot match to its ground
        truth."""
        if self.names is None:
            return
        pattern, layout = self.names
        for name, path in images.items():
            if not pattern.fullmatch(Path(name).name):
                raise DatasetError(f"{path}: not named as the {self.name} server expects "
                                   f"({layout}); the server matches predictions by that name: predict on the "
                                   f"dataset as downloaded (--data {self.data_hint})")

    @property
    def data_hint(self) -> str:
        return {"cityscapes": "cityscapes:ROOT", "cityscapes-panoptic": "cityscapes-panoptic:ROOT",
                "acdc": "acdc:ROOT", "darkzurich": "darkzurich:ROOT"}.get(self.name, "KIND:ROOT")


FORMATS: dict[str, Format] = {form.name: form for form in (
    Format("train-ids", "semantic", "class-index PNGs at the images' relative paths (the dataset's class indices)"),
    Format("coco-panoptic", "panoptic", "panoptic.json + panoptic/ PNGs (COCO panoptic, panopticapi's format)"),
    Format("cityscapes", "semantic", "Cityscapes server: label-id PNGs named CITY_SEQ_FRAME_leftImg8bit.png",
           cityscapes=True, names=(CITYSCAPES_IMAGE, "CITY_SEQ_FRAME_leftImg8bit.png")),
    Format("cityscapes-panoptic", "panoptic", "Cityscapes panoptic server: cityscapes_panoptic_SPLIT.json + PNGs, "
           "label-id categories", cityscapes=True, names=(CITYSCAPES_IMAGE, "CITY_SEQ_FRAME_leftImg8bit.png")),
    Format("acdc", "semantic", "ACDC server: labelTrainIds/ train-id PNGs named as the images", cityscapes=True,
           names=(SEQUENCE_FRAME_IMAGE, "SEQUENCE_frame_NNNNNN_rgb_anon.png")),
    Format("darkzurich", "semantic", "Dark Zurich server: labelTrainIds/, labelTrainIds_invalid/, confidence/",
           cityscapes=True, names=(SEQUENCE_FRAME_IMAGE, "SEQUENCE_frame_NNNNNN_rgb_anon.png"), confidence=True),
)}
DEFAULT_FORMAT = {"semantic": "train-ids", "panoptic": "coco-panoptic"}


def resolve_format(name: str | None, task: str | None) -> Format:
    """The format named (its task must be ``task`` when both are given), else the default of ``task``."""
    from layerseg_merge.io.errors import option

    if name is None:
        task = task or "semantic"
        if task not in DEFAULT_FORMAT:
            raise ValueError(f"{option('--task', 'task=')} {task}: use semantic or panoptic")
        return FORMATS[DEFAULT_FORMAT[task]]
    if name not in FORMATS:
        raise ValueError(f"{option('--format', 'format=')} {name}: unknown; use {', '.join(FORMATS)}")
    form = FORMATS[name]
    if task is not None and task != form.task:
        raise ValueError(f"{option('--format', 'format=')} {name} holds {form.task} predictions, not {task}; drop "
                         f"{option('--task', 'task=')} or choose a {task} format "
                         f"({', '.join(f.name for f in FORMATS.values() if f.task == task)})")
    return form


# ------------------------------------------------------------------------------------------------ semantic


def semantic_files(form: Format, name: str, classes: np.ndarray,
                   confidence: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The files (relative path -> pixels) of one image's prediction: ``classes`` in the format's classes (the
    dataset's, or the Cityscapes train ids), ``confidence`` in [0, 1] (for formats that take it)."""
    flat = Path(name).with_suffix(".png").name
    if form.name == "train-ids":
        return {str(Path(name).with_suffix(".png")): classes}
    if form.name == "cityscapes":
        return {flat: TRAIN_TO_LABEL_ID[classes]}
    files = {f"labelTrainIds/{flat}": classes}
    if form.name == "darkzurich":
        files[f"labelTrainIds_invalid/{flat}"] = classes
        files[f"confidence/{flat}"] = np.round(np.clip(confidence, 0.0, 1.0) * 65535).astype(np.uint16)
    return files


# ------------------------------------------------------------------------------------------------ panoptic


def panoptic_names(form: Format, split: str) -> tuple[str, str]:
    """(JSON file, PNG folder) of a panoptic format."""
    if form.name == "cityscapes-panoptic":
        return f"cityscapes_panoptic_{split}.json", f"cityscapes_panoptic_{split}"
    return "panoptic.json", "panoptic"


def image_id(name: str, ground_truth: dict[str, object] | None):
    """The image id of ``name``: the ground truth's (COCO panoptic data), Cityscapes' CITY_SEQ_FRAME, else the name
    without its suffix."""
    if ground_truth is not None and name in ground_truth:
        return ground_truth[name]
    match = CITYSCAPES_IMAGE.fullmatch(Path(name).name)
    return match[1] if match else str(Path(name).with_suffix(""))


def panoptic_png(form: Format, name: str, identifier) -> str:
    """The PNG file name of an image's segments, within the PNG folder."""
    if form.name == "cityscapes-panoptic":
        return f"{identifier}_panoptic.png"
    return str(Path(name).with_suffix(".png"))


def rgb_ids(ids: np.ndarray) -> np.ndarray:
    """Segment ids (H, W) as panopticapi's RGB (id = R + 256 G + 256^2 B)."""
    ids = ids.astype(np.uint32)
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)


def segments_info(ids: np.ndarray, segments: Sequence) -> list[dict]:
    """COCO ``segments_info`` of one image: id, category, area (pixels in ``ids``), not crowd."""
    areas = np.bincount(ids.reshape(-1), minlength=max((s.id for s in segments), default=0) + 1)
    return [{"id": int(s.id), "category_id": int(s.category_id), "iscrowd": 0, "area": int(areas[s.id])}
            for s in segments]


def panoptic_json(images: list[dict], annotations: list[dict], categories: dict[int, dict]) -> str:
    """A COCO panoptic JSON (images, annotations, categories in id order)."""
    listed = [{"id": cid, "name": str(c.get("name", cid)), "isthing": int(c.get("isthing", 0))}
              | {key: c[key] for key in ("supercategory", "color") if key in c}
              for cid, c in sorted(categories.items())]
    return json.dumps({"images": images, "annotations": annotations, "categories": listed}) + "\n"


# ------------------------------------------------------------------------------------------------ folder


def server_files(folder: Path) -> list[str]:
    """Every file of a prediction folder except the manifest and the archive: what the server gets, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and str(p.relative_to(folder)) not in (MANIFEST, ARCHIVE))


def write_archive(folder: Path, members: Sequence[str]) -> Path:
    """``folder/submission.zip`` holding ``members`` at their paths in the folder (the server's layout), in order,
    with fixed timestamps (the same predictions give the same bytes); PNGs stored, anything else deflated."""
    archive = folder / ARCHIVE
    with zipfile.ZipFile(archive, "w") as bundle:
        for member in members:
            info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED if member.endswith(".png") else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            bundle.writestr(info, (folder / member).read_bytes())
    return archive


def is_prediction_folder(path: Path) -> bool:
    """A folder written by ``layerseg predict`` before: its manifest lists every file in it."""
    try:
        listed = set(json.loads((path / MANIFEST).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return {str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir()} <= listed | {MANIFEST}
