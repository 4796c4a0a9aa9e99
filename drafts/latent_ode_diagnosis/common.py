"""Shared by the diagnosis scripts: the book profile and the committed latent-ODE run of (n, seed, noise)."""
import glob
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from nodebook.profiles import get_profile  # noqa: E402
from nodebook.experiments import latent_ode as E  # noqa: E402

S = get_profile('latent_ode', 'book')


def load(n, seed, noise):
    for f in glob.glob(f'checkpoints/latent_ode-latent-n{n}-*.pt'):
        c = torch.load(f, map_location='cpu', weights_only=True)
        k = c['settings']
        if k['seed'] == seed and k['noise_std'] == noise and k['batch_size'] == 700:
            m = E.build('latent ODE', S)
            m.load_state_dict(c['model'])
            m.eval()
            return m
