import torch, glob, math, sys
torch.set_num_threads(1)
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from nodebook.profiles import get_profile
from nodebook.experiments import latent_ode as E
from nodebook.models import latent_ode as L
from common import S, load  # noqa: E402
for noise in (0.1, 0.3):
  for seed in (0, 1, 2):
    train, val, test = E.make_data(S, seed, noise)
    test = test.subset(slice(0, 200)); tr = train.subset(slice(0, 200))
    row = []
    for n in (30, 100):
        m = load(n, seed, noise)
        obs = E.test_observations(test, n, seed)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            mean, logvar = m.encoder(obs.y, obs.gaps)
            x0 = m.decoder(m.latent_path(mean, test.t))
            eps = 0.05 * torch.randn(mean.shape, generator=g)
            x1 = m.decoder(m.latent_path(mean + eps, test.t))
        amp = ((x1 - x0).norm(dim=-1)).mean(0)  # (200,)
        # gradient norm at the end of training (one batch of 200 training spirals), before clipping
        o = E.observations(tr, n, seed=seed)
        m.train(); m.zero_grad()
        loss, parts = L.elbo(m, o.y, o.index, o.gaps, tr.t_observed, noise)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(m.parameters(), 1e9)
        m.zero_grad(); kl = L.kl_standard_normal(*m.encoder(o.y, o.gaps)).mean(); kl.backward()
        gk = torch.nn.utils.clip_grad_norm_(m.parameters(), 1e9)
        row.append(f'n={n}: |dx| per 0.05 dz0 at t=0 {float(amp[0]):.3f}, t=pi {float(amp[99]):.3f}, t=2pi {float(amp[-1]):.3f}; grad norm {float(gn):.1f} (KL part {float(gk):.2f})')
    print(f'noise {noise} seed {seed}:', ' | '.join(row))
