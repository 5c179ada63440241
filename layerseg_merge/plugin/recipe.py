"""Reading and checking mergekit recipes; ``layerwise_seg`` recipes are checked strictly."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from difflib import get_close_matches

from mergekit.config import MergeConfiguration
from pydantic import ValidationError

from layerseg_merge.architectures import check_compatible, layout_of
from layerseg_merge.engine.recipe_yaml import RecipeError, parse_yaml
from layerseg_merge.engine.settings import (
    BUFFER_POLICIES,
    HEAD_POLICIES,
    METHOD_NAME,
    PER_INPUT_PARAMETERS,
    SHAPES,
    SHARED_PARAMETERS,
    check_anchor_and_count,
    check_choice,
    check_unit_interval,
    check_weight,
    check_weights,
    input_weight,
)
from layerseg_merge.io.hub import resolve_model_path

LOG = logging.getLogger("layerseg_merge.method")  # the method's warnings, under one logger name


def _validation_message(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "recipe"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def parse_recipe(data, where: str = "recipe", resolve_models: Callable[[dict], bool] | None = None
                 ) -> MergeConfiguration:
    """Check a recipe already read into a mapping (``where`` names it in messages).

    ``resolve_models`` may replace model paths in (a copy of) the mapping and says whether it did: the
    API imports ``.pth`` models this way (:func:`layerseg_merge.formats.cache.import_checkpoint_models`),
    after the recipe's own structure is checked and before its models are.
    """
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe is a YAML mapping with merge_method, models, ...")
    layerwise = data.get("merge_method") == METHOD_NAME
    if layerwise:
        _check_top_level(data, where)
    config = _validated(data, where)
    if layerwise:
        check_layerwise_structure(config, where)  # before any .pth is imported into the cache
    if resolve_models is not None:
        data = copy.deepcopy(data)
        if resolve_models(data):
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
    # a gradient or filtered weight counts as positive here; its values are checked one by one (check_parameter_keys)
    weights = [input_weight(m.parameters, config.parameters) for m in config.models or []]
    weights = [float(w) if isinstance(w, int | float) and not isinstance(w, bool) else 1.0 for w in weights]
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
    from layerseg_merge.models.info import ModelInfo

    mine, theirs = ModelInfo.from_dir(anchor).mmseg, ModelInfo.from_dir(other).mmseg
    if mine and theirs and mine.get("variant") != theirs.get("variant"):
        raise RecipeError(f"{where}: MiT variants differ: the anchor {anchor} is MiT-{mine['variant'].upper()}, "
                          f"{other} is MiT-{theirs['variant'].upper()}; layer-wise merging needs one backbone")


# ----------------------------------------------------------------- layerwise_seg parameters



def _suggest(key: str, choices: Sequence[str]) -> str:
    close = get_close_matches(key, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


FLOAT_DTYPES = ("float32", "bfloat16", "float16", "float64")
_CHOICES = {"schedule": SHAPES, "heads": HEAD_POLICIES, "buffers": BUFFER_POLICIES}


def _leaves(setting, key: str, where: str) -> list:
    """The scalar values of one parameter setting (a value, a gradient list, filtered conditions)."""
    value = getattr(setting, "value", setting)  # a ConditionalParameter
    if isinstance(value, list):
        if not value:
            raise RecipeError(f"parameter {key!r} {where} is an empty list; give a value, or a gradient "
                              "list of at least one value")
        return [leaf for item in value for leaf in _leaves(item, key, where)]
    return [value]


def _check_value(key: str, setting, where: str) -> None:
    """Each value of a parameter setting, through the schedule's own checks (their messages, located)."""
    for leaf in _leaves(setting, key, where):
        try:
            if key in _CHOICES:
                check_choice(key, leaf, _CHOICES[key])
                continue
            if isinstance(leaf, bool) or not isinstance(leaf, int | float | str):
                raise ValueError(f"layerwise_seg: {key} must be a number; got {leaf!r}")
            try:
                number = float(leaf)
            except ValueError:
                raise ValueError(f"layerwise_seg: {key} must be a number; got {leaf!r}") from None
            check_weight(number) if key == "weight" else check_unit_interval(key, number)
        except ValueError as error:
            raise RecipeError(f"parameter {key!r} {where}: {str(error).removeprefix('layerwise_seg: ')}") from None


def _check_scope(scope: dict | None, where: str, allowed: Sequence[str]) -> None:
    for key, setting in (scope or {}).items():
        if key in allowed:
            _check_value(key, setting, where)
            continue
        if key in SHARED_PARAMETERS:
            raise RecipeError(f"parameter {key!r} {where} would be ignored: it applies to the whole merge; "
                              "move it to the recipe's top-level `parameters:`")
        raise RecipeError(f"unknown parameter {key!r} {where}{_suggest(key, allowed)}; layerwise_seg takes "
                          f"{', '.join(sorted(allowed))} there")


def check_parameter_keys(config) -> None:
    """Unknown, misplaced or impossible ``layerwise_seg`` parameters are errors (mergekit would ignore them
    or fall back to defaults), and so is a non-float ``dtype:``/``out_dtype:``.

    Recipe-, module- and slice-level ``parameters:`` take every parameter (``weight`` there is
    the default of each input); a model's own ``parameters:`` take ``weight`` only.
    """
    every = SHARED_PARAMETERS + PER_INPUT_PARAMETERS
    for key in ("dtype", "out_dtype"):
        value = getattr(config, key, None)
        if value is not None and value.removeprefix("torch.") not in FLOAT_DTYPES:
            raise RecipeError(f"{key}: {value} is not a floating-point dtype; layerwise_seg merges in "
                              f"{', '.join(FLOAT_DTYPES)} (integer tensors always keep their own dtype)")

    def check_models(models, slices, where: str) -> None:
        for model in models or []:
            _check_scope(model.parameters, f"for model {model.model}", PER_INPUT_PARAMETERS)
        for index, piece in enumerate(slices or []):
            _check_scope(piece.parameters, f"in {where}slices[{index}].parameters", every)
            for source in piece.sources:
                _check_scope(source.parameters, f"for model {source.model}", PER_INPUT_PARAMETERS)

    _check_scope(config.parameters, "in the recipe's `parameters:`", every)
    check_models(config.models, config.slices, "")
    for name, module in (config.modules or {}).items():
        _check_scope(module.parameters, f"in modules.{name}.parameters", every)
        check_models(module.models, module.slices, f"modules.{name}.")


def parameter_filters(config) -> list[tuple[str, str]]:
    """Every (parameter, filter) of a recipe's conditional parameters, in recipe order."""
    scopes = [config.parameters, *(m.parameters for m in config.models or [])]
    for piece in config.slices or []:
        scopes += [piece.parameters, *(source.parameters for source in piece.sources)]
    for module in (config.modules or {}).values():
        scopes += [module.parameters, *(m.parameters for m in module.models or [])]
    found = []
    for scope in scopes:
        for key, setting in (scope or {}).items():
            for condition in setting if isinstance(setting, list) else [setting]:
                name = getattr(condition, "filter", None)
                if name not in (None, "*") and (key, name) not in found:
                    found.append((key, name))
    return found


def warn_unmatched_filters(config, tensor_names: Sequence[str]) -> list[str]:
    """Warn about each parameter ``filter:`` that matches no output tensor (it changes nothing)."""
    messages = []
    for key, name in parameter_filters(config):
        if not any(name in tensor for tensor in tensor_names):
            messages.append(f"layerwise_seg: the filter {name!r} of parameter {key!r} matches no tensor of the "
                            "anchor, so it changes nothing; check its spelling against the anchor's tensor names")
            LOG.warning(messages[-1])
    return messages
