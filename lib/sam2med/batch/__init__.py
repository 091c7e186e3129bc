"""Batch propagation: a manifest of (image, seed, range, ...) rows, each propagated to its own output label."""
