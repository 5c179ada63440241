"""The tables of supported backbones and hosts: a new host or family is its module plus one entry here."""

from __future__ import annotations

from layerseg_merge.architectures import hierarchical, segformer, vit
from layerseg_merge.architectures.base import BackboneFamily, Host

FAMILIES: dict[str, BackboneFamily] = {
    model_type: family
    for family in (segformer.SEGFORMER, hierarchical.SWIN, hierarchical.CONVNEXT, vit.VIT)
    for model_type in family.model_types
}
HOSTS: dict[str, Host] = {
    host.architecture: host for host in (*segformer.HOSTS, *hierarchical.HOSTS, *vit.HOSTS)
}
