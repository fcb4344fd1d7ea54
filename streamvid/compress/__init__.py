"""Compression: keyframe selection, spatio-temporal token pruning, clip building."""
