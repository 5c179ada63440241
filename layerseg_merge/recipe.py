"""Reading and checking mergekit recipes; ``layerwise_seg`` recipes are checked strictly."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from mergekit.config import MergeConfiguration
from pydantic import ValidationError

from layerseg_merge.architectures import check_compatible, layout_of
from layerseg_merge.hub import resolve_model_path
from layerseg_merge.method import METHOD_NAME, RecipeError, check_parameter_keys


def _validation_message(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "recipe"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _replace_models(data: dict, replace) -> None:
    """Apply ``replace`` to every model path string of a raw recipe (models, slices, modules, base_model)."""
    def one(holder: dict, key: str) -> None:
        if isinstance(holder, dict) and isinstance(holder.get(key), str):
            holder[key] = replace(holder[key])

    def section(part: dict) -> None:
        one(part, "base_model")
        for entry in part.get("models") or []:
            one(entry, "model")
        for piece in part.get("slices") or []:
            one(piece, "base_model")
            for source in (piece.get("sources") or []) if isinstance(piece, dict) else []:
                one(source, "model")

    section(data)
    for module in (data.get("modules") or {}).values():
        if isinstance(module, dict):
            section(module)


def import_checkpoint_models(data: dict, log=lambda message: None) -> dict[str, str]:
    """Replace ``.pth`` model paths by their imported directories (a cache keyed by content); returns the map."""
    from layerseg_merge.formats.cache import imported_dir, is_checkpoint_file

    imported: dict[str, str] = {}

    def replace(path: str) -> str:
        if not is_checkpoint_file(path):
            return path
        if path not in imported:
            imported[path] = str(imported_dir(path, log=log))
        return imported[path]

    _replace_models(data, replace)
    return imported


def load_recipe(path: str | Path, import_checkpoints: bool = False,
                log=lambda message: None) -> tuple[MergeConfiguration, str]:
    """Parse and check a recipe file; return it with its source text.

    ``import_checkpoints``: models named by an mmseg ``.pth`` file are imported (once, into a
    cache) and merged from their model directories.
    """
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"{path}: cannot read recipe ({getattr(error, 'strerror', None) or error})") from error
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from error
    return parse_recipe(data, str(path), import_checkpoints, log), source


def parse_recipe(data, where: str = "recipe", import_checkpoints: bool = False,
                 log=lambda message: None) -> MergeConfiguration:
    """Check a recipe already read into a mapping (``where`` names it in messages)."""
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe is a YAML mapping with merge_method, models, ...")
    if import_checkpoints:
        data = copy.deepcopy(data)
        import_checkpoint_models(data, log)
    if data.get("merge_method") == METHOD_NAME:
        unknown = sorted(set(data) - set(MergeConfiguration.model_fields))
        if unknown:
            raise RecipeError(f"{where}: unknown recipe key {unknown[0]!r}; a recipe takes "
                              f"{', '.join(sorted(MergeConfiguration.model_fields))} (layerwise_seg parameters "
                              "go under `parameters:`)")
    try:
        config = MergeConfiguration.model_validate(data)
    except ValidationError as error:
        raise RecipeError(f"{where}: not a valid mergekit recipe: {_validation_message(error)}") from error
    except RuntimeError as error:  # mergekit's own validators raise RuntimeError
        raise RecipeError(f"{where}: not a valid mergekit recipe: {error}") from error
    if config.merge_method == METHOD_NAME:
        check_layerwise_recipe(config, where)
    return config


def _scalar_weight(parameters: dict | None) -> float | None:
    value = (parameters or {}).get("weight")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def model_directory(model, where: str) -> str:
    """The local directory of a recipe model (a folder, or a Hub id resolved through the cache)."""
    try:
        return resolve_model_path(model.model.path, model.model.revision)
    except (FileNotFoundError, ValueError) as error:
        raise RecipeError(f"{where}: {error}") from error


def check_layerwise_recipe(config: MergeConfiguration, where: str) -> None:
    """What mergekit itself does not enforce: the anchor, parameter names, weights, compatible models."""
    if config.base_model is None:
        raise RecipeError(
            f"{where}: layerwise_seg needs an anchor: add `base_model:` naming one of the models"
        )
    listed = [m.model for m in config.models or []]
    if listed and config.base_model not in listed:
        raise RecipeError(
            f"{where}: the anchor {config.base_model} (base_model) is not among the models; "
            "list it under `models:` too, with its weight"
        )
    if listed and len(listed) < 2:
        raise RecipeError(f"{where}: layerwise_seg merges at least 2 models; the recipe lists 1")
    try:
        check_parameter_keys(config)
    except RecipeError as error:
        raise RecipeError(f"{where}: {error}") from error
    default = _scalar_weight(config.parameters)
    weights = [_scalar_weight(m.parameters) for m in config.models or []]
    weights = [w if w is not None else default if default is not None else 1.0 for w in weights]
    if weights and all(w == 0 for w in weights):
        raise RecipeError(f"{where}: every model has weight 0; give at least one model a positive weight")
    directories = {model: model_directory(model, where) for model in {*listed, config.base_model}}
    anchor = layout_of(directories[config.base_model])
    for model in listed:
        if model != config.base_model:
            _check_mit_variants(directories[config.base_model], directories[model], where)
            check_compatible(anchor, layout_of(directories[model]))


def _check_mit_variants(anchor: str, other: str, where: str) -> None:
    """Two imported mmseg models on different MiT variants: say so in the field's words."""
    from layerseg_merge.formats.mmseg import mmseg_settings

    mine, theirs = mmseg_settings(anchor), mmseg_settings(other)
    if mine and theirs and mine.get("variant") != theirs.get("variant"):
        raise RecipeError(f"{where}: MiT variants differ: the anchor {anchor} is MiT-{mine['variant'].upper()}, "
                          f"{other} is MiT-{theirs['variant'].upper()}; layer-wise merging needs one backbone")
