"""Backbone families: one file each, registered on import."""

from adaptkit.backbones.base import BackboneFamily, SpatialContext, find_family, list_backbones, register_backbone

# Registration order is lookup order. A new family is one file plus one line here.
from adaptkit.backbones import timm_vit, timm_eva, timm_beit, open_clip_vit  # noqa: E402,F401  isort: skip
from adaptkit.backbones import timm_swin  # noqa: E402,F401  isort: skip

__all__ = ["BackboneFamily", "SpatialContext", "find_family", "list_backbones", "register_backbone"]
