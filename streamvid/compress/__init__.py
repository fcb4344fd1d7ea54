"""Compression: keyframe selection, spatio-temporal token pruning, clip building."""

from __future__ import annotations

from ..config import ClipConfig, CompressConfig
from ..types import ClipBuilder, KeyframeSelector, TokenPruner
from .baselines import AvgPoolPruner, UniformFramePruner, pool_cells
from .clips import SceneClipBuilder, describe_clip, merge_labels, merge_text
from .keyframes import ShotKeyframeSelector, cosine_distance
from .pruner import SpatioTemporalPruner, allocate_budgets, token_novelty

__all__ = [
    "AvgPoolPruner", "SceneClipBuilder", "ShotKeyframeSelector", "SpatioTemporalPruner", "allocate_budgets",
    "cosine_distance", "create_clip_builder", "create_keyframe_selector", "create_pruner",
    "describe_clip", "merge_labels", "merge_text", "pool_cells", "token_novelty",
    "UniformFramePruner",
]


def create_keyframe_selector(config: CompressConfig | None = None) -> KeyframeSelector:
    """The keyframe / shot-boundary selector a ``CompressConfig`` describes."""
    return ShotKeyframeSelector(config or CompressConfig())


def create_pruner(config: CompressConfig | None = None) -> TokenPruner:
    """The token pruner a ``CompressConfig`` describes (``method``: novelty, or a baseline)."""
    config = config or CompressConfig()
    if config.method == "uniform_frames":
        return UniformFramePruner(config)
    if config.method == "avg_pool":
        return AvgPoolPruner(config)
    return SpatioTemporalPruner(config)


def create_clip_builder(config: ClipConfig | None = None, *, source_id: str = "") -> ClipBuilder:
    """A clip builder for one source (``source_id`` is stamped on every clip)."""
    return SceneClipBuilder(config or ClipConfig(), source_id=source_id)
