"""The mergekit merge method ``layerwise_seg``: schedule coefficients plus a buffer policy.

The kernel looks each output tensor up in the anchor's layout (role, depth,
stored dtype), asks :mod:`layerseg_merge.schedule` for the coefficients and sums.
A before-planning check (:meth:`LayerwiseSegMerge.validate_inputs`) refuses
unsupported or incompatible models before anything is written.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import torch
from mergekit.common import ModelReference
from mergekit.merge_methods import (
    BasePolicy,
    InputContract,
    OptionalTensorPolicy,
    PerInput,
    TensorGroup,
    merge_method,
)
from mergekit.merge_methods.easy_define import FunctionalGroupMergeMethod
from pydantic import AfterValidator

from layerseg_merge import METHOD_NAME, mergekit_compat
from layerseg_merge.architectures.layout import ModelLayout, check_compatible, layout_of
from layerseg_merge.hub import resolve_model_path
from layerseg_merge.recipe_yaml import RecipeError
from layerseg_merge.schedule import (
    BUFFER_POLICIES,
    HEAD_POLICIES,
    SHAPES,
    ScheduleSettings,
    check_anchor_and_count,
    check_choice,
    check_unit_interval,
    check_weight,
)
from layerseg_merge.tensor_merge import (  # noqa: F401 (running_mean_name re-exported)
    NonFiniteOutput,
    NonFiniteTensor,
    cast_checked,
    is_finite,
    merge_tensor,
    running_mean_name,
)
from layerseg_merge.tensor_plan import TensorPlan, plan_tensor

LOG = logging.getLogger(__name__)


def _choice(name: str, choices: Sequence[str]):
    return Annotated[str, AfterValidator(lambda value: check_choice(name, value, choices))]


def _unit(name: str):
    return Annotated[float, AfterValidator(lambda value: check_unit_interval(name, value))]


def model_layout(model: Hashable) -> ModelLayout:
    """The layout of a mergekit input (a :class:`ModelReference` to a local directory)."""
    if not isinstance(model, ModelReference):
        raise TypeError(
            "layerwise_seg reads each tensor's depth from the anchor's checkpoint; "
            "run it through a mergekit recipe (mergekit-yaml, `layerseg merge` or run_merge)"
        )
    return layout_of(resolve_model_path(model.model.path, model.model.revision))


def _running_mean_companion(name: str) -> dict[str, str]:
    """What the kernel needs besides a tensor: a BatchNorm variance's running mean (`buffers: pooled`)."""
    return {"running_mean": running_mean_name(name)} if name.endswith("running_var") else {}


def layerwise_seg_kernel(
    group: TensorGroup,
    weight: PerInput[Annotated[float, AfterValidator(check_weight)]] = 1.0,
    uniform_until: _unit("uniform_until") = 0.5,
    anchor_max: _unit("anchor_max") = 1.0,
    schedule: _choice("schedule", SHAPES) = "linear",
    heads: _choice("heads", HEAD_POLICIES) = "anchor",
    buffers: _choice("buffers", BUFFER_POLICIES) = "pooled",
) -> torch.Tensor:
    entries = group.entries
    settings = ScheduleSettings(uniform_until, anchor_max, schedule, heads)
    anchor = next(i for i, e in enumerate(entries) if e.is_base)
    layouts = [model_layout(e.id) for e in entries]
    plan = plan_tensor(layouts, anchor, group.metadata.name, [weight[e.id] for e in entries], settings)
    members = [entries[i] for i in plan.members]
    means = None
    if buffers == "pooled" and plan.info.name.endswith("running_var"):
        means = mergekit_compat.running_means(group, members, list(plan.names))
    try:
        merged = merge_tensor([e.tensor for e in members], plan.coefficients, plan.anchor_position, plan.info.name,
                              buffers, means, labels=[str(e.id) for e in members])
    except NonFiniteTensor as error:
        index, name = plan.members[error.index], plan.names[error.index]
        raise _cast_or_model(entries[index].id, name, entries[index].tensor.dtype,
                             layouts[index].tensors[name].dtype) or error from None
    # the common dtype mergekit promoted the inputs to
    return cast_checked(merged, group.base.tensor.dtype, plan.info.name, "the dtype of the inputs as loaded")


def _cast_or_model(model: ModelReference, name: str, loaded: torch.dtype, stored: torch.dtype
                   ) -> NonFiniteOutput | None:
    """An input that is not finite as loaded: the recipe's ``dtype:`` cast overflowed it where it is finite as
    stored (an error saying so), else None (the model holds NaN or infinity: the kernel's own message)."""
    if loaded == stored:
        return None
    from mergekit.io.tasks import LoaderCache

    if not is_finite(LoaderCache().get(model).get_tensor(name, device="cpu")):
        return None
    return NonFiniteOutput(f"tensor {name!r} of model {model} overflows {loaded} (the recipe's dtype) although it is "
                           f"finite as stored ({stored}); merge in a wider dtype (recipe `dtype: float32`)")


class LayerwiseSegMerge(FunctionalGroupMergeMethod):
    """``layerwise_seg`` with a before-planning check of the whole set of models."""

    def validate_inputs(
        self,
        input_ids: Sequence[Hashable],
        base_id: Hashable | None = None,
        *,
        group_name: str | None = None,
    ) -> None:
        where = f" ({group_name})" if group_name else ""
        check_anchor_and_count(base_id, list(input_ids), where)
        super().validate_inputs(input_ids, base_id, group_name=group_name)
        if all(isinstance(i, ModelReference) for i in input_ids):
            _check_models(tuple(input_ids), base_id)

    def unused_parameters(self, config) -> list[str]:
        """mergekit's planning hook: unknown, misplaced or impossible parameters are errors here."""
        return begin_merge(config)

    def model_card(self, config, config_yaml: str, out_path: str) -> str:
        """mergekit's card hook: the segmentation card, with the coefficients of this merge."""
        return segmentation_card(config, config_yaml, replan(config, out_path))


@lru_cache(maxsize=64)
def _check_models(models: tuple[ModelReference, ...], anchor: ModelReference) -> None:
    anchor_layout = model_layout(anchor)
    for model in models:
        if model != anchor:
            check_compatible(anchor_layout, model_layout(model))


_spec = merge_method(
    layerwise_seg_kernel,
    name=METHOD_NAME,
    pretty_name="Layer-wise segmentation merge",
    reference_url="https://arxiv.org/abs/2409.15813",
    contract=InputContract(base=BasePolicy.REQUIRED, min_inputs=2),
    optional_tensor_policy=OptionalTensorPolicy.PASSTHROUGH_BASE_SINGLETON,
    **mergekit_compat.kernel_spec_options(_running_mean_companion),
).spec
layerwise_seg = LayerwiseSegMerge(_spec, layerwise_seg_kernel)


def _task_parameters(task) -> dict:
    return dict(getattr(task.parameters, "data", task.parameters))  # ImmutableMap or its immutables.Map


def plan_of_task(task) -> TensorPlan:
    """The :func:`plan_tensor` of one planned mergekit tensor task (every input of the recipe, in order)."""
    parameters = _task_parameters(task)
    settings = ScheduleSettings(*(parameters.get(key, default) for key, default in (
        ("uniform_until", 0.5), ("anchor_max", 1.0), ("schedule", "linear"), ("heads", "anchor"))))
    models = task.model_order
    weights = [float(getattr(task.input_parameters[m], "data", task.input_parameters[m]).get("weight", 1.0))
               for m in models]
    return plan_tensor([model_layout(m) for m in models], models.index(task.base_model), task.output_weight.name,
                       weights, settings)


def _screen_inputs(task, tensors: dict) -> dict | torch.Tensor:
    """What mergekit hands the kernel for one ``layerwise_seg`` tensor: the members of its plan.

    mergekit 0.1.5 refuses differing integer buffers and tensors of other shapes before any
    method runs; :func:`plan_tensor` decides instead (integers and single members are the
    anchor's tensor, returned as is; non-members are left out; real mismatches are refused).
    """
    if tensors.get(task.base_model) is None:
        return tensors
    plan = plan_of_task(task)
    models = [task.model_order[i] for i in plan.members]
    missing = [m for m in models if tensors.get(m) is None]
    if missing:
        raise RuntimeError(f"layerwise_seg: mergekit did not load {plan.names[models.index(missing[0])]!r} "
                           f"from {missing[0]}; please report this as a bug")
    if plan.is_copy:
        anchor = tensors[task.base_model]
        if plan.info.dtype.is_floating_point or anchor.dtype == plan.info.dtype:
            return anchor
        # a recipe `dtype:` made mergekit cast it (it can only keep int64 apart): read it as stored
        from mergekit.io.tasks import LoaderCache

        return LoaderCache().get(task.base_model).get_tensor(plan.info.name, device="cpu").to(anchor.device)
    return {m: tensors[m] for m in models}


@dataclass
class MergeRecord:
    """What one ``layerwise_seg`` merge planned, for its model card: the output folder and, per output
    tensor, (role, depth, {model: coefficient}) as :func:`plan_tensor` gives them to the kernel.

    It is made and read while mergekit plans and writes (the planning thread); kernels never read it, so
    they need no state of the merge, whichever thread mergekit's executor runs them in."""

    out_path: str | None = None
    coefficients: dict[str, tuple[str, float | None, dict[str, float]]] = field(default_factory=dict)


# The record of the merge planned last in this context (thread): two merges never share one.
_RECORD: ContextVar[MergeRecord | None] = ContextVar("layerseg_merge_record", default=None)


def merge_record() -> MergeRecord | None:
    """The record of the last ``layerwise_seg`` merge planned to disk in this thread (None before any)."""
    return _RECORD.get()


def record_plan(record: MergeRecord, out_path: str, tasks) -> None:
    """Record the output and the coefficients of every planned ``layerwise_seg`` tensor task (mergekit's)."""
    record.out_path = out_path
    for task in tasks:
        if getattr(task, "method_name", None) != METHOD_NAME:
            continue
        plan = plan_of_task(task)
        if not plan.info.dtype.is_floating_point:
            continue  # integers are the anchor's, not merged
        models = [str(task.model_order[i]) for i in plan.members]
        record.coefficients[plan.info.name] = (plan.info.role, plan.info.depth, dict(zip(models, plan.coefficients)))


def begin_merge(config) -> list[str]:
    """A ``layerwise_seg`` merge is being planned: check its recipe strictly and start its record.

    Called by mergekit's ``unused_parameters`` planning hook (or, where mergekit lacks it, by the
    planner wrapper of :mod:`layerseg_merge.mergekit_compat`); returns the warnings left for mergekit (none:
    everything it would warn about is an error here).
    """
    from layerseg_merge.recipe import _check_top_level, check_parameter_keys, warn_unmatched_filters

    check_parameter_keys(config)
    extra = getattr(config, "model_extra", None)  # unknown top-level keys, where mergekit keeps them
    if extra:
        _check_top_level(dict(extra), "recipe")
    _RECORD.set(MergeRecord())
    if config.base_model is not None and not _REPLANNING.get():
        warn_unmatched_filters(config, list(model_layout(config.base_model).tensors))
    return []


_REPLANNING: ContextVar[bool] = ContextVar("layerseg_merge_replanning", default=False)


def replan(config, out_path: str) -> MergeRecord:
    """The record of a merge mergekit has just written (for its card): plan it again, in memory."""
    from mergekit.architecture import get_architecture_info
    from mergekit.options import MergeOptions
    from mergekit.plan import MergePlanner

    token = _REPLANNING.set(True)
    try:
        options = MergeOptions()
        planner = MergePlanner(config, get_architecture_info(config, options), options,
                               config.base_model.config())
        targets, _ = mergekit_compat.in_memory_targets(planner)
        record = _RECORD.get()
        record_plan(record, out_path, (getattr(task, "tensor_task", task) for task in targets))
        return record
    finally:
        _REPLANNING.reset(token)


def segmentation_card(config, config_yaml: str, record: MergeRecord) -> str:
    """The model card of a ``layerwise_seg`` merge (written with its coefficient plot into the output)."""
    from layerseg_merge.card import write_card

    anchor = str(config.base_model)
    models = sorted({str(m) for m in config.referenced_models()}, key=lambda m: (m != anchor, m))
    return write_card(record.out_path, models, anchor, config_yaml, record.coefficients)


def check_output_inputs(out_path: str, config) -> None:
    """The plain ``mergekit-yaml`` would write into an input given as OUT: refuse it, as ``layerseg merge`` does."""
    from layerseg_merge.output import OutputError, check_target

    inputs = [model_layout(model).path for model in config.referenced_models()]
    try:
        check_target(Path(out_path), inputs)
    except OutputError as error:
        raise RecipeError(str(error)) from None


def anchor_dtype_result(task, screened: dict, result: torch.Tensor | None) -> torch.Tensor | None:
    """A merged tensor in the anchor's dtype as loaded: its stored dtype, or the recipe's ``dtype:`` (mergekit
    casts every input to it), not the dtype mergekit promotes mixed inputs to for the arithmetic."""
    anchor = screened.get(task.base_model)
    if result is not None and anchor is not None and result.is_floating_point():
        dtype = getattr(task.gather_tensors, "dtype", None)
        why = f"the recipe's dtype {dtype}" if dtype else "the anchor's stored dtype"
        result = cast_checked(result, anchor.dtype, task.output_weight.name, why)
    return result


def checked_out_cast(producer, tensor: torch.Tensor | None, dtype: str | None, name: str) -> torch.Tensor | None:
    """A ``layerwise_seg`` float tensor cast to the recipe's ``out_dtype`` (``dtype``), refused where the cast
    overflows; every other tensor as it is (mergekit casts it). ``producer`` is the task that made it: all this
    needs is in mergekit's tasks, so it holds under every executor, whichever thread it runs in."""
    if tensor is None or not dtype or getattr(producer, "method_name", None) != METHOD_NAME \
            or not tensor.is_floating_point():
        return tensor
    from mergekit.common import dtype_from_name

    return cast_checked(tensor, dtype_from_name(dtype), name, "the recipe's out_dtype")


def register_method() -> None:
    """Register ``layerwise_seg`` with mergekit's registry (idempotent), and whatever mergekit lacks for it."""
    from mergekit.merge_methods import registry

    current = {m.spec.name: m for m in registry.registered_methods()}.get(METHOD_NAME)
    if current is None:
        registry.register(layerwise_seg)
    elif current is not layerwise_seg:  # mergekit's own layerwise_seg (upstream patch 0011): ours extends it
        registry.register(layerwise_seg, replace=True)
    mergekit_compat.install()


register_method()  # importing this module is what plugs it into mergekit (see layerseg_merge.register)
