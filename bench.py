"""Benchmarks a person can rerun: medians of repeated runs (torch.utils.benchmark), never a timed test:
    python bench.py posterior [--naive]   # exact PPD mean, E4's box (8.1M latents); --naive: brute force too
    python bench.py train [PRESET ...]    # ms per training step in each curriculum stage, and by part
Set --threads to your cores, and run nothing else meanwhile; /usr/bin/time -v adds the peak memory."""
import argparse

import torch
from torch.profiler import profile, record_function
from torch.utils.benchmark import Timer

import train
from posterior_icl import PRIORS, Block, Muon, Transformer, brute_force, get_prior, make_model

PARTS = dict(data=(train, "batch"), step=(train, "train_step"), forward=(Transformer, "forward"),  # nested
             blocks=(Block, "forward"), attention=(Block, "attend"), decoder=(torch.nn.Sequential, "forward"),
             loss=(Transformer, "nll"), backward=(torch.Tensor, "backward"), adam=(torch.optim.AdamW, "step"),
             muon=(Muon, "step"))

def posterior(naive, threads):
    prior, xq = PRIORS["steps_updown"], torch.linspace(-1, 1, 100, dtype=torch.float64)
    x = torch.linspace(-1, 1, 20, dtype=torch.float64)
    y = 0.2 * ((x > -0.5).double() - (x > 0.5).double())                          # E4's box
    names = {**globals(), **locals()}
    fast = Timer("prior.predict(x, y, xq).mean", globals=names, num_threads=threads).adaptive_autorange()
    print(f"steps_updown, E4's box (20 points), PPD mean at 100 queries: {fast.median:.3f} s (median)")
    if naive:
        slow = Timer("brute_force(prior, x, y, xq, xq)", globals=names, num_threads=threads).timeit(1).median
        print(f"brute force over every latent, one point at a time: {slow:.1f} s ({slow / fast.median:.0f}x)")

def steps(presets, threads, n=30):
    """ms per step of n of train.py's steps per stage (median of repeats), then those steps by part."""
    for name, (owner, attr) in PARTS.items():         # the profiler sums each part's time under its name
        setattr(owner, attr, record_function(name)(getattr(owner, attr)))
    for preset in presets:
        cfg = train.resolve_config([], preset=preset, out="unused")
        prior, model = get_prior(cfg["prior"]), make_model(cfg["prior"], **{k: cfg[k] for k in train.SHAPE})
        opts = train.optimizers(model, cfg)
        def run(start):
            for s in range(start, start + n):
                train.train_step(model, opts, cfg, prior, s)
        for start in sorted({s for s, *_ in train.stages(cfg) if s < cfg["steps"]}):   # each stage's first
            t = Timer("run(start)", globals=locals(), num_threads=threads).blocked_autorange(min_run_time=10)
            with profile() as prof:
                run(start)
            got = {**dict.fromkeys(PARTS, 0), **{e.key: e.cpu_time_total for e in prof.key_averages()}}
            size, points = train.batch(cfg, prior, start)[0].shape      # this stage's datasets and points
            print(f"{preset}, {cfg['n_layers']} x {cfg['d_model']}, batch {size}, {points} points: "
                  f"{t.median / n * 1e3:.1f} ms per step")
            print("  profiled:", " · ".join(f"{p} {got[p] / got['step']:.0%}" for p in PARTS if p != "step"))

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["posterior", "train"])
    p.add_argument("presets", nargs="*", default=["sines_lines"], help="train: which (default: sines_lines)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--naive", action="store_true", help="posterior: also the brute force (about a minute)")
    a = p.parse_args()
    for bad in set(a.presets) - set(train.PRESETS):
        p.error(f"unknown preset {bad!r}; known presets: {', '.join(train.PRESETS)}")
    torch.set_num_threads(a.threads)
    posterior(a.naive, a.threads) if a.what == "posterior" else steps(a.presets, a.threads)
