"""Benchmarks a person can rerun: wall time (median of repeats) and peak memory, never in a test.

    python bench.py posterior        # exact posterior + PPD mean, steps_updown (8.1M latents), E4 box
    python bench.py train            # seconds per training step: each preset's shapes and the paper's size

Each measurement runs in a fresh subprocess so peak memory (max RSS) belongs to it alone.
Set --threads to the cores you have; do not run two benchmarks at once.
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def posterior_worker(threads, repeats, naive):
    import torch
    from posterior_icl import PRIORS, _meshgrid
    torch.set_num_threads(threads)
    prior = PRIORS["steps_updown"]
    x = torch.linspace(-1, 1, 20, dtype=torch.float64)
    y = 0.2 * ((x > -0.5).double() - (x > 0.5).double())        # the E4 box, h = 0.2
    xq = torch.linspace(-1, 1, 100, dtype=torch.float64)
    base = _peak_rss_mb()

    def fast():
        return prior.predict(x, y, xq).mean

    def straightforward():
        """One vectorised pass over all 8.1M latents per data point, then per query point."""
        fam, s = prior.families[0], prior.noise_std
        p = _meshgrid(fam.grid, list(fam.grid))
        log_lik = torch.zeros(fam.size, dtype=torch.float64)
        for xi, yi in zip(x, y):
            log_lik -= 0.5 * ((yi - fam(p, xi)) / s) ** 2
        w = log_lik.softmax(0)
        return torch.stack([(w * fam(p, xj)).sum() for xj in xq])

    fn = straightforward if naive else fast
    first = time.perf_counter()
    mean = fn()
    first = time.perf_counter() - first
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    print(json.dumps(dict(first_s=first, median_s=statistics.median(times), runs=repeats,
                          peak_rss_mb=_peak_rss_mb(), rss_after_import_mb=base,
                          mean_at=[round(v, 4) for v in mean[[5, 50, 94]].tolist()])))


def run_worker(args):
    out = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["posterior", "train"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--naive", action="store_true", help="also time the straightforward loop (slow: ~10 s a run)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        if args.what == "posterior":
            posterior_worker(args.threads, args.repeats, args.naive)
        else:
            train_worker(args.threads, args.repeats)
        return
    common = ["--threads", str(args.threads), "--repeats", str(args.repeats)]
    if args.what == "posterior":
        r = run_worker(["posterior", *common])
        print(f"steps_updown, E4 box (20 points), 100 queries, {args.threads} threads:")
        print(f"  posterior + PPD mean: median {r['median_s']:.3f} s over {r['runs']} runs (first call {r['first_s']:.2f} s), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB ({r['peak_rss_mb'] - r['rss_after_import_mb']:.0f} MB above "
              f"the {r['rss_after_import_mb']:.0f} MB of python+torch); mean at x=-0.9,0,0.9: {r['mean_at']}")
        if args.naive:
            n = run_worker(["posterior", "--naive", "--threads", str(args.threads), "--repeats", "1"])
            print(f"  straightforward loop over points: {n['median_s']:.2f} s, peak RSS {n['peak_rss_mb']:.0f} MB; "
                  f"speed-up {n['median_s'] / r['median_s']:.0f}x; mean at x=-0.9,0,0.9: {n['mean_at']}")
    else:
        for r in run_worker(["train", *common])["rows"]:
            print(r)


def train_worker(threads, repeats):
    """Seconds per optimizer step (median of `repeats` after 2 warm-up steps) for each preset's shapes."""
    import torch
    import train
    from posterior_icl import get_prior
    torch.set_num_threads(threads)
    rows = []
    for preset, n_points, overrides in [("sines_lines", 20, {}), ("sines_lines", 100, {}), ("sines_lines", 20, dict(d_model=128)),
                                        ("sines_lines", 100, dict(d_model=128)), ("steps", 20, {}), ("steps_updown", 30, {}),
                                        ("coins", 100, {}), ("paper_size", 100, {})]:
        cfg = train.resolve_config(["--preset", preset], **overrides)     # width 128: the paper's 4 × 128 recipe
        torch.manual_seed(0)
        model = train.build_model(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        times = []
        for i in range(repeats + 2):
            t = time.perf_counter()
            x, y = get_prior(cfg["prior"]).sample(cfg["batch_size"], n_points, generator=g)
            k = n_points // 2                       # the average context size of a run
            loss = model.nll(model(x[:, :k], y[:, :k], x[:, k:]), y[:, k:])
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
        s = statistics.median(times[2:])
        rows.append(f"{preset:17s} d_model={cfg['d_model']:3d} n_layers={cfg['n_layers']} batch={cfg['batch_size']:2d} "
                    f"n_points={n_points:3d}: {s * 1000:7.1f} ms/step = {1 / s:6.2f} steps/s")
    print(json.dumps(dict(rows=rows)))


if __name__ == "__main__":
    main()
