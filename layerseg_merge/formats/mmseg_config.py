"""The test-time settings of an mmseg 0.x config: what ``layerseg eval`` must follow to reproduce ``tools/test.py``.

A config comes as the text a training checkpoint keeps in ``meta['config']`` (mmcv's
``Config.pretty_text``, Python literals), or as the JSON file the released checkpoints ship next
to the weights. Only literals are read (``ast``, never executed). From it:

* the test pipeline (``layerseg_mmseg.test_pipeline``): ``MultiScaleFlipAug.img_scale``,
  ``Resize.keep_ratio``, ``Normalize.mean/std``;
* the segmentor's test procedure (``layerseg_mmseg.inference``): ``test_cfg`` (``whole`` or
  ``slide`` with ``crop_size``/``stride``) and HRDA's ``scales``, ``hr_crop_size`` and
  ``hr_slide_overlapping``.

Without a config the released GTA->Cityscapes settings of the kind apply. A setting that is there
must have the type and bounds these keys have in mmseg (sizes: :func:`~layerseg_merge.eval.mmseg_pipeline.size_problem`,
also for ``--test-scale``); the message names the file and the key.
"""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path

from layerseg_merge.eval import pipeline_sizes
from layerseg_merge.eval.mmseg_pipeline import (
    PipelineError,
    check_inference,
    checked_size,
    normalize_problem,
    released_test_pipeline,
    shown,
)

# HRDA / MIC test-time settings of the released configs (gtaHR2csHR_hrda.py, gtaHR2csHR_mic_hrda.py).
HRDA_INFERENCE = {"lr_scale": 0.5, "hr_crop": 512, "hr_stride": 256, "crop": 1024, "stride": 512}


class ConfigError(ValueError):
    """An mmseg config whose test settings cannot be read or followed; the message names the setting."""


# What to do about a bad setting of a config file; of the checkpoint's meta config.
FILE_FIX = "correct it in the config, or pass the JSON config released with the checkpoint"
META_FIX = "pass the JSON config released with the checkpoint (--config FILE)"
_TYPES = {dict: "an object (dict)", list: "a list", bool: "true or false", str: "a string"}


def _get(mapping: dict, key: str, kind: type, where: str, name: str, default=None, fix: str = FILE_FIX):
    """``mapping[key]`` if it is a ``kind`` (a tuple counts as a list); ``default`` when absent or None."""
    value = mapping.get(key)
    if value is None:
        return default
    if not isinstance(value, (list, tuple) if kind is list else kind):
        raise ConfigError(f"{where}: {name} must be {_TYPES[kind]}; got {shown(value)}; {fix}")
    return value


def _literal(node: ast.AST):
    """A literal expression of a config (dicts written ``dict(...)`` included); anything else raises ValueError."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {keyword.arg: _literal(keyword.value) for keyword in node.keywords if keyword.arg is not None}
    if isinstance(node, ast.List | ast.Tuple):
        items = [_literal(item) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        return {_literal(key): _literal(value) for key, value in zip(node.keys, node.values) if key is not None}
    return ast.literal_eval(node)


def parse_config_text(text: str) -> dict:
    """The top-level literal assignments of a Python config (``model = dict(...)`` etc.); others are skipped."""
    tree = ast.parse(text)
    found = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and \
                isinstance(statement.targets[0], ast.Name):
            try:
                found[statement.targets[0].id] = _literal(statement.value)
            except (ValueError, TypeError, SyntaxError, RecursionError):
                continue
    return found


def read_config_file(path: str | Path) -> dict:
    """A config file: JSON (as shipped with the released checkpoints) or a Python config without ``_base_``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the config ({error})") from error
    try:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as not_json:
            try:
                config = parse_config_text(text)
                python = None if config else "no `name = dict(...)` settings"
            except SyntaxError as error:
                python = f"{error.msg}, line {error.lineno}"
            if python:
                raise ConfigError(f"{path}: neither JSON nor a Python config (JSON: {not_json}; Python: {python}); "
                                  "pass the JSON config released with the checkpoint") from None
    except (RecursionError, MemoryError) as error:  # json and ast recurse per level; the parser's stack overflows
        raise ConfigError(f"{path}: nested more deeply than Python's parsers go ({type(error).__name__}; recursion "
                          f"limit {sys.getrecursionlimit()}), which no mmseg config is; pass the JSON config released "
                          "with the checkpoint") from error
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: not a config (expected an object): it holds a {type(config).__name__}; pass the "
                          "JSON config released with the checkpoint")
    if "_base_" in config:
        raise ConfigError(f"{path}: inherits from _base_ files, which are not resolved here; pass the JSON config "
                          "saved next to the checkpoint (it has every setting resolved)")
    return config


def _test_pipeline_list(config: dict, where: str, fix: str) -> tuple[list | None, str]:
    """The test pipeline's steps (``data.test``, else ``data.val``, else ``test_pipeline``) and what it is called."""
    data = _get(config, "data", dict, where, "data", {}, fix)
    for split in ("test", "val"):
        entry = _get(data, split, dict, where, f"data.{split}", {}, fix)
        if entry.get("pipeline") is not None:
            return _get(entry, "pipeline", list, where, f"data.{split}.pipeline", fix=fix), f"data.{split}.pipeline"
    return _get(config, "test_pipeline", list, where, "test_pipeline", fix=fix), "test_pipeline"


def _steps(steps, where: str, name: str, fix: str) -> list[dict]:
    """Pipeline steps, each an object with a ``type``."""
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            raise ConfigError(f"{where}: {name}[{index}] must be an object (dict) with a type; got {shown(step)}; "
                              f"{fix}")
    return list(steps)


def _square(value, name: str, fix: str, window: bool = True) -> int:
    """A window's side or stride: one size or two equal ones (mmseg's (h, w))."""
    values = [value] * 2 if isinstance(value, int) and not isinstance(value, bool) else value
    size = checked_size(values, name, fix, window=False, text=shown(value))
    if size[0] != size[1]:
        raise ConfigError(f"{name} {shown(value)} is not a square size; layerseg runs square windows only")
    return checked_size(size[0], name, fix, sides=1, window=window, text=shown(value))[0]


def pipeline_from_config(config: dict, kind: str, where: str, notes: list[str], source: str | None = None,
                         fix: str = FILE_FIX, scale_given: bool = False) -> dict:
    """``test_pipeline`` settings from the config's test pipeline (the kind's released ones where it has none).

    ``where`` names the config in messages, ``source`` in the settings (default ``where``); with
    ``scale_given`` (``--test-scale``) the config's img_scale is not read.
    """
    pipeline = released_test_pipeline(kind, source or where)
    steps, name = _test_pipeline_list(config, where, fix)
    if steps is None:
        notes.append(f"{where} has no test pipeline; using the released GTA->Cityscapes one")
        return released_test_pipeline(kind)
    steps = _steps(steps, where, name, fix)
    aug = next((s for s in steps if s.get("type") == "MultiScaleFlipAug"), None)
    if aug:
        nested = f"{name} MultiScaleFlipAug transforms"
        transforms = _steps(_get(aug, "transforms", list, where, nested, [], fix), where, nested, fix)
    else:
        transforms = steps
    if not scale_given:
        holder = aug or next((s for s in steps if s.get("type") == "Resize"), {})
        scale = holder.get("img_scale")
        if isinstance(scale, list | tuple) and len(scale) == 1 and isinstance(scale[0], list | tuple):
            scale = scale[0]
        elif isinstance(scale, list | tuple) and scale and all(isinstance(v, list | tuple) for v in scale):
            raise ConfigError(f"{where}: test img_scale {shown(scale)} is not one (w, h) scale; multi-scale testing "
                              "is not reproduced by layerseg eval; give --test-scale W,H")
        key = f"{name} {holder.get('type', 'Resize')} img_scale"
        pipeline["img_scale"] = checked_size(scale, f"{where}: {key}", f"{fix}, or override it with --test-scale W,H")
    if aug and (aug.get("img_ratios") or aug.get("flip")):
        notes.append(f"{where}: the test pipeline uses flip/multi-scale augmentation; layerseg eval runs the "
                     "single scale img_scale without flipping")
    for step in transforms:
        if step.get("type") == "Resize":
            pipeline["keep_ratio"] = _get(step, "keep_ratio", bool, where, f"{name} Resize keep_ratio", True, fix)
        elif step.get("type") == "Normalize":
            if not _get(step, "to_rgb", bool, where, f"{name} Normalize to_rgb", True, fix):
                raise ConfigError(f"{where}: Normalize has to_rgb=False (a BGR model); not supported")
            for key in ("mean", "std"):
                if problem := normalize_problem(step.get(key), key):
                    raise ConfigError(f"{where}: {name} Normalize {key} {shown(step.get(key))}: {problem}; {fix}")
                pipeline[key] = [float(v) for v in step[key]]
    return pipeline


def _hrda_scale(model: dict, where: str, fix: str) -> float:
    """The context scale of HRDA's two ``scales`` (the larger must be 1)."""
    scales = _get(model, "scales", list, where, "model.scales", [0.5, 1], fix)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in scales):
        raise ConfigError(f"{where}: model.scales {shown(scales)}: HRDA's scales must be two numbers, e.g. [1, 0.5]; "
                          f"{fix}")
    scales = sorted(scales)
    if len(scales) != 2 or scales[1] != 1 or not 0 < scales[0] < 1:
        raise ConfigError(f"{where}: HRDA scales {scales!r}: layerseg runs two scales, the larger 1 and the other "
                          f"between 0 and 1; {fix}")
    return float(scales[0])


def inference_from_config(config: dict, kind: str, where: str, notes: list[str], fix: str = FILE_FIX) -> dict | None:
    """``inference`` settings: sliding windows (and HRDA's scales and detail crops); None for ``whole``."""
    model = _get(config, "model", dict, where, "model", {}, fix)
    test_cfg, name = _get(model, "test_cfg", dict, where, "model.test_cfg", fix=fix), "model.test_cfg"
    if test_cfg is None:
        test_cfg, name = _get(config, "test_cfg", dict, where, "test_cfg", fix=fix), "test_cfg"
    if test_cfg is None:
        if kind == "hrda":
            notes.append(f"{where} has no test_cfg; using the released HRDA test procedure")
        return dict(HRDA_INFERENCE) if kind == "hrda" else None
    mode = _get(test_cfg, "mode", str, where, f"{name}.mode", "whole", fix)
    if mode not in ("whole", "slide"):
        raise ConfigError(f"{where}: test_cfg mode {mode!r} is not whole or slide")
    settings, names = {}, {"crop": f"{name}.crop_size", "stride": f"{name}.stride"}
    if mode == "slide":
        settings = {"crop": _square(test_cfg.get("crop_size"), f"{where}: {names['crop']}", fix),
                    "stride": _square(test_cfg.get("stride"), f"{where}: {names['stride']}", fix, window=False)}
    if kind != "hrda":
        check_inference(settings, where, names, fix)
        return settings or None
    if mode != "slide":
        raise ConfigError(f"{where}: an HRDA test_cfg must slide (mode='slide'); got {mode!r}")
    lr_scale = _hrda_scale(model, where, fix)
    if model.get("hr_slide_inference", True) is not True:
        raise ConfigError(f"{where}: hr_slide_inference={model['hr_slide_inference']!r} is not supported")
    hr_crop = _square(model.get("hr_crop_size", (HRDA_INFERENCE["hr_crop"],) * 2), f"{where}: model.hr_crop_size",
                      fix)
    overlapping = _get(model, "hr_slide_overlapping", bool, where, "model.hr_slide_overlapping", True, fix)
    inference = {"lr_scale": lr_scale, "hr_crop": hr_crop, "hr_stride": hr_crop // 2 if overlapping else hr_crop,
                 **settings}
    check_inference(inference, where, {**names, "lr_scale": "model.scales", "hr_crop": "model.hr_crop_size",
                                       "hr_stride": "model.hr_crop_size / 2 (hr_slide_overlapping)"}, fix)
    return inference


def checked_test_scale(test_scale, text: str | None = None) -> list[int]:
    """``--test-scale`` (w, h) as a checked img_scale (:func:`pipeline_sizes.checked_test_scale`); ``text``: as the
    user wrote it."""
    try:
        return list(pipeline_sizes.checked_test_scale(test_scale, text))
    except PipelineError as error:
        raise ConfigError(str(error)) from None


def read_test_settings(kind: str, meta: dict, config_file: str | Path | None = None,
                       test_scale: tuple[int, int] | None = None,
                       checkpoint: str | Path | None = None) -> tuple[dict, dict | None, list[str]]:
    """(test_pipeline, inference or None, notes) for an imported ``kind`` (``daformer`` or ``hrda``).

    Sources, first found: ``config_file``, the checkpoint's ``meta['config']``, the released settings.
    ``test_scale`` (w, h) replaces the img_scale of any of them. ``checkpoint`` names the meta config's file.
    """
    notes: list[str] = []
    scale = checked_test_scale(test_scale) if test_scale is not None else None
    config, where, source, fix = None, None, None, FILE_FIX
    if config_file is not None:
        config, where = read_config_file(config_file), str(config_file)
    elif isinstance(meta.get("config"), str):
        source, fix = "the checkpoint's meta config", META_FIX
        where = f"{checkpoint}: meta config" if checkpoint is not None else source
        try:
            config = parse_config_text(meta["config"])
        except (SyntaxError, RecursionError):
            notes.append("the checkpoint's meta config is not readable Python; using the released GTA->Cityscapes "
                         "test settings")
    try:
        if config is None:
            pipeline = released_test_pipeline(kind)
            inference = dict(HRDA_INFERENCE) if kind == "hrda" else None
        else:
            pipeline = pipeline_from_config(config, kind, where, notes, source, fix, scale_given=scale is not None)
            inference = inference_from_config(config, kind, where, notes, fix)
    except PipelineError as error:
        raise ConfigError(str(error)) from None
    if scale is not None:
        pipeline["img_scale"], pipeline["source"] = scale, f"{pipeline['source']}, img_scale from --test-scale"
    return pipeline, inference, notes
