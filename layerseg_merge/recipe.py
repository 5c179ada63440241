"""Reading and checking mergekit recipes; ``layerwise_seg`` recipes are checked strictly."""

from __future__ import annotations

import copy
from pathlib import Path

from mergekit.config import MergeConfiguration
from pydantic import ValidationError

from layerseg_merge.architectures import check_compatible, layout_of
from layerseg_merge.hub import resolve_model_path
from layerseg_merge.method import METHOD_NAME, check_parameter_keys
from layerseg_merge.recipe_yaml import RecipeError, parse_yaml, read_recipe_file, replace_model_paths
from layerseg_merge.schedule import check_anchor_and_count, check_weights


def _validation_message(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "recipe"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def import_checkpoint_models(data: dict, log=lambda message: None) -> dict[str, str]:
    """Replace ``.pth`` model paths by their imported directories (a cache keyed by content); returns the map."""
    from layerseg_merge.formats.cache import evict, imported_dir, is_checkpoint_file, max_bytes

    imported: dict[str, str] = {}

    def replace(path: str) -> str:
        if not is_checkpoint_file(path):
            return path
        if path not in imported:
            imported[path] = str(imported_dir(path, log=log))
        return imported[path]

    replace_model_paths(data, replace)
    if imported:
        evict(max_bytes(), keep={Path(p) for p in imported.values()}, log=log)
    return imported


def load_recipe(path: str | Path, import_checkpoints: bool = False,
                log=lambda message: None) -> tuple[MergeConfiguration, str]:
    """Parse and check a recipe file; return it with its source text.

    ``import_checkpoints``: models named by an mmseg ``.pth`` file are imported (once, into a
    cache) and merged from their model directories.
    """
    data, source = read_recipe_file(path)
    return parse_recipe(data, str(path), import_checkpoints, log), source


def parse_recipe(data, where: str = "recipe", import_checkpoints: bool = False,
                 log=lambda message: None) -> MergeConfiguration:
    """Check a recipe already read into a mapping (``where`` names it in messages)."""
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe is a YAML mapping with merge_method, models, ...")
    layerwise = data.get("merge_method") == METHOD_NAME
    if layerwise:
        _check_top_level(data, where)
    config = _validated(data, where)
    if layerwise:
        check_layerwise_structure(config, where)  # before any .pth is imported into the cache
    if import_checkpoints:
        data = copy.deepcopy(data)
        if import_checkpoint_models(data, log):
            config = _validated(data, where)
    if layerwise:
        check_layerwise_models(config, where)
    return config


def _validated(data: dict, where: str) -> MergeConfiguration:
    try:
        return MergeConfiguration.model_validate(data)
    except ValidationError as error:
        raise RecipeError(f"{where}: not a valid mergekit recipe: {_validation_message(error)}") from error
    except RuntimeError as error:  # mergekit's own validators raise RuntimeError
        raise RecipeError(f"{where}: not a valid mergekit recipe: {error}") from error


def _check_top_level(data: dict, where: str) -> None:
    unknown = sorted(set(data) - set(MergeConfiguration.model_fields))
    if unknown:
        raise RecipeError(f"{where}: unknown recipe key {unknown[0]!r}; a recipe takes "
                          f"{', '.join(sorted(MergeConfiguration.model_fields))} (layerwise_seg parameters "
                          "go under `parameters:`)")


def check_recipe_source(source: str, where: str = "recipe") -> None:
    """What only the recipe's text shows (mergekit drops it when it parses): keys given twice, unknown
    top-level keys, alias bombs. Run for ``layerwise_seg`` recipes by the plain ``mergekit-yaml`` too."""
    data = parse_yaml(source, where)
    if isinstance(data, dict) and data.get("merge_method") == METHOD_NAME:
        _check_top_level(data, where)


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
    """What mergekit itself does not enforce: :func:`check_layerwise_structure`, then the models themselves."""
    check_layerwise_structure(config, where)
    check_layerwise_models(config, where)


def check_layerwise_structure(config: MergeConfiguration, where: str) -> None:
    """The anchor, parameter names and values, weights, model paths: nothing is read from the models."""
    for model in config.referenced_models():
        if model.lora is not None:
            raise RecipeError(f"{where}: mergekit reads the model path '{model.model.path}+{model.lora.path}' as "
                              f"model {model.model.path} with the LoRA adapter {model.lora.path}; layerwise_seg "
                              "merges whole checkpoints: rename the folder without '+'")
    listed = [m.model for m in config.models or []]
    default = _scalar_weight(config.parameters)
    weights = [_scalar_weight(m.parameters) for m in config.models or []]
    weights = [w if w is not None else default if default is not None else 1.0 for w in weights]
    try:
        if listed or config.base_model is None:  # (slices and modules: mergekit checks each group)
            check_anchor_and_count(config.base_model, listed)
        check_parameter_keys(config)
        check_weights(weights)
    except ValueError as error:
        raise RecipeError(f"{where}: {error}") from error


def check_layerwise_models(config: MergeConfiguration, where: str) -> None:
    """Every model is there, supported, and shares the anchor's backbone."""
    listed = [m.model for m in config.models or []]
    # in recipe order, so that the first missing model is the one named
    directories = {model: model_directory(model, where) for model in dict.fromkeys([*listed, config.base_model])}
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
