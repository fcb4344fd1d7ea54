"""Describers: frames in words (ImageNet labels, on-screen text)."""
