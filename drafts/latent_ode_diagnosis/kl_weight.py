"""Issue 11, hypothesis 1: does the far-horizon error follow the KL's share of the ELBO rather than n?"""
import os, sys, time, functools, json
import torch
torch.set_num_threads(1)
os.environ["NODEBOOK_CHECKPOINTS"] = "/tmp/klexp"
from nodebook.profiles import get_profile
from nodebook.experiments import latent_ode as E
from nodebook.models import latent_ode as L
S = dict(get_profile("latent_ode", "book"), num_spirals=300, num_train=240, num_val=30, latent_batch_size=240,
         latent_num_steps=20, iterations_per_step=50)
orig = L.elbo
noise = 0.1
out = {}
for seed in (0, 1):
    data = E.make_data(S, seed, noise)
    train, val, test = data
    for n, w in ((30, 1.0), (100, 1.0), (30, 0.3), (100, 100 / 30)):
        L.elbo = functools.partial(orig, kl_weight=w)
        t0 = time.time()
        os.environ["NODEBOOK_CHECKPOINTS"] = f"/tmp/klexp/w{w:.2f}"  # one folder per weight (not in the key)
        S_run = S
        model, run = E.train("latent ODE", n, (train, val), S_run, seed=seed, noise_std=noise)
        L.elbo = orig
        obs = E.test_observations(test, n, seed)
        x = E.predict("latent ODE", model, obs, test, None)
        target = test.y_true[:, test.num_observed:]
        bt = E.rmse_by_time(x, target)
        out[f"seed{seed} n{n} w{w:.2f}"] = dict(rmse=((x - target) ** 2).mean().sqrt().item(), first10=bt[:10].mean().item(),
                                               last10=bt[-10:].mean().item(), val=run.history[-1]["val_rmse"],
                                               minutes=(time.time() - t0) / 60)
        print(f"seed{seed} n{n} w{w:.2f}", {k: round(v, 3) for k, v in out[f'seed{seed} n{n} w{w:.2f}'].items()}, flush=True)
json.dump(out, open("/tmp/klexp/result.json", "w"), indent=1)
