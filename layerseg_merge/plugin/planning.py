"""What mergekit plans for a ``layerwise_seg`` merge, read back: the layouts of its inputs, the plan of one
planned tensor task, and the per-merge record the model card draws (made while mergekit plans, in the
planning thread; kernels never read it, so they need no state of the merge in any executor's threads).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field

from layerseg_merge.architectures.layout import ModelLayout, layout_of
from layerseg_merge.engine.plan import TensorPlan, plan_tensor
from layerseg_merge.engine.settings import METHOD_NAME, ScheduleSettings, input_weight
from layerseg_merge.io.hub import resolve_model_path


def model_layout(model: Hashable) -> ModelLayout:
    """The layout of a mergekit input (a :class:`ModelReference` to a local directory)."""
    from mergekit.common import ModelReference  # (not at import: mergekit's import may be what imports us)

    if not isinstance(model, ModelReference):
        raise TypeError(
            "layerwise_seg reads each tensor's depth from the anchor's checkpoint; "
            "run it through a mergekit recipe (mergekit-yaml, `layerseg merge` or run_merge)"
        )
    return layout_of(resolve_model_path(model.model.path, model.model.revision))


def _task_parameters(task) -> dict:
    return dict(getattr(task.parameters, "data", task.parameters))  # ImmutableMap or its immutables.Map


def plan_of_task(task) -> TensorPlan:
    """The :func:`plan_tensor` of one planned mergekit tensor task (every input of the recipe, in order)."""
    settings = ScheduleSettings.from_parameters(_task_parameters(task))
    models = task.model_order
    weights = [float(input_weight(getattr(task.input_parameters[m], "data", task.input_parameters[m])))
               for m in models]
    return plan_tensor([model_layout(m) for m in models], models.index(task.base_model), task.output_weight.name,
                       weights, settings)


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
    planner wrapper of :mod:`layerseg_merge.plugin.compat`); returns the warnings left for mergekit (none:
    everything it would warn about is an error here).
    """
    from layerseg_merge.plugin.recipe import _check_top_level, check_parameter_keys, warn_unmatched_filters

    check_parameter_keys(config)
    extra = getattr(config, "model_extra", None)  # unknown top-level keys, where mergekit keeps them
    if extra:
        _check_top_level(dict(extra), "recipe")
    _RECORD.set(MergeRecord())
    if config.base_model is not None and not _REPLANNING.get():
        warn_unmatched_filters(config, list(model_layout(config.base_model).tensors))
    return []


_REPLANNING: ContextVar[bool] = ContextVar("layerseg_merge_replanning", default=False)


def replan(config, out_path: str, planned_tasks: Callable[[object], Iterable]) -> MergeRecord:
    """The record of a merge mergekit has just written (for its card): plan it again, in memory
    (``planned_tasks`` gives a mergekit planner's tensor tasks: mergekit's own, or the compat layer's)."""
    from mergekit.architecture import get_architecture_info
    from mergekit.options import MergeOptions
    from mergekit.plan import MergePlanner

    token = _REPLANNING.set(True)
    try:
        options = MergeOptions()
        planner = MergePlanner(config, get_architecture_info(config, options), options,
                               config.base_model.config())
        record = _RECORD.get()
        record_plan(record, out_path, planned_tasks(planner))
        return record
    finally:
        _REPLANNING.reset(token)


def segmentation_card(config, config_yaml: str, record: MergeRecord) -> str:
    """The model card of a ``layerwise_seg`` merge (written with its coefficient plot into the output)."""
    from layerseg_merge.models.card import write_card

    anchor = str(config.base_model)
    models = sorted({str(m) for m in config.referenced_models()}, key=lambda m: (m != anchor, m))
    return write_card(record.out_path, models, anchor, config_yaml, record.coefficients)
