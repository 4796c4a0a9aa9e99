"""Hypothesis 3, no training: the latent ODE's test RMSE split by horizon (the first 60 extrapolated
points, about the public code's 1.87 rad, against the last 10) and by whether a test spiral's
extrapolation goes past every angle the training spirals show (`outside_seen_range`).
Usage: python drafts/latent_ode_diagnosis/d4.py  (seconds; committed batch-700 runs)"""
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import E, S, load  # noqa: E402

for noise in (0.1, 0.3):
    for seed in (0, 1, 2):
        train, val, test = E.make_data(S, seed, noise)
        outside = E.outside_seen_range(train, test)
        target = test.y_true[:, test.num_observed:]
        row = []
        for n in (30, 50, 100):
            model = load(n, seed, noise)
            if model is None:
                row.append(f"n={n}: no run")
                continue
            error = (E.predict_test("latent ODE", model, n, test, seed) - target) ** 2  # (N, m, 2)
            rmse = lambda e: float(e.mean().sqrt())
            row.append(f"n={n}: first60 {rmse(error[:, :60]):.3f} last10 {rmse(error[:, -10:]):.3f} "
                       f"inside {rmse(error[~outside]):.3f} outside {rmse(error[outside]):.3f}")
        print(f"noise {noise} seed {seed} ({int(outside.sum())}/{len(outside)} outside):", " | ".join(row), flush=True)
