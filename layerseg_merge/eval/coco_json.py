"""COCO panoptic JSON files (panopticapi's format), read and checked: one line naming the file and the fault.

Shared by the datasets of ``layerseg eval`` and by ``layerseg score`` (no torch here). A prediction JSON
(``ground_truth=False``) needs no categories: panopticapi takes them from the ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path

from layerseg_merge.eval.images import DatasetError, regular_file

COCO_PANOPTIC_FORMAT = ("panopticapi's format ({categories: [{id, name, isthing}], annotations: [{image_id, file_name, "
                        "segments_info: [{id, category_id, iscrowd}]}], images: [{id, file_name}]})")
_TYPE_NAMES = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}


def _type_name(value) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _shown(value) -> str:
    """``value`` as JSON writes it, cut to 40 characters."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _whole(value, least: int = 0, most: int | None = None) -> bool:
    return type(value) is int and value >= least and (most is None or value <= most)


def _flag(value) -> bool:
    return type(value) in (int, bool) and value in (0, 1)


def _name(value) -> bool:
    return isinstance(value, str) and value != ""


def _key(value) -> bool:
    return type(value) in (int, str)


# (key, check, what a value must be); "?" marks an optional key. Category ids index the metric's per-category
# arrays, so they stay below 65536 (datasets use a few hundred).
_CATEGORY = (("id", lambda v: _whole(v, 0, 65535), "a category id (0..65535)"), ("name", _name, "a name"),
             ("isthing", _flag, "?0 or 1"))
_IMAGE = (("id", _key, "a number or a string"), ("file_name", _name, "a file name"))
_ANNOTATION = (("image_id", _key, "a number or a string"), ("segments_info", lambda v: isinstance(v, list), "a list"))
_SEGMENT = (("id", lambda v: _whole(v, 1, 256**3 - 1), "a segment id (1..16777215; 0 is VOID)"),
            ("category_id", _whole, "a whole number >= 0"), ("iscrowd", _flag, "?0 or 1"),
            ("area", _whole, "?a whole number of pixels"))


def _entry_problem(entry, where: str, checks: tuple) -> str | None:
    """What is wrong with ``entry`` (a JSON object): not a mapping, a key missing, a value that fails its check."""
    if not isinstance(entry, dict):
        return f"{where} is {_type_name(entry)}, not a mapping"
    for key, check, what in checks:
        if key not in entry:
            if not what.startswith("?"):
                return f"{where} has no `{key}`"
        elif not check(entry[key]):
            return f"{where} has `{key}` {_shown(entry[key])}, not {what.lstrip('?')}"
    return None


def _coco_panoptic_problem(data, ground_truth: bool) -> str | None:
    """What makes ``data`` (a parsed JSON) no COCO panoptic ground truth (or prediction), or None."""
    if not isinstance(data, dict):
        return f"the top level is {_type_name(data)}, not a mapping"
    for key in ("categories", "annotations", "images"):
        if key in data and not isinstance(data[key], list):
            return f"`{key}` is {_type_name(data[key])}, not a list"
        if key not in data and (key == "annotations" or key == "categories" and ground_truth):
            return f"no `{key}` list"
    if ground_truth and not data["categories"]:
        return "`categories` is empty"
    seen: set = set()
    for n, category in enumerate(data.get("categories", [])):
        problem = _entry_problem(category, f"`categories` entry {n}", _CATEGORY)
        if problem or category["id"] in seen:
            return problem or f"`categories` entry {n} repeats category id {category['id']}"
        seen.add(category["id"])
    seen = set()
    for n, image in enumerate(data.get("images", [])):
        problem = _entry_problem(image, f"`images` entry {n}", _IMAGE)
        if problem or image["id"] in seen:
            return problem or f"`images` entry {n} repeats image id {_shown(image['id'])}"
        seen.add(image["id"])
    files: set = set()
    image_ids: set = set()
    for n, annotation in enumerate(data["annotations"]):
        where = f"`annotations` entry {n}"
        problem = _entry_problem(annotation, where, (("file_name", _name, "a file name"),))
        if problem or annotation["file_name"] in files:
            return problem or f"{where} repeats file_name {annotation['file_name']}"
        files.add(annotation["file_name"])
        where = f"{where} ({annotation['file_name']})"
        problem = _entry_problem(annotation, where, _ANNOTATION)
        if problem or annotation["image_id"] in image_ids:
            return problem or f"{where} repeats image_id {_shown(annotation['image_id'])}"
        image_ids.add(annotation["image_id"])
        ids: set = set()
        for k, segment in enumerate(annotation["segments_info"]):
            problem = _entry_problem(segment, f"{where}, segment {k}", _SEGMENT)
            if problem or segment["id"] in ids:
                return problem or f"{where}, segment {k} repeats segment id {segment['id']}"
            ids.add(segment["id"])
    return None


def read_coco_panoptic(path: Path, ground_truth: bool = True) -> dict:
    """A COCO panoptic JSON, checked against panopticapi's format: a one-line error names ``path`` and what is
    wrong (no `annotations`, a category without `id`, `segments_info` that is not a list, ...). A prediction
    (``ground_truth=False``) may omit the categories."""
    try:
        data = json.loads(regular_file(path, "a COCO panoptic JSON").read_bytes())
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8 "
                           "(as JSON files are)") from error
    except (OSError, json.JSONDecodeError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else error
        raise DatasetError(f"{path}: cannot read COCO panoptic JSON ({reason})") from error
    problem = _coco_panoptic_problem(data, ground_truth)
    if problem:
        raise DatasetError(f"{path}: {problem}; regenerate it, or fix it to {COCO_PANOPTIC_FORMAT}")
    return data


