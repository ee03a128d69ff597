"""Benchmarks a person can rerun: medians of repeated runs (torch.utils.benchmark), never a timed test.

    python bench.py posterior [--naive]   # exact PPD mean, E4's box (8.1M latents); --naive: brute force too
    python bench.py train                 # milliseconds per training step, each preset's shapes

Set --threads to your cores, and run nothing else meanwhile.
"""
import argparse
import resource

import torch
from torch.utils.benchmark import Timer

import train
from posterior_icl import PRIORS, brute_force, get_prior

peak_mb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024    # this process's max RSS
STEPS = [("sines_lines", 20), ("sines_lines", 100), ("steps", 20), ("steps_updown", 30), ("coins", 100),
         ("paper_size", 100)]     # (preset, points per dataset); the curriculum's 20 points and the full 100

def posterior(naive, threads):
    prior, xq = PRIORS["steps_updown"], torch.linspace(-1, 1, 100, dtype=torch.float64)
    x = torch.linspace(-1, 1, 20, dtype=torch.float64)
    y = 0.2 * ((x > -0.5).double() - (x > 0.5).double())
    fast = Timer("prior.predict(x, y, xq).mean", globals=locals(), num_threads=threads)
    fast = fast.blocked_autorange(min_run_time=5)
    print(f"steps_updown, E4 box (20 points), PPD mean at 100 queries: median {fast.median:.3f} s "
          f"over {len(fast.times)} runs; peak memory {peak_mb():.0f} MB")
    if naive:
        slow = Timer("brute_force(prior, x, y, xq, xq)", globals={**locals(), "brute_force": brute_force},
                     num_threads=threads).timeit(1)
        print(f"brute force over every latent, one point at a time: {slow.median:.1f} s "
              f"({slow.median / fast.median:.0f}x); peak memory {peak_mb():.0f} MB")

def steps(threads):
    for preset, n in STEPS:
        cfg = train.resolve_config(["--preset", preset], out="unused")
        torch.manual_seed(0)
        model = train.build_model(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x, y = get_prior(cfg["prior"]).sample(cfg["batch_size"], n, torch.Generator().manual_seed(0))
        k = n // 2                       # the average context size of a run

        def step():
            loss = model.nll(model(x[:, :k], y[:, :k], x[:, k:]), y[:, k:])
            opt.zero_grad()
            loss.backward()
            opt.step()
        t = Timer("step()", globals={"step": step}, num_threads=threads).blocked_autorange(min_run_time=3)
        print(f"{preset:14s} {cfg['n_layers']} x {cfg['d_model']:3d}, batch {cfg['batch_size']:2d}, "
              f"{n:3d} points: {t.median * 1e3:7.1f} ms per step (median of {len(t.times)})")

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["posterior", "train"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--naive", action="store_true", help="also time the brute-force posterior (about 10 s)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    posterior(a.naive, a.threads) if a.what == "posterior" else steps(a.threads)
