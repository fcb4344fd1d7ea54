"""Compression: keyframe selection, spatio-temporal token pruning, clip building."""

from __future__ import annotations

from ..config import ClipConfig, CompressConfig
from ..types import ClipBuilder, KeyframeSelector, TokenPruner
from .clips import SceneClipBuilder, describe_clip, merge_labels, merge_text
from .keyframes import ShotKeyframeSelector, cosine_distance
from .pruner import SpatioTemporalPruner, allocate_budgets, token_novelty

__all__ = [
    "SceneClipBuilder", "ShotKeyframeSelector", "SpatioTemporalPruner", "allocate_budgets",
    "cosine_distance", "create_clip_builder", "create_keyframe_selector", "create_pruner",
    "describe_clip", "merge_labels", "merge_text", "token_novelty",
]


def create_keyframe_selector(config: CompressConfig | None = None) -> KeyframeSelector:
    """The keyframe / shot-boundary selector a ``CompressConfig`` describes."""
    return ShotKeyframeSelector(config or CompressConfig())


def create_pruner(config: CompressConfig | None = None) -> TokenPruner:
    """The spatio-temporal token pruner a ``CompressConfig`` describes."""
    return SpatioTemporalPruner(config or CompressConfig())


def create_clip_builder(config: ClipConfig | None = None, *, source_id: str = "") -> ClipBuilder:
    """A clip builder for one source (``source_id`` is stamped on every clip)."""
    return SceneClipBuilder(config or ClipConfig(), source_id=source_id)
