"""The test-time settings of an mmseg 0.x config: what ``layerseg eval`` must follow to reproduce ``tools/test.py``.

A config comes as the text a training checkpoint keeps in ``meta['config']`` (mmcv's
``Config.pretty_text``, Python literals), or as the JSON file the released checkpoints ship next
to the weights. Only literals are read (``ast``, never executed). From it:

* the test pipeline (``layerseg_mmseg.test_pipeline``): ``MultiScaleFlipAug.img_scale``,
  ``Resize.keep_ratio``, ``Normalize.mean/std``;
* the segmentor's test procedure (``layerseg_mmseg.inference``): ``test_cfg`` (``whole`` or
  ``slide`` with ``crop_size``/``stride``) and HRDA's ``scales``, ``hr_crop_size`` and
  ``hr_slide_overlapping``.

Without a config the released GTA->Cityscapes settings of the kind apply.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from layerseg_merge.eval.mmseg_pipeline import released_test_pipeline

# HRDA / MIC test-time settings of the released configs (gtaHR2csHR_hrda.py, gtaHR2csHR_mic_hrda.py).
HRDA_INFERENCE = {"lr_scale": 0.5, "hr_crop": 512, "hr_stride": 256, "crop": 1024, "stride": 512}


class ConfigError(ValueError):
    """An mmseg config whose test settings cannot be read or followed; the message names the setting."""


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
        config = json.loads(text)
    except json.JSONDecodeError:
        try:
            config = parse_config_text(text)
        except SyntaxError as error:
            raise ConfigError(f"{path}: neither JSON nor a Python config ({error.msg}, line {error.lineno})") \
                from error
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: not a config (expected an object)")
    if "_base_" in config:
        raise ConfigError(f"{path}: inherits from _base_ files, which are not resolved here; pass the JSON config "
                          "saved next to the checkpoint (it has every setting resolved)")
    return config


def _test_pipeline_list(config: dict):
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    for split in ("test", "val"):
        entry = data.get(split)
        if isinstance(entry, dict) and isinstance(entry.get("pipeline"), list):
            return entry["pipeline"]
    return config.get("test_pipeline") if isinstance(config.get("test_pipeline"), list) else None


def _square(value, name: str, where: str) -> int:
    values = [value] * 2 if isinstance(value, int) else list(value or [])
    if len(values) != 2 or not all(isinstance(v, int) and v > 0 for v in values) or values[0] != values[1]:
        raise ConfigError(f"{where}: {name} {value!r} is not a square size; layerseg runs square windows only")
    return values[0]


def pipeline_from_config(config: dict, kind: str, where: str, notes: list[str]) -> dict:
    """``test_pipeline`` settings from the config's test pipeline (the kind's released ones where it has none)."""
    pipeline = released_test_pipeline(kind, f"{where}")
    steps = _test_pipeline_list(config)
    if steps is None:
        notes.append(f"{where} has no test pipeline; using the released GTA->Cityscapes one")
        return released_test_pipeline(kind)
    aug = next((s for s in steps if isinstance(s, dict) and s.get("type") == "MultiScaleFlipAug"), None)
    transforms = aug.get("transforms", []) if aug else steps
    scale = aug.get("img_scale") if aug else None
    if aug is None:
        resize = next((s for s in steps if isinstance(s, dict) and s.get("type") == "Resize"), {})
        scale = resize.get("img_scale")
    if isinstance(scale, list) and len(scale) == 1 and isinstance(scale[0], list | tuple):
        scale = scale[0]
    if not (isinstance(scale, list | tuple) and len(scale) == 2 and all(isinstance(v, int) for v in scale)):
        raise ConfigError(f"{where}: test img_scale {scale!r} is not one (w, h) scale; multi-scale testing is not "
                          "reproduced by layerseg eval")
    if aug and (aug.get("img_ratios") or aug.get("flip")):
        notes.append(f"{where}: the test pipeline uses flip/multi-scale augmentation; layerseg eval runs the "
                     "single scale img_scale without flipping")
    pipeline["img_scale"] = [int(scale[0]), int(scale[1])]
    for step in transforms:
        if not isinstance(step, dict):
            continue
        if step.get("type") == "Resize":
            pipeline["keep_ratio"] = bool(step.get("keep_ratio", True))
        elif step.get("type") == "Normalize":
            if not step.get("to_rgb", True):
                raise ConfigError(f"{where}: Normalize has to_rgb=False (a BGR model); not supported")
            pipeline["mean"] = [float(v) for v in step["mean"]]
            pipeline["std"] = [float(v) for v in step["std"]]
    return pipeline


def inference_from_config(config: dict, kind: str, where: str, notes: list[str]) -> dict | None:
    """``inference`` settings: sliding windows (and HRDA's scales and detail crops); None for ``whole``."""
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    test_cfg = model.get("test_cfg") if isinstance(model.get("test_cfg"), dict) else \
        (config.get("test_cfg") if isinstance(config.get("test_cfg"), dict) else None)
    if test_cfg is None:
        if kind == "hrda":
            notes.append(f"{where} has no test_cfg; using the released HRDA test procedure")
        return dict(HRDA_INFERENCE) if kind == "hrda" else None
    mode = test_cfg.get("mode", "whole")
    if mode not in ("whole", "slide"):
        raise ConfigError(f"{where}: test_cfg mode {mode!r} is not whole or slide")
    settings = {}
    if mode == "slide":
        settings = {"crop": _square(test_cfg.get("crop_size"), "test_cfg.crop_size", where),
                    "stride": _square(test_cfg.get("stride"), "test_cfg.stride", where)}
    if kind != "hrda":
        return settings or None
    if mode != "slide":
        raise ConfigError(f"{where}: an HRDA test_cfg must slide (mode='slide'); got {mode!r}")
    scales = sorted(model.get("scales", [0.5, 1]))
    if len(scales) != 2 or scales[1] != 1:
        raise ConfigError(f"{where}: HRDA scales {scales!r}: layerseg runs two scales, the larger 1")
    if model.get("hr_slide_inference", True) is not True:
        raise ConfigError(f"{where}: hr_slide_inference=False is not supported")
    hr_crop = _square(model.get("hr_crop_size", (HRDA_INFERENCE["hr_crop"],) * 2), "hr_crop_size", where)
    overlapping = model.get("hr_slide_overlapping", True)
    return {"lr_scale": float(scales[0]), "hr_crop": hr_crop, "hr_stride": hr_crop // 2 if overlapping else hr_crop,
            **settings}


def read_test_settings(kind: str, meta: dict, config_file: str | Path | None = None,
                  test_scale: tuple[int, int] | None = None) -> tuple[dict, dict | None, list[str]]:
    """(test_pipeline, inference or None, notes) for an imported ``kind`` (``daformer`` or ``hrda``).

    Sources, first found: ``config_file``, the checkpoint's ``meta['config']``, the released settings.
    ``test_scale`` (w, h) replaces the img_scale of any of them.
    """
    notes: list[str] = []
    config, where = None, None
    if config_file is not None:
        config, where = read_config_file(config_file), str(config_file)
    elif isinstance(meta.get("config"), str):
        try:
            config, where = parse_config_text(meta["config"]), "the checkpoint's meta config"
        except SyntaxError:
            notes.append("the checkpoint's meta config is not readable Python; using the released GTA->Cityscapes "
                         "test settings")
    if config is None:
        pipeline = released_test_pipeline(kind)
        inference = dict(HRDA_INFERENCE) if kind == "hrda" else None
    else:
        pipeline = pipeline_from_config(config, kind, where, notes)
        inference = inference_from_config(config, kind, where, notes)
    if test_scale is not None:
        pipeline["img_scale"], pipeline["source"] = [int(test_scale[0]), int(test_scale[1])], \
            f"{pipeline['source']}, img_scale from --test-scale"
    return pipeline, inference, notes
