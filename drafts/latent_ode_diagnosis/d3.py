import torch, glob, sys
torch.set_num_threads(1)
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from nodebook.profiles import get_profile
from nodebook.experiments import latent_ode as E
from nodebook.models import latent_ode as L
from common import S, load  # noqa: E402
for noise in (0.1, 0.3):
  for seed in (0, 1, 2):
    train, val, test = E.make_data(S, seed, noise)
    test = test.subset(slice(0, 100)); tr = train.subset(slice(0, 300))
    row = []
    for n in (30, 50, 100):
        m = load(n, seed, noise)
        o = E.observations(tr, n, seed=seed); ot = E.test_observations(test, n, seed)
        with torch.no_grad():
            _, ztr = L.predict(m, o.y, o.gaps, tr.t_observed)
            _, zte = L.predict(m, ot.y, ot.gaps, test.t)
        ref = ztr.reshape(-1, ztr.shape[-1])
        scale = ref.std(0).norm()
        d = lambda zz: float(torch.cdist(zz.reshape(-1, zz.shape[-1]), ref).min(1).values.mean() / scale)
        row.append(f'n={n}: obs {d(zte[:, 90:100]):.3f} first10 {d(zte[:, 100:110]):.3f} last10 {d(zte[:, -10:]):.3f}')
    print(f'noise {noise} seed {seed} (NN distance of test latents to training latents, / latent spread):', ' | '.join(row))
