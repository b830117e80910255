"""Grids and plots: they take tensors or numbers and a path, and know nothing of training."""
