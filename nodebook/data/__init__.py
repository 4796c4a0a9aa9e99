"""Data sets: MNIST (idx files, verified), irregularly sampled spirals, 2-D densities."""
