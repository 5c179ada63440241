"""The layout of one checkpoint: every tensor's role, layer and depth.

Built from the model's ``config.json`` (which host, which backbone, its depths)
and the tensor headers of its weight files (what is really there). Backbone
tensors are aligned across hosts by their canonical name inside the backbone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import torch

from layerseg_merge.architectures.base import BackboneFamily, Host
from layerseg_merge.io.checkpoint import CheckpointError, TensorHeader, read_config, read_tensor_headers

if TYPE_CHECKING:
    from transformers import PretrainedConfig

Role = Literal["backbone", "head"]


class UnsupportedArchitecture(ValueError):
    """A checkpoint whose host or backbone has no definition."""


class IncompatibleModels(ValueError):
    """Two checkpoints that cannot be merged (backbone config or tensor shapes differ)."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    role: Role
    layer: int | None
    depth: float | None
    canonical: str  # backbone: the name inside the backbone; head: see Host.head_canonical
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True, eq=False)
class ModelLayout:
    """Roles and depths of every tensor of one checkpoint, in forward order."""

    path: str
    architecture: str
    family: BackboneFamily
    signature: dict[str, object]
    layers: tuple[tuple[TensorInfo, ...], ...]
    heads: tuple[TensorInfo, ...]  # everything mergekit sees as post-weights
    labels: tuple[str, ...] | None = None  # the class names of the head (config id2label), when named
    tensors: dict[str, TensorInfo] = field(init=False, repr=False)
    _by_canonical: dict[str, TensorInfo] = field(init=False, repr=False)
    # what is computed from this layout (and others, with it as the anchor) lives and dies with it
    cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        every = [*(t for layer in self.layers for t in layer), *self.heads]
        object.__setattr__(self, "tensors", {t.name: t for t in every})
        object.__setattr__(self, "_by_canonical", {(t.role, t.canonical): t for t in every})

    def counterpart(self, info: TensorInfo) -> TensorInfo | None:
        """This model's tensor that lines up with ``info`` of another model, if any.

        Backbone tensors line up by their name inside the backbone; heads by their canonical
        name (the same host's tensor of that name, or a shared head such as DAFormer's).
        """
        return self._by_canonical.get((info.role, info.canonical))


def _registry() -> tuple[dict[str, Host], dict[str, BackboneFamily]]:
    from layerseg_merge.architectures.registry import FAMILIES, HOSTS

    return HOSTS, FAMILIES


def supported_architectures() -> list[str]:
    return sorted(_registry()[0])


def host_for(config: PretrainedConfig, where: str) -> tuple[Host, BackboneFamily, PretrainedConfig]:
    """The host definition, backbone family and backbone config of ``config``."""
    hosts, families = _registry()
    architecture = (config.architectures or ["<none>"])[0]
    host = hosts.get(architecture)
    if host is None:
        raise UnsupportedArchitecture(
            f"{where}: architecture {architecture!r} is not supported by layerseg-merge; "
            f"supported: {', '.join(sorted(hosts))}"
        )
    backbone_config = host.backbone_config(config)
    family = families.get(backbone_config.model_type)
    if family is None or (host.backbone is not None and family.name != host.backbone):
        raise UnsupportedArchitecture(
            f"{where}: backbone type {backbone_config.model_type!r} inside {architecture} "
            f"is not supported; supported backbones: {', '.join(sorted(families))}"
        )
    return host, family, backbone_config


def class_names(config: PretrainedConfig) -> tuple[str, ...] | None:
    """The head's class names in output order; None when the config only has transformers' LABEL_i defaults."""
    id2label = getattr(config, "id2label", None) or {}
    names = tuple(str(id2label[key]) for key in sorted(id2label, key=int))
    if not names or all(name == f"LABEL_{index}" for index, name in enumerate(names)):
        return None
    return names


def build_layout(
    path: str, config: PretrainedConfig, headers: dict[str, TensorHeader]
) -> ModelLayout:
    """Assign every tensor in ``headers`` a role, layer and depth."""
    host, family, backbone_config = host_for(config, path)
    num_layers = family.num_layers(backbone_config)
    layers: list[list[TensorInfo]] = [[] for _ in range(num_layers)]
    aside: list[TensorInfo] = []  # host-specific backbone tensors, then heads
    heads: list[TensorInfo] = []
    for name, header in headers.items():
        layer = None
        if name.startswith(host.prefix):
            canonical = host.canonical(name[len(host.prefix):])
            layer = family.layer_of(canonical, backbone_config)
        if layer is None:
            heads.append(TensorInfo(name, "head", None, None, host.head_canonical(name), header.shape, header.dtype))
            continue
        if not 0 <= layer < num_layers:
            raise IncompatibleModels(
                f"{path}: tensor {name!r} sits at layer {layer} but the {family.name} config has "
                f"{num_layers} layers; check that config.json matches the weights"
            )
        depth = layer / (num_layers - 1) if num_layers > 1 else 1.0
        info = TensorInfo(name, "backbone", layer, depth, canonical, header.shape, header.dtype)
        (aside if family.is_host_specific(canonical) else layers[layer]).append(info)
    for index, layer_infos in enumerate(layers):
        if not layer_infos:
            raise IncompatibleModels(
                f"{path}: no tensor of {family.name} layer {index} found under {host.prefix!r}; "
                "check that config.json matches the weights"
            )
    return ModelLayout(
        path=path,
        architecture=host.architecture,
        family=family,
        signature=family.signature(backbone_config),
        layers=tuple(tuple(sorted(infos, key=lambda t: t.canonical)) for infos in layers),
        heads=tuple(aside + heads),
        labels=class_names(config),
    )


def _stamp(path: str) -> tuple[int, ...]:
    """Changes whenever save_pretrained() rewrites the directory (it always rewrites config.json)."""
    config = os.path.join(path, "config.json")
    return (os.stat(path).st_mtime_ns, os.stat(config).st_mtime_ns if os.path.exists(config) else 0)


def load_config(path: str) -> PretrainedConfig:
    """The transformers config of a model directory; one-line errors for broken files."""
    from transformers import AutoConfig

    read_config(path)  # names a missing, malformed or typeless config.json
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}/config.json: transformers cannot read it ({first})") from error


@lru_cache(maxsize=64)
def _cached_layout(path: str, stamp: tuple[int, ...]) -> ModelLayout:
    return build_layout(path, load_config(path), read_tensor_headers(path))


def head_aliases(info: TensorInfo) -> tuple[str, ...]:
    """Other hosts' names of the head tensor ``info`` (what mergekit should look up in those inputs)."""
    hosts, _ = _registry()
    names = {here + info.canonical[len(canonical):] for host in hosts.values()
             for here, canonical in host.shared_heads if info.canonical.startswith(canonical)}
    return tuple(sorted(names - {info.name}))


def layout_of(path: str) -> ModelLayout:
    """The layout of the checkpoint directory ``path`` (cached while its files are unchanged)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: not a model directory (expected config.json + weights; relative "
                                f"paths are resolved from the current directory, {os.getcwd()})")
    return _cached_layout(os.path.abspath(path), _stamp(path))


def layout_of_config(config: PretrainedConfig) -> ModelLayout:
    """The layout of the checkpoint that ``config`` was loaded from (a folder, or a Hub id in the cache)."""
    from layerseg_merge.io.hub import resolve_model_path

    path = getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None)
    if not path:
        raise FileNotFoundError("layerseg-merge needs the model's folder; this config was not loaded from one")
    if not os.path.isdir(path):
        path = resolve_model_path(path, getattr(config, "_commit_hash", None))
    return layout_of(path)


def _first_difference(a: dict, b: dict) -> str:
    for key in a:
        if a[key] != b.get(key):
            return f"{key}: {a[key]!r} vs {b.get(key)!r}"
    return "no difference"


def check_compatible(anchor: ModelLayout, other: ModelLayout) -> None:
    """Raise :class:`IncompatibleModels` unless ``other`` can be merged into ``anchor``."""
    if anchor.family != other.family:
        raise IncompatibleModels(
            f"backbones differ: anchor {anchor.path} has a {anchor.family.name} backbone, "
            f"{other.path} a {other.family.name} one; only models sharing one backbone can be merged"
        )
    if anchor.signature != other.signature:
        raise IncompatibleModels(
            f"backbone configs differ between anchor {anchor.path} and {other.path} "
            f"({_first_difference(anchor.signature, other.signature)}); "
            "layer-wise merging needs identical backbone configs"
        )
    for index, (mine, theirs) in enumerate(zip(anchor.layers, other.layers)):
        mine_names = {t.canonical for t in mine}
        missing = mine_names ^ {t.canonical for t in theirs}
        if missing:
            name = sorted(missing)[0]
            owner = anchor.path if name in mine_names else other.path
            raise IncompatibleModels(
                f"backbone tensor {name!r} (layer {index}) is only in {owner}, not in both "
                f"{anchor.path} and {other.path}; their backbones are built differently"
            )
    # Only shared backbone layers here: head (and host-specific) shapes are screened per tensor
    # at merge time, where the `heads:` policy is known.
    for info in (t for layer in anchor.layers for t in layer):
        twin = other.counterpart(info)
        if twin is not None and twin.shape != info.shape:
            raise IncompatibleModels(
                f"shape mismatch for tensor {info.name!r}: {list(info.shape)} in anchor {anchor.path} "
                f"vs {list(twin.shape)} ({twin.name!r}) in {other.path}; "
                "these models cannot be merged tensor by tensor"
            )
