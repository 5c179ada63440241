"""The mergekit merge method ``layerwise_seg``: schedule coefficients plus a buffer policy.

The kernel looks each output tensor up in the anchor's layout (role, depth,
stored dtype), asks :mod:`layerseg_merge.engine.schedule` for the coefficients and sums.
A before-planning check (:meth:`LayerwiseSegMerge.validate_inputs`) refuses
unsupported or incompatible models before anything is written.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from functools import lru_cache
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

from layerseg_merge.architectures.layout import check_compatible
from layerseg_merge.engine.arithmetic import NonFiniteOutput, NonFiniteTensor, is_finite, running_mean_name
from layerseg_merge.engine.driver import merge_planned
from layerseg_merge.engine.plan import plan_tensor
from layerseg_merge.engine.settings import (
    BUFFER_POLICIES,
    DEFAULT_WEIGHT,
    DEFAULTS,
    HEAD_POLICIES,
    METHOD_NAME,
    SHAPES,
    ScheduleSettings,
    check_anchor_and_count,
    check_choice,
    check_unit_interval,
    check_weight,
)
from layerseg_merge.plugin import compat
from layerseg_merge.plugin.planning import begin_merge, model_layout, replan, segmentation_card

LOG = logging.getLogger(__name__)


def _choice(name: str, choices: Sequence[str]):
    return Annotated[str, AfterValidator(lambda value: check_choice(name, value, choices))]


def _unit(name: str):
    return Annotated[float, AfterValidator(lambda value: check_unit_interval(name, value))]


def _running_mean_companion(name: str) -> dict[str, str]:
    """What the kernel needs besides a tensor: a BatchNorm variance's running mean (`buffers: pooled`)."""
    return {"running_mean": running_mean_name(name)} if name.endswith("running_var") else {}


def layerwise_seg_kernel(
    group: TensorGroup,
    weight: PerInput[Annotated[float, AfterValidator(check_weight)]] = DEFAULT_WEIGHT,
    uniform_until: _unit("uniform_until") = DEFAULTS.uniform_until,
    anchor_max: _unit("anchor_max") = DEFAULTS.anchor_max,
    schedule: _choice("schedule", SHAPES) = DEFAULTS.schedule,
    heads: _choice("heads", HEAD_POLICIES) = DEFAULTS.heads,
    buffers: _choice("buffers", BUFFER_POLICIES) = DEFAULTS.buffers,
) -> torch.Tensor:
    entries = group.entries
    settings = ScheduleSettings(uniform_until, anchor_max, schedule, heads, buffers)
    anchor = next(i for i, e in enumerate(entries) if e.is_base)
    layouts = [model_layout(e.id) for e in entries]
    plan = plan_tensor(layouts, anchor, group.metadata.name, [weight[e.id] for e in entries], settings)
    members = [entries[i] for i in plan.members]
    means = None
    if buffers == "pooled" and plan.info.name.endswith("running_var"):
        means = compat.running_means(group, members, list(plan.names))
    try:  # in the common dtype mergekit promoted the inputs to
        return merge_planned(plan, [e.tensor for e in members], means, buffers, [str(e.id) for e in members],
                             group.base.tensor.dtype, "the dtype of the inputs as loaded")
    except NonFiniteTensor as error:
        index, name = plan.members[error.index], plan.names[error.index]
        raise _cast_or_model(entries[index].id, name, entries[index].tensor.dtype,
                             layouts[index].tensors[name].dtype) or error from None


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
        return segmentation_card(config, config_yaml, replan(config, out_path, compat.planned_tensor_tasks))


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
    **compat.kernel_spec_options(_running_mean_companion),
).spec
layerwise_seg = LayerwiseSegMerge(_spec, layerwise_seg_kernel)




def register_method() -> None:
    """Register ``layerwise_seg`` with mergekit's registry (idempotent), and whatever mergekit lacks for it."""
    from mergekit.merge_methods import registry

    current = {m.spec.name: m for m in registry.registered_methods()}.get(METHOD_NAME)
    if current is None:
        registry.register(layerwise_seg)
    elif current is not layerwise_seg:  # mergekit's own layerwise_seg (upstream patch 0011): ours extends it
        registry.register(layerwise_seg, replace=True)
    compat.install()


register_method()  # importing this module is what plugs it into mergekit (see layerseg_merge.register)
