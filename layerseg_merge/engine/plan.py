"""Which inputs take part in one output tensor, under which names, with which coefficients.

The one owner of that decision: the mergekit kernel (through its input screening) and the
in-memory merges of ``layerseg sweep`` both call :func:`plan_tensor`, so they merge the same
members with the same coefficients (and :func:`layerseg_merge.engine.arithmetic.merge_tensor` does
the same arithmetic), bit for bit. It reads only layouts (config + tensor headers), never tensors.

The rules (README "Across hosts and tasks", DESIGN §3):

* integer tensors are the anchor's;
* a shared backbone tensor merges over every input (their layouts were checked compatible);
* a host-specific backbone tensor (per-stage output norms, a final norm) merges only among
  inputs of the anchor's host: another host's copy feeds another head;
* a head tensor merges over the inputs whose head lines up with the anchor's (the same host,
  or a head shared between hosts); an input takes part in a module's tensors only if it holds
  every tensor of that module, so a module's weight and bias always have the same members;
* a head tensor of another shape is left out with ``heads: anchor`` and refused otherwise; any
  other shape difference is refused;
* heads whose class names (config ``id2label``) differ are refused unless ``heads: anchor``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from layerseg_merge.architectures.layout import IncompatibleModels, ModelLayout, TensorInfo
from layerseg_merge.engine.schedule import coefficients
from layerseg_merge.engine.settings import ScheduleSettings

LOG = logging.getLogger("layerseg_merge.method")  # the method's warnings, under one logger name


@dataclass(frozen=True)
class TensorPlan:
    """How one output tensor is made: ``members`` index the inputs, ``names`` are their own tensor names."""

    info: TensorInfo  # the anchor's tensor (output name, role, depth, stored dtype)
    members: tuple[int, ...]
    names: tuple[str, ...]
    coefficients: tuple[float, ...]
    anchor_position: int  # the anchor's place among the members

    @property
    def is_copy(self) -> bool:
        """Only the anchor takes part (or an integer tensor): the output is the anchor's tensor."""
        return len(self.members) == 1 or not self.info.dtype.is_floating_point


def _module(name: str) -> str:
    return name.rsplit(".", 1)[0]


def _modules(layout: ModelLayout) -> dict[str, tuple[TensorInfo, ...]]:
    """The tensors outside the shared backbone layers (heads, host-specific norms), by module."""
    if "modules" not in layout.cache:
        modules: dict[str, list[TensorInfo]] = {}
        for info in layout.heads:
            modules.setdefault(_module(info.name), []).append(info)
        layout.cache["modules"] = {module: tuple(infos) for module, infos in modules.items()}
    return layout.cache["modules"]


def _twins(anchor: ModelLayout, other: ModelLayout, info: TensorInfo, heads: str) -> TensorInfo | None:
    """``other``'s tensor that merges into ``info`` (None: ``other`` does not take part)."""
    is_layer_tensor = info.role == "backbone" and not anchor.family.is_host_specific(info.canonical)
    if is_layer_tensor:
        twin = other.counterpart(info)
        if twin is not None and twin.shape != info.shape:
            raise _mismatch(anchor, other, info, twin)
        return twin
    if info.role == "backbone" and other.architecture != anchor.architecture:
        return None  # host-specific: feeds another host's head
    # Head or host-specific: the input takes part only if it holds the whole module, in the anchor's shapes.
    if info.role == "head" and heads != "anchor" and other.counterpart(info) is not None:
        _check_labels(anchor, other)
    twin = None
    siblings = _modules(anchor)[_module(info.name)]
    for sibling in siblings:
        counterpart = other.counterpart(sibling)
        if counterpart is None:
            if info.role == "head" and heads != "anchor":
                _warn_left_out(anchor, other, _module(info.name), heads)
            return None
        if counterpart.shape != sibling.shape:
            if info.role == "head" and heads == "anchor":
                return None  # another head shape: it would not be used anyway
            raise _mismatch(anchor, other, sibling, counterpart, hint="; heads of other shapes can only be "
                                                                    "left out with `heads: anchor`")
        if sibling.name == info.name:
            twin = counterpart
    return twin


def _warn_left_out(anchor: ModelLayout, other: ModelLayout, module: str, heads: str) -> None:
    """Warn (once per model and module) that ``other`` is left out of a head module it holds in part, or lacks
    although it has the anchor's host: a head of another host is left out as a matter of course."""
    warned = anchor.cache.setdefault("left out", set())
    if (other, module, heads) in warned:
        return
    warned.add((other, module, heads))
    siblings = _modules(anchor)[module]
    missing = [sibling.name for sibling in siblings if other.counterpart(sibling) is None]
    if other.architecture != anchor.architecture and len(missing) == len(siblings):
        return
    LOG.warning(f"layerwise_seg: model {other.path} lacks {', '.join(missing[:3])}"
                f"{f' and {len(missing) - 3} more' if len(missing) > 3 else ''} of the anchor's head module "
                f"{module!r}, so it is left out of that module (heads: {heads}); the module merges the other "
                "models only")


def _check_labels(anchor: ModelLayout, other: ModelLayout) -> None:
    """Heads are merged row by row: their class lists must be the same, in the same order."""
    if anchor.labels is None or other.labels is None or anchor.labels == other.labels:
        return
    index = next((i for i, (a, b) in enumerate(zip(anchor.labels, other.labels)) if a != b),
                 min(len(anchor.labels), len(other.labels)))
    at = lambda names: names[index] if index < len(names) else "nothing"  # noqa: E731
    raise IncompatibleModels(
        f"the heads of anchor {anchor.path} and {other.path} predict different classes (class {index}: "
        f"{at(anchor.labels)!r} vs {at(other.labels)!r}): merging them would average unrelated classes; use "
        "`heads: anchor`, or give both models the same id2label order"
    )


def _mismatch(anchor: ModelLayout, other: ModelLayout, info: TensorInfo, twin: TensorInfo,
              hint: str = "") -> IncompatibleModels:
    return IncompatibleModels(
        f"shape mismatch for tensor {info.name!r}: {list(info.shape)} in anchor {anchor.path} vs "
        f"{list(twin.shape)} ({twin.name!r}) in {other.path}{hint}"
    )


def _members(layouts: tuple[ModelLayout, ...], anchor: int, name: str, heads: str
             ) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Which inputs take part in tensor ``name``, under which names; kept in the anchor's layout (so the answers
    go when the layout goes, not in a global cache that keeps layouts alive)."""
    cache = layouts[anchor].cache.setdefault("members", {})
    key = (layouts, anchor, name, heads)
    if key not in cache:
        cache[key] = _find_members(layouts, anchor, name, heads)
    return cache[key]


def _find_members(layouts: tuple[ModelLayout, ...], anchor: int, name: str, heads: str
                  ) -> tuple[tuple[int, ...], tuple[str, ...]]:
    info = layouts[anchor].tensors[name]
    if not info.dtype.is_floating_point:
        return (anchor,), (name,)
    members, names = [], []
    for index, layout in enumerate(layouts):
        twin = info if index == anchor else _twins(layouts[anchor], layout, info, heads)
        if twin is not None:
            members.append(index)
            names.append(twin.name)
    return tuple(members), tuple(names)


def plan_tensor(layouts: Sequence[ModelLayout], anchor: int, name: str, weights: Sequence[float],
                settings: ScheduleSettings) -> TensorPlan:
    """The members and coefficients of output tensor ``name`` (a tensor of ``layouts[anchor]``).

    ``layouts`` and ``weights`` are the inputs in recipe order; the plan of a member subset that
    holds every member is the same plan (mergekit's kernel sees only the members).
    """
    members, names = _members(tuple(layouts), anchor, name, settings.heads)
    info = layouts[anchor].tensors[name]
    position = members.index(anchor)
    c = coefficients([weights[i] for i in members], position, info.role, info.depth, settings)
    return TensorPlan(info, members, names, tuple(c), position)
