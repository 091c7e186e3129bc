"""Running batch propagation and evaluation on a Ray cluster (the local run needs none of this)."""
