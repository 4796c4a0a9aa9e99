import torch, glob, math, sys, time
torch.set_num_threads(1)
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from nodebook.profiles import get_profile
from nodebook.experiments import latent_ode as E
from nodebook.models import latent_ode as L
from nodebook.data.spirals import archimedean, sample_observations, Observations
from common import S, load  # noqa: E402
t0 = time.time()
noise = float(sys.argv[1]) if len(sys.argv) > 1 else 0.1
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
train, val, test = E.make_data(S, seed, noise)
test = test.subset(slice(0, 200))
for n in (30, 50, 100):
    m = load(n, seed, noise)
    obs = E.test_observations(test, n, seed)
    with torch.no_grad():
        mean, logvar = m.encoder(obs.y, obs.gaps)
        x, z = L.predict(m, obs.y, obs.gaps, test.t)
    tgt = test.y_true
    bt = E.rmse_by_time(x, tgt)
    ext = bt[100:]
    # angular speed of extrapolation
    w = E.angular_speed(x[:, 100:], float(test.t[1]-test.t[0]))
    # consistency: spiral B starting at theta0_A + pi, clean, all 100 obs
    ok = test.theta0 + 2*math.pi <= 6*math.pi  # B's window+... keep in range
    ok = ok & (test.theta0 + math.pi <= float(train.theta0.max()))  # B's start seen in training
    thB = test.theta0[ok] + math.pi
    tt = test.t[:100]
    yB = archimedean(thB[:, None] + tt[None, :], 0.3, test.clockwise[ok])
    idx = torch.arange(100).expand(int(ok.sum()), 100)
    # use n obs of B drawn like the test (same index pattern as A's)
    iB = obs.index[ok]
    yBn = torch.gather(yB, 1, iB[..., None].expand(-1, -1, 2))
    gB = torch.diff(tt[iB], dim=1, prepend=torch.zeros_like(tt[iB][:, :1]))
    with torch.no_grad():
        zB, _ = m.encoder(yBn, gB)
        xB, zBp = L.predict(m, yBn, gB, test.t[:100])
    zA_pi = z[ok, 100]
    spread = mean.std(0).norm()
    d = (zA_pi - zB).norm(dim=1).mean()
    print(f'n={n} noise={noise} seed={seed}: ext RMSE {float(ext.pow(2).mean().sqrt()):.3f} first10 {float(ext[:10].pow(2).mean().sqrt()):.3f} last10 {float(ext[-10:].pow(2).mean().sqrt()):.3f} recon {float(bt[:100].pow(2).mean().sqrt()):.3f}')
    print(f'   post std mean {float(torch.exp(0.5*logvar).mean()):.4f}  |z0| mean {float(mean.norm(dim=1).mean()):.2f}  z0 spread {float(spread):.2f}  ang speed first10 {float(w[:10].mean()):.3f} last10 {float(w[-10:].mean()):.3f}')
    print(f'   consistency |z_A(pi)-enc(B)| {float(d):.3f} ({float(d/spread):.2f} of spread); B recon rmse {float(((xB-yB)**2).mean().sqrt()):.3f}; decoded z_A(pi..2pi) vs B-path(0..pi) latent-dist mean {float((z[ok,100:]-zBp).norm(dim=-1).mean()):.3f}')
print('secs', time.time()-t0)
