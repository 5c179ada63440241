"""Reading and checking mergekit recipes that use ``layerwise_seg``."""

from __future__ import annotations

from pathlib import Path

import yaml
from mergekit.config import MergeConfiguration
from pydantic import ValidationError

from layerseg_merge.architectures import check_compatible, layout_of
from layerseg_merge.method import METHOD_NAME


class RecipeError(ValueError):
    """A recipe that cannot be merged as written."""


def load_recipe(path: str | Path) -> tuple[MergeConfiguration, str]:
    """Parse and check a recipe; return it with its source text."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RecipeError(f"{path}: cannot read recipe ({error.strerror})") from error
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping with merge_method, models, ...")
    try:
        config = MergeConfiguration.model_validate(data)
    except ValidationError as error:
        raise RecipeError(f"{path}: not a valid mergekit recipe:\n{error}") from error
    if config.merge_method == METHOD_NAME:
        check_layerwise_recipe(config, str(path))
    return config, source


def check_layerwise_recipe(config: MergeConfiguration, where: str) -> None:
    """The anchor rules that mergekit itself does not enforce."""
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
    anchor = layout_of(config.base_model.model.path)
    for model in listed:
        if model != config.base_model:
            check_compatible(anchor, layout_of(model.model.path))
