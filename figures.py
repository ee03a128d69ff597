"""figures.py [NAME ...] [--list] [--fast] [--out DIR] [--docs] [--threads N] [--jobs N]: the paper's
figures, PNG and PDF, in --out (default figures/), their numbers in <out>/summary.md, a section each. --fast:
tiny budgets, stamped "fast run"; --docs: also the README's four, small, in docs/; --jobs: see train_first."""
import functools, itertools, math, multiprocessing, os, pathlib, sys, time
from collections import namedtuple
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

import matplotlib
matplotlib.use("Agg")  # files only: no display needed, and the same pixels everywhere
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
from torch.distributions import Binomial, Normal
from tqdm import tqdm

import train                   # trains the networks; its parser answers a mistake with one line
from posterior_icl import (GAP_BINS, NOISE_STD, PRIORS, Prior, atomic_write, bin_label, coin_flip_predictive,
                           get_prior, gp_posterior, load_checkpoint, load_model, tiny_mlp_posterior)
# --- Style: the paper's look (seaborn's muted palette, serif text, open axes, legend below) -------------
BLUE, ORANGE, GREEN, RED, PURPLE, BROWN, PINK, GRAY, CYAN = (
    "#4878D0", "#EE854A", "#6ACC64", "#D65F5F", "#956CB4", "#8C613C", "#DC7EC0", "#797979", "#82C6E2")
EXACT, NETWORK, GUIDE = BLUE, ORANGE, "#BBBBBB"   # as in every paper figure: exact blue, network orange
SAMPLE_COLORS, SEED_COLORS = (GREEN, RED, PURPLE, BROWN), (ORANGE, GREEN, RED, PURPLE, BROWN, PINK, GRAY)
STYLE = {"font.family": "serif", "font.serif": ["STIXGeneral", "DejaVu Serif"], "mathtext.fontset": "stix",
         "font.size": 10, "axes.titlesize": 11, "axes.spines.top": False, "axes.spines.right": False,
         "legend.frameon": True, "legend.edgecolor": "#CCCCCC", "savefig.dpi": 200}
README_FIGURES = ("sines_and_lines", "steps", "ppd_bands", "counting")     # what --docs writes, small

def dot(color, ms=4, **kw):
    return plt.Line2D([], [], color=color, marker="o", ls="none", ms=ms, **kw)
def line(color, ls="-", lw=1.8):
    return plt.Line2D([], [], color=color, ls=ls, lw=lw)
def legend_below(fig, entries, ncol=None):
    """One legend below the axes from (label, handle) pairs; a tuple handle shows its parts side by side."""
    fig.legend([h for _, h in entries], [label for label, _ in entries], loc="outside lower center",
               ncol=ncol or len(entries), handler_map={tuple: matplotlib.legend_handler.HandlerTuple(None)})
def table(header, rows):
    return "\n".join("| " + " | ".join(map(str, r)) + " |" for r in [header, ["---"] * len(header), *rows])
# --- The runner: a figure's files, and its section of summary.md -----------------------------------------
def render(name, out="figures", fast=False, docs=False):
    """Make figure `name`: its files into `out` (and docs/), its section of summary.md. -> (paths, seconds)"""
    start, paths = time.perf_counter(), []
    with plt.rc_context(STYLE):
        figs, body = FIGURES[name](fast)
        for stem, fig in figs.items():
            if fast:
                fig.text(0.5, 0.5, "fast run", ha="center", va="center", rotation=20, fontsize=48, color=RED,
                         alpha=0.25, zorder=100)
            if docs and stem in README_FIGURES:
                os.makedirs("docs", exist_ok=True)
                fig.savefig(os.path.join("docs", f"{stem}.png"), dpi=90)
            paths += [os.path.join(out, f"{stem}.{ext}") for ext in ("png", "pdf")]   # stems hold dots
            fig.savefig(paths[-2])
            fig.savefig(paths[-1], metadata={"CreationDate": None})   # no timestamp: same figure, same file
            plt.close(fig)
    seconds, files = time.perf_counter() - start, ", ".join(map(os.path.basename, paths))
    how = f"**Fast run** (tiny budgets, not a result): `python figures.py --fast {name}`" if fast else \
        f"`python figures.py {name}`"
    doc = " ".join(FIGURES[name].__doc__.split())        # the figure's docstring heads its section
    summary = os.path.join(out, "summary.md")      # this figure's section replaced or added, the others kept
    old = pathlib.Path(summary).read_text("utf-8") if os.path.exists(summary) else ""
    sections = {p.split("\n", 1)[0].split()[0]: p.rstrip("\n") for p in ("\n" + old).split("\n## ")[1:]}
    sections[name] = (f"{name}\n\n{doc}\n\n{body}\n\n_{how}: {seconds:.1f} s, torch threads: "
                      f"{torch.get_num_threads()}; files: {files}._")
    text = "# Figure summary\n\nThe numbers behind the figures in this folder; `python figures.py NAME` " \
        "rewrites the section NAME.\n" + "".join(f"\n## {section}\n" for section in sections.values())
    atomic_write(summary, lambda file: file.write(text.encode("utf-8")))
    return paths, seconds
# --- Networks: one way to get one, trained or resumed through train.py unless its checkpoint is done -----
# steps, steps_updown (over 10^5 latents) evaluate one context size per dataset, two per size: 2·n_points
FAST = dict(steps=100, batch_size=16, final_eval_datasets=32, save_every=0)
FAST_OVERRIDES = {p: dict(n_points=20, final_eval_datasets=40) for p in ("steps", "steps_updown")}
FAST_BUDGET_NET = dict(d_model=32, n_layers=1, batch_size=8, n_points=20, short_fraction=0.0,  # a fast run's
                       mid_fraction=0.0, final_eval_datasets=8)       # E1b/E1c networks: all eight in seconds

def final_loss(history, steps, fraction=0.1):
    """Mean training loss over the last `fraction` of the steps, each history entry weighed by its steps."""
    spans = [(s - prev, loss) for prev, (s, loss) in zip([0] + [s for s, _ in history], history)
             if s > (1 - fraction) * steps]
    return sum(n * loss for n, loss in spans) / sum(n for n, _ in spans) if spans else math.nan

def trained(preset, fast=False, **overrides):
    """`preset` with `overrides`, from its checkpoint if done and of this config, else trained or resumed."""
    path = train.resolve_config(["--preset", preset], out="", **overrides)["out"]   # named by the overrides
    path = os.path.join("checkpoints", "fast", os.path.basename(path)) if fast else path
    budget = {**FAST, **FAST_OVERRIDES.get(preset, {})} if fast else {}
    cfg = train.resolve_config(["--preset", preset], **{**budget, **overrides, "out": path})
    try:                          # a missing file, a broken one or an earlier version's: trained anew
        ckpt = load_checkpoint(path)
    except ValueError:
        ckpt = None
    wrong = train.mismatch(ckpt.get("train_config", {}), cfg) if ckpt else []
    if ckpt is None or wrong:
        print(f"{path}: trained with another {', '.join(wrong)}; retraining it" if wrong
              else f"training {preset} for {cfg['steps']} steps -> {path}")
        train.train(cfg)
    elif ckpt["step"] < cfg["steps"] or "summary" not in ckpt:       # unfinished, or stopped before its gap
        print(f"{path}: unfinished at step {ckpt['step']} of {cfg['steps']}; resuming it")
        train.train({**cfg, "resume": True})
    ckpt, model = load_checkpoint(path), load_model(path, prior=cfg["prior"])
    model.run = dict(path=path, steps=ckpt["step"], history=ckpt["history"], gap=ckpt["summary"]["gap"],
                     final_loss=final_loss(ckpt["history"], cfg["steps"]))
    return model
def train_first(names, fast, jobs):
    """Train the figures' networks first, `jobs` processes of one torch thread at once: a small network's step
    keeps one core busy, not two (docs/RESULTS.md). One thread sums in another order: last digits may move."""
    todo = [dict(o, preset=s["preset"]) for s in map(PANELS.get, names) if s for _, o in s["nets"](fast)]
    todo += [dict(preset=p) for p in ("coins", "coins_counting") if {"counting", "posterior_gap"} & {*names}]
    todo, running = list({str(net): net for net in todo}.values()), set()   # each once (E4's: the panels')
    if len(todo) < 2 or jobs < 2:               # each figure trains its own, in this process
        return
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool, \
            tqdm(total=len(todo), desc=f"{len(todo)} networks, {jobs} at once") as bar:   # fork: OpenMP hangs
        while todo or running:      # never more than `jobs` handed out: after Ctrl-C none waits to start
            while todo and len(running) < jobs:
                running.add(pool.submit(trained, fast=fast, threads=1, progress=False, **todo.pop(0)))
            done, running = wait(running, return_when=FIRST_COMPLETED)
            bar.update(len([future.result() for future in done]))    # result(): a worker's error, raised here

def gap_text(g):            # as train.py's final evaluation measured it
    return f"{g['gap']:.4f} ± {g['se']:.4f} ({g['n_datasets']} datasets, seed {g['seed']})"
def network_table(labels, models):
    return table(("network", "checkpoint", "steps", "training loss, last 10% of steps",
                  "posterior gap ± se (nats per query)", "of it the output head"),
                 [(label, f"`{r['path']}`", f"{r['steps']:,}", f"{r['final_loss']:.3f}", gap_text(r["gap"]),
                   f"{r['gap']['head']:.4f}") for label, r in zip(labels, (m.run for m in models))])
# --- Prompts, and the exact posterior against networks on them (E1–E4) ----------------------------------
GRID = torch.linspace(-1, 1, 201, dtype=torch.float64)    # the plotted x values: -0.5 and 0.5 exactly
Prompt = namedtuple("Prompt", "label x y")                 # noise-free points; the label names it
# means on GRID; log_evidence is log p(y | x), the paper prints p(D) = (1/2)^n p(y | x) (x's density too)
Fit = namedtuple("Fit", "prompt exact nets log_evidence paper_likelihood family_mass")
def prompt(label, f, n=10):
    return Prompt(label, x := torch.linspace(-1, 1, n, dtype=torch.float64), f(x).double())
def sloped_sine(slope):        # E1's unseen composition: the sine family's sine plus a line's slope
    return lambda x: 0.2 * torch.sin(3 * math.pi * x) + slope * x
def box(h, n=20):              # E4's box, not a step, on the paper's 20 points
    return prompt(f"box h = {h}", lambda x: h * ((x > -0.5).double() - (x > 0.5).double()), n)

def compare(prior, models, p):
    """The exact posterior's and each network's predictive mean on GRID for prompt p."""
    post = prior.posterior(p.x, p.y)
    return Fit(p, prior.predict(p.x, p.y, GRID).mean,
               [m.predict(p.x.float(), p.y.float(), GRID.float()).mean.double() for m in models],
               post.log_evidence.item(), math.exp(post.log_evidence.item() + len(p.x) * math.log(0.5)),
               {k: v.item() for k, v in post.family_mass.items()})

def fit_table(rows):
    """A row per (Fit, network index, label): evidence, family masses, distance to the exact mean."""
    def row(fit, i, label):
        d, mass = (fit.nets[i] - fit.exact).abs(), fit.family_mass
        return (fit.prompt.label, len(fit.prompt.x), f"{fit.log_evidence:.2f}", f"{fit.paper_likelihood:.3e}",
                ", ".join(f"{k} {v:.3f}" for k, v in mass.items()) if len(mass) > 1 else "—", label,
                f"{d.max():.3f}", f"{d.mean():.4f}")
    return table(("prompt", "n", "log p(y \\| x)", "paper's p(D) = (1/2)^n p(y \\| x)", "posterior family "
                  "mass", "network", f"max abs(NN - exact), {len(GRID)} grid points", "mean abs(NN - exact)"),
                 [row(*r) for r in rows])

def draw_fit(ax, fit):
    """The exact mean, each network's drawn over it (one: orange, several: a colour each), the context."""
    ax.plot(GRID, fit.exact, color=EXACT, lw=1.8, zorder=2)
    for mean, color in zip(fit.nets, (NETWORK,) if len(fit.nets) == 1 else SEED_COLORS):
        ax.plot(GRID, mean, color=color, lw=1.5 if len(fit.nets) == 1 else 1.3, zorder=3)
    ax.plot(fit.prompt.x, fit.prompt.y, "o", color="black", ms=4, zorder=4)
    ax.set(xlim=(-1.05, 1.05), xticks=[-1, 0, 1])

def share_y(axes, ylim=None, yticks=None):
    """One y axis for a row of panels, drawn on the first only (the paper's look); by default the data's."""
    for ax in axes[1:]:
        ax.sharey(axes[0])
        ax.spines["left"].set_visible(False)
        ax.tick_params(left=False, labelleft=False)
    if ylim:
        axes[0].set(ylim=ylim, **({"yticks": yticks} if yticks else {}))
    axes[0].autoscale_view(scalex=False)     # the whole row's data, 5% margins; no-op under a set ylim
# --- E1–E4a as data, drawn by panel_figure: the paper's first half shows one picture again and again, a
# network drawing the exact posterior's mean, also on prompts no task of its prior produces ("generalization")
def e1c_networks(fast):
    """(label, overrides) per E1c budget (its own run, warm-up and schedule), doubling, then the preset's."""
    own = train.PRESETS["sines_lines"].get("steps", train.CONFIG["steps"])    # the preset's own network
    budget = FAST_BUDGET_NET if fast else dict(final_eval_datasets=16)    # the others: a quicker evaluation
    return [(f"{n:,} steps", {"steps": n, **budget} if fast or n != own else {})
            for n in ([10 * 2**i for i in range(8)] if fast else [25 * 2**i for i in range(7)] + [own])]
def jump_text(fit):         # E3: largest abs(NN - exact) outside and inside the points around the jump
    x, d, i = fit.prompt.x, (fit.nets[0] - fit.exact).abs(), fit.prompt.y.diff().abs().argmax()
    inside = (GRID > x[i]) & (GRID < x[i + 1])
    return f"{fit.prompt.label}: {d[~inside].max():.3f}, ({x[i]:.2f}, {x[i + 1]:.2f}): {d[inside].max():.3f}"
SLOPES = (0.21, 0.22, 0.23, 0.24, 0.25, 0.26, 0.27, 0.28)
Y4 = dict(ylim=(-0.4, 0.4), yticks=[-0.4, -0.2, 0, 0.2, 0.4])
LIKELY = ("Predictions on likely data", "Predictions on likely data", "Generalization")
E1_SLOPED = prompt("0.2·sin(3πx) + 0.23·x", sloped_sine(0.23))
# Keys: doc (--list, summary), preset, prompts; titles: per panel or a template of n, pD (the paper's p(D)),
# steps, loss; samples: a prior-samples panel first; nets: fast -> [(label, overrides)], all on each panel or
# network i on panel i if paired; ylim, yticks (per row unless share=False); guides; note: fits -> text.
PANELS = {
    "sines_and_lines": dict(
        doc="E1: sines or lines as a prior; a sloped sine is answered by mixing the two families.",
        preset="sines_lines", samples=4, titles=LIKELY, **Y4,
        prompts=[prompt("0.2·sin(3πx)", sloped_sine(0)), prompt("0.23·x", lambda x: 0.23 * x), E1_SLOPED]),
    "bad_priors_become_worse_with_more_conditioning": dict(
        doc="E1a: the sloped sine with 10 … 80 points: the posterior collapses onto the pure sine.",
        preset="sines_lines", titles="{n} In-Context Examples", guides=(-0.2, 0, 0.2), **Y4,
        prompts=[prompt(E1_SLOPED.label, sloped_sine(0.23), n) for n in (10, 20, 40, 80)]),
    "sines_and_lines_slope_abl": dict(
        doc="E1b: slopes 0.21 … 0.28, three seeds: the networks part from the posterior where it switches.",
        preset="sines_lines_e1b", titles=[f"Modelling a slope of {s}" for s in SLOPES], **Y4,
        nets=lambda fast: [(f"seed {s}", dict(FAST_BUDGET_NET if fast else {}, seed=s)) for s in (0, 1, 2)],
        prompts=[prompt(f"0.2·sin(3πx) + {s}·x", sloped_sine(s)) for s in SLOPES],
        note=lambda fits: "Disagreement between the seeds (largest standard deviation of their means), by "
        "slope: " + ", ".join(f"{s}: {torch.stack(f.nets).std(0).max():.3f}" for s, f in zip(SLOPES, fits))),
    "sines_and_lines_epoch_abl": dict(
        doc="E1c: the slope-0.28 prompt after 25 … 1,600 training steps, then the default's.",
        preset="sines_lines", nets=e1c_networks, paired=True, ylim=(-0.4, 0.4), yticks=[-0.25, 0, 0.25],
        titles="Training for {steps:,} steps\nto an average loss of {loss:.2f}",
        prompts=[prompt("0.2·sin(3πx) + 0.28·x", sloped_sine(0.28))] * 8),
    "sins": dict(
        doc="E2: sines of one frequency; another frequency is answered with a flat line.",
        preset="sines_phase", samples=2, titles=LIKELY, **Y4,
        prompts=[prompt("0.2·sin(3πx), phase 0", lambda x: 0.2 * torch.sin(3 * math.pi * x)),
                 prompt("0.2·sin(3πx + π), phase 0.5", lambda x: -0.2 * torch.sin(3 * math.pi * x)),
                 prompt("0.2·sin(2πx)", lambda x: 0.2 * torch.sin(2 * math.pi * x), 20)],
        note=lambda fits: "On the unseen frequency the exact mean stays within "
        f"±{fits[2].exact.abs().max():.3f} of 0 (the data reach ±0.2)."),
    "steps": dict(
        doc="E3: steps as a prior; a line is answered with the posterior's smooth sigmoid.",
        preset="steps", samples=3, titles=LIKELY,
        prompts=[prompt("Step(x_off -0.2, y_off 0, amp 0.5)", lambda x: 0.5 * (x > -0.2).double()),
                 prompt("Step(x_off 0.8, y_off -0.5, amp 1.0)", lambda x: (x > 0.8).double() - 0.5),
                 prompt("line 0.2·x", lambda x: 0.2 * x)],
        note=lambda fits: "Largest abs(NN - exact) on either side of the jump (outside the two context "
        "points that bracket it, where every step position between them fits equally), and between them: "
        + "; ".join(map(jump_text, fits[:2]))),
    "less_likely_data_ablation": dict(
        doc="E4a: boxes of height 0.2 … 0.5: the less likely the data, the further the network from Bayes.",
        preset="steps_updown", share=False, ylim=(-0.02, 0.55), yticks=[0, 0.2, 0.4], height=3.1,
        titles="Data Likelihood: {pD:.2e}\n(1/2)$^{{{n}}}$ p(y | x), the paper's convention", title_size=10,
        prompts=[box(h) for h in (0.2, 0.3, 0.4, 0.5)]),
}

def panel_figure(name, fast):
    """Draw PANELS[name]: prior samples (if any), then a panel per prompt, four panels a row."""
    s = PANELS[name]
    labels, overrides = zip(*s["nets"](fast))
    models = [trained(s["preset"], fast, **o) for o in overrides]
    on = [[i] for i in range(len(models))] if s.get("paired") else [range(len(models))] * len(s["prompts"])
    prior, n_samples, n = get_prior(models[0].prior), s.get("samples", 0), len(on[0])
    fits = [compare(prior, [models[i] for i in nets], p) for p, nets in zip(s["prompts"], on)]
    rows = (len(fits) + bool(n_samples) + 3) // 4
    fig, axes = plt.subplots(rows, 4, figsize=(10, s.get("height", 2.9 if rows == 1 else 5.0)),
                             layout="constrained")
    axes, g = list(axes.flat), torch.Generator().manual_seed(0)
    for color, family in zip(SAMPLE_COLORS[:n_samples], itertools.cycle(prior.families)):   # what it mixes
        x, y = Prior(prior.name, [family], prior.noise_std).sample(1, 50, generator=g)
        axes[0].plot(x[0], y[0], "o", color=color, ms=4)
        axes[0].set(title="Prior Samples", xlim=(-1.05, 1.05), xticks=[-1, 0, 1])
    axes = axes[bool(n_samples):]
    for i, (ax, fit, nets) in enumerate(zip(axes, fits, on)):
        for y in s.get("guides", ()):
            ax.axhline(y, color=GUIDE, ls="--", lw=1, zorder=0)
        draw_fit(ax, fit)
        run, title = models[nets[0]].run, s["titles"] if isinstance(s["titles"], str) else s["titles"][i]
        ax.set_title(title.format(n=len(fit.prompt.x), pD=fit.paper_likelihood, steps=run["steps"],
                                  loss=run["final_loss"]), fontsize=s.get("title_size"))
    per_row = 4 if s.get("share", True) else 1        # share=False: each panel its own y axis
    for i in range(0, len(fits), per_row):
        share_y(axes[i:i + per_row], s.get("ylim"), s.get("yticks"))
    nets = line(NETWORK) if n == 1 else tuple(line(c, lw=1.5) for c in SEED_COLORS[:n])
    legend_below(fig, [("Prior Samples", tuple(dot(c) for c in SAMPLE_COLORS[:n_samples]))] * bool(n_samples)
                 + [("In-Context Examples", dot("black")), ("Posterior Ground Truth", line(EXACT)),
                    ("NN Posterior Approx." + (f" ({n} seeds)" if n > 1 else ""), nets)])
    rows = [(fit, j, labels[i]) for fit, nets in zip(fits, on) for j, i in enumerate(nets)]
    return {name: fig}, "\n\n".join([fit_table(rows), *([s["note"](fits)] if "note" in s else []),
                                     network_table(labels, models)])
# --- E4: the box is the 50/50 mix of two latents of steps_updown, but Bayes weighs latents one at a time and
# each alone misses half the points: a representation that could express the data is not enough.
def box_optimal_latents(h):
    """The up- and down-step latents whose 50/50 mix is the box of height h; ValueError if off the grid."""
    fam, latents = PRIORS["steps_updown"].families[0], []
    for want in (dict(x_off=-0.5, y_off=-h, amp=2 * h), dict(x_off=0.5, y_off=h, amp=-2 * h)):
        latents.append({k: fam.grid[k][(fam.grid[k] - v).abs().argmin()] for k, v in want.items()})
        if any(abs(latents[-1][k].item() - v) > 1e-9 for k, v in want.items()):
            raise ValueError(f"the box of height {h} needs a latent off the steps_updown grid: {want}")
    return latents
def latent_curve(latent, x):
    return PRIORS["steps_updown"].families[0](latent, x)

def steps_up_down(fast):
    """E4: a box that two latents reproduce exactly together; Bayes, and the network, predict a blob."""
    prior, p, model = PRIORS["steps_updown"], box(0.2), trained("steps_updown", fast)
    (up, down), fit = box_optimal_latents(0.2), compare(prior, [model], p)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.1), layout="constrained")
    axes[0].plot(GRID, (latent_curve(up, GRID) + latent_curve(down, GRID)) / 2, color=CYAN, lw=1.8, zorder=2)
    for lat, color in ((up, GREEN), (down, RED)):
        axes[1].plot(GRID, latent_curve(lat, GRID), color=color, ls=":", lw=2)
    draw_fit(axes[2], fit)
    titles = ("Prediction with the optimal latents", "Optimal latents", "Actual predictions")
    for ax, title in zip(axes, titles):
        ax.plot(p.x, p.y, "o", color="black", ms=4, zorder=4)
        ax.set(title=title, xlim=(-1.05, 1.05), xticks=[-1, -0.5, 0, 0.5, 1])
    share_y(list(axes), (-0.25, 0.25), [-0.2, 0, 0.2])
    legend_below(fig, [("In-Context Examples", dot("black")), ("Optimal Prediction", line(CYAN)), (
        "Optimal Latents", (line(GREEN, ":", 2), line(RED, ":", 2))), ("Posterior Ground Truth", line(EXACT)),
        ("NN Posterior Approx.", line(NETWORK))], ncol=3)
    lw, grid = prior.posterior(p.x, p.y).log_weights["step"], prior.families[0].grid
    named = {"up-step": up, "down-step": down, f"the most probable latent (mass {lw.max().exp():.4f})":
             {k: grid[k][i] for k, i in zip(grid, torch.unravel_index(lw.argmax(), lw.shape))}}
    cands = [("the 50/50 mix (no latent)", (latent_curve(up, p.x) + latent_curve(down, p.x)) / 2)] + [
        (f"{what}: {', '.join(f'{k} {v:.2f}' for k, v in lat.items())}", latent_curve(lat, p.x))
        for what, lat in named.items()]
    return {"steps_up_down_representation_is_not_enough": fig}, "\n\n".join([
        table(("explanation f of the 20 points", "max abs(f - y)", "log Π N(y_i; f(x_i), 0.1²)"), [
            (c, f"{(f - p.y).abs().max():.1e}", f"{Normal(f, NOISE_STD).log_prob(p.y).sum():.2f}")
            for c, f in cands]),
        fit_table([(fit, 0, "NN")]), network_table(["NN"], [model])])
# --- Beyond the paper, ppd_bands: a network matching the posterior's mean may still be over/underconfident
BAND_LEVELS, BAND_PRUNE = (0.05, 0.25, 0.75, 0.95), 20.0    # exact: on latents within e^-20 of the top one
BAND_PROMPTS = [("E1: sloped sine", "sines_lines", E1_SLOPED, 101),         # (title, preset, prompt, queries)
                ("E2: unseen frequency", "sines_phase", PANELS["sins"]["prompts"][2], 101),
                ("E3: a line", "steps", PANELS["steps"]["prompts"][2], 101),
                ("E4: the box", "steps_updown", box(0.2), 41)]   # fewer: the largest prior's cdf is slow
def bands(ax, model, x, y, xq):
    """Exact (filled) and network (dashed 50%, dotted 90%) PPDs on xq given (x, y) -> both, both quantiles."""
    exact = get_prior(model.prior).predict(x, y, xq, prune=BAND_PRUNE)
    net = model.predict(x.float(), y.float(), xq.float())
    levels = torch.tensor(BAND_LEVELS, dtype=torch.float64)[:, None]
    eq, nq = exact.quantile(levels, tol=1e-4), net.quantile(levels.float()).double()   # 1e-4: plenty to plot
    for lo, hi, alpha, ls in ((0, 3, 0.15, ":"), (1, 2, 0.3, "--")):   # the 90% interval, then the 50%
        ax.fill_between(xq, eq[lo], eq[hi], color=EXACT, alpha=alpha, lw=0)
        ax.plot(xq, nq[[lo, hi]].T, color=NETWORK, ls=ls, lw=1.1)
    ax.plot(xq, exact.mean, color=EXACT, lw=1.8)
    ax.plot(xq, net.mean.double(), color=NETWORK, lw=1.8)
    ax.plot(x, y, "o", color="black", ms=4, zorder=4)
    ax.set_xlim(-1.05, 1.05)
    return exact, net, eq, nq

def ppd_bands(fast):
    """Beyond the paper: 50% and 90% intervals, exact and network, on E1–E4's generalization prompts."""
    (fig, axes), rows = plt.subplots(1, 4, figsize=(11, 3.1), layout="constrained"), []
    for ax, (title, preset, p, n_query) in zip(axes, BAND_PROMPTS):
        model, start = trained(preset, fast), time.perf_counter()
        xq = torch.linspace(-1, 1, (n_query + 1) // 4 + 1 if fast else n_query, dtype=torch.float64)
        exact, _, eq, nq = bands(ax, model, p.x, p.y, xq)
        ax.set(title=title, xticks=[-1, 0, 1])
        widths = [" / ".join(f"{(q[j] - q[i]).mean():.3f}" for q in (eq, nq)) for i, j in ((1, 2), (0, 3))]
        rows.append((title, p.label, len(xq), *(f"{(nq[i] - eq[i]).abs().max():.3f}" for i in range(4)),
                     *widths, f"{1 - sum(part[2].exp().sum().item() for part in exact.parts[0]):.1e}",
                     f"{time.perf_counter() - start:.1f}"))
    patch = tuple(plt.Rectangle((0, 0), 1, 1, color=EXACT, alpha=a, lw=0) for a in (0.45, 0.15))
    legend_below(fig, [("In-Context Examples", dot("black")), ("Posterior Ground Truth (mean)", line(EXACT)),
                       ("exact 50% / 90%", patch), ("NN Posterior Approx. (mean)", line(NETWORK)),
                       ("NN 50% / 90%", (line(NETWORK, "--", 1.1), line(NETWORK, ":", 1.1)))], ncol=5)
    return {"ppd_bands": fig}, table(("panel", "prompt", "queries", *(f"max abs(NN - exact), q {q}" for q in
                                      BAND_LEVELS), "mean 50% width, exact / NN", "mean 90% width, exact / "
                                      "NN", "mass pruned", "exact quantiles, s"), rows)
# --- Beyond the paper: posterior_gap (no blue or orange: elsewhere they mean exact and network) ----------
def posterior_gap_figure(fast):
    """Beyond the paper: NLL_network - NLL_exact (an estimate of the expected KL from the exact PPD to the
    network) from train.py's final evaluation: overall, the output head's part, and by context size."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    ax.axhline(0, color=GUIDE, ls="--", lw=1, zorder=0)
    labels, rows = [bin_label(*b) for b in GAP_BINS], []
    for preset, color, marker in zip(("sines_lines", "sines_phase", "steps", "steps_updown", "coins",
                                      "coins_counting"), (GREEN, RED, PURPLE, BROWN, PINK, GRAY), "osD^vP"):
        gap = trained(preset, fast).run["gap"]
        bins, (values, errors) = gap["bins"], zip(*gap["bins"].values())
        ax.errorbar([labels.index(b) for b in bins], values, yerr=errors, marker=marker, color=color, ms=4,
                    capsize=2, label=preset)
        rows.append((preset, gap_text(gap), f"{gap['head']:.4f}",
                     *(f"{bins[b][0]:.3f} ± {bins[b][1]:.3f}" if b in bins else "—" for b in labels)))
    ax.set(xticks=range(len(labels)), xticklabels=labels, xlabel="context size k",
           ylabel="NLL$_{NN}$ - NLL$_{exact}$ (nats per query)", title="Gap to the exact posterior")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=3)
    return {"posterior_gap": fig}, table(("network", "gap ± se", "head", *(f"k {b}" for b in labels)), rows)
# --- E5 counting: softmax attention over c identical tokens returns the same average for every c, so the
# paper's network cannot count; a variant given log(1 + c) as an input can: the failure is architectural.
def counting(fast):
    """E5: P(y = 1) after c ones, exact posterior against the paper's network and a counting variant."""
    cs = [1, 2, 4, 8, 16, 32, 64]
    nets = [trained(p, fast) for p in ("coins", "coins_counting")]
    exact, plain, count = ([f(torch.zeros(c), torch.ones(c), torch.zeros(1)).mean.item() for c in cs]
                           for f in (PRIORS["coins"].predict, nets[0].predict, nets[1].predict))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    ax.plot(cs, exact, "o-", color=EXACT, label="Posterior Ground Truth")
    ax.plot(cs, plain, "o-", color=NETWORK, label="NN Posterior Approx. (the paper's network)")
    ax.plot(cs, count, "s--", color=GREEN, label="NN given log(1 + context size)")
    ax.set(xscale="log", xticks=cs, xticklabels=cs, xlabel="number of ones in the context, c (log scale)",
           ylabel="P(y = 1 | c ones)", title="Counting identical examples")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center")
    return {"counting": fig}, (
        f"The paper's network varies by {max(plain) - min(plain):.2e} across c; the counting variant is at "
        f"most {max(abs(a - b) for a, b in zip(exact, count)):.3f} from the posterior.\n\n" + table(
            ("c", "exact P(y=1)", "network (paper)", "network + log(1+c)"),
            [(c, f"{e:.3f}", f"{a:.3f}", f"{b:.3f}") for c, e, a, b in zip(cs, exact, plain, count)])
        + "\n\n" + network_table(["the paper's", "given log(1 + c)"], nets))
# --- E7 tiny_mlp: without input noise the posterior exists only at x = 0 and 1, so at x = 0.5 nothing ties
# a network down and each seed answers differently. The seeds train at once, vmapped over stacked weights.
def tiny_mlp_net(seed):
    """One E7 network, torch's default initialisation under manual_seed(seed): its seed defines it."""
    with torch.random.fork_rng(devices=[]):        # the caller's random stream is left as it was
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(1, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
def tiny_mlps(seeds):
    """(stacked parameters, forward(params, x (S, n)) -> logits (S, n, 2)): network s applied to row s."""
    nets = [tiny_mlp_net(s) for s in seeds]
    return torch.func.stack_module_state(nets)[0], torch.vmap(
        lambda params, x: torch.func.functional_call(nets[0], params, (x[:, None],)))
def tiny_mlp_batch(noise_std, n_nets, batch_size):
    """A batch per network from torch's random stream: x, y, weights summing to 1, (S, n) each. Without noise
    x = y is 0 or 1: two points weighted by their counts give all B points' mean loss and gradient exactly."""
    if noise_std == 0:
        ones = Binomial(batch_size, torch.tensor(0.5)).sample((n_nets,))
        x = torch.tensor([0.0, 1.0]).expand(n_nets, 2)
        return x, x.long(), torch.stack([batch_size - ones, ones], 1) / batch_size
    y = torch.randint(0, 2, (n_nets, batch_size))
    return y + noise_std * torch.randn(y.shape), y, torch.full(y.shape, 1 / batch_size)

def train_tiny_mlps(noise_std, seeds, steps, batch_size=1024, lr=1e-3, data_seed=0, progress=True):
    """Train a network per seed (cross-entropy, AdamW, cosine decay to 0). -> (params, forward, last losses)
    The loss sums the networks' own losses and AdamW is elementwise: each follows the path it would alone."""
    params, forward = tiny_mlps(seeds)
    opt = torch.optim.AdamW(params.values(), lr=lr, fused=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(data_seed)
        for _ in tqdm(range(steps), f"tiny_mlp, noise {noise_std}", leave=False, disable=not progress):
            x, y, w = tiny_mlp_batch(noise_std, len(seeds), batch_size)
            ce = nn.functional.cross_entropy(forward(params, x).flatten(0, 1), y.flatten(), reduction="none")
            loss = (w * ce.view_as(w)).sum(1)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            schedule.step()
    return params, forward, loss.detach()

def tiny_mlp(fast):
    """E7: ten seeds of an MLP 1-64-64-2 (ReLU; AdamW 1e-3, cosine decay) against the exact P(y = 1 | x),
    with and without input noise: on x = -0.5, -0.495, …, 1.5, where the posterior exists."""
    steps, batch_size, seeds = (200, 256, range(10)) if fast else (10_000, 1024, range(10))
    grid = torch.arange(-100, 301, dtype=torch.float64) / 200      # [-0.5, 1.5], step 0.005, 0 and 1 exactly
    fig_half, half = plt.subplots(figsize=(5.6, 4.0), layout="constrained")
    figs, rows = {"tiny_mlp_point_0.5": fig_half}, []
    for level, noise in enumerate((0.0, 0.1)):
        params, forward, loss = train_tiny_mlps(noise, seeds, steps, batch_size, data_seed=1000 + level)
        probs = forward(params, grid.float().expand(len(seeds), -1)).softmax(-1)[..., 1].detach().double()
        exact = tiny_mlp_posterior(grid, noise)                       # NaN where undefined
        ok = ~exact.isnan()
        near = ok & ((grid.abs() <= 3 * noise) | ((grid - 1).abs() <= 3 * noise))   # within 3 std of the data
        gap = [(probs[:, m] - exact[m]).abs().max().item() for m in (ok, near)]
        p = probs[:, grid == 0.5][:, 0]
        fig, ax = plt.subplots(figsize=(5.6, 4.0), layout="constrained")
        figs[f"tiny_mlp_curves_noise{noise:g}"] = fig
        if noise == 0:       # where the training inputs are: two point masses, or two Gaussian bumps
            ax.vlines([0, 1], 0, 0.25, color=GUIDE, lw=4, zorder=0)
            ax.text(0.02, 0.97, "p(x) = 0 between the two inputs:\nno posterior there", va="top",
                    transform=ax.transAxes, color=GRAY, fontsize=9)
            half.text(level + 0.08, 0.5, "undefined", color=EXACT, va="center")
        else:
            bumps = torch.exp(-0.5 * (grid / noise) ** 2) + torch.exp(-0.5 * ((grid - 1) / noise) ** 2)
            ax.fill_between(grid, 0, 0.125 * bumps, color=GUIDE, lw=0, zorder=0)
            half.plot([level - 0.12, level + 0.12], [0.5, 0.5], color=EXACT, lw=2.5)
        ax.plot(grid[ok], exact[ok], "-" if noise else "o", color=EXACT, lw=1.8, ms=7, zorder=5)
        ax.plot(grid, probs.T, color=NETWORK, lw=1, alpha=0.75)
        half.plot(torch.full_like(p, level), p, "o", color=NETWORK, alpha=0.6, ms=6)
        ax.set(xlim=(-0.5, 1.5), ylim=(-0.02, 1.02), xlabel="x", ylabel="P(y = 1 | x)",
               title=f"Model predictions, noise std {noise}")
        truth = line(EXACT) if noise else dot(EXACT, 6)
        legend_below(fig, [("Training inputs", line(GUIDE, lw=4)), ("Posterior Ground Truth", truth),
                           (f"NN, {len(seeds)} seeds", line(NETWORK, lw=1))])
        rows.append((noise, f"{steps:,} × {batch_size}", *(f"{v:.3f}" for v in (p.mean(), p.min(), p.max())),
                     0.5 if noise else "undefined", *(f"{g:.3f}" if g >= 1e-3 else f"{g:.1e}" for g in gap),
                     f"{loss.mean():.1e}"))
    half.set(xticks=[0, 1], xticklabels=["noise std 0.0", "noise std 0.1"], xlim=(-0.5, 1.5), ylim=(0, 1),
             ylabel="P(y = 1 | x = 0.5)", title="Predictions at x = 0.5")
    legend_below(fig_half, [("Posterior Ground Truth", line(EXACT, lw=2.5)),
                            (f"NN, one dot per seed ({len(seeds)})", dot(NETWORK, 6, alpha=0.6))])
    return figs, table(("noise std", "steps × batch", "mean at 0.5", "min", "max", "exact at 0.5",
                        "max abs(NN - exact) where defined", "… within 3 std of the data", "loss"), rows)
# --- E8 coin_flip, E9 gp_step: exact posteriors, confidently wrong (closed forms: fast runs cut nothing) ---
def coin_flip(fast):
    """E8: a fair coin, a prior on {0.3, 0.6} with equal weight: the posterior predictive converges to 0.6.
    Each bias is weighed by its expected likelihood L_q(n) = Σ_k Bin(k; n, 0.5) Bin(k; n, q)."""
    ns = torch.arange(1, 1025)
    predictive, lik = coin_flip_predictive(ns)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for y, label in ((0.3, "q = 0.3"), (0.5, "truth 0.5"), (0.6, "q = 0.6")):
        left.axhline(y, color=GUIDE, ls="--", lw=1, zorder=0)
        left.text(1200, y, label, va="center", fontsize=9, color=GRAY)
    left.plot(ns, predictive, color=EXACT, lw=1.8)
    left.set(xscale="log", xlim=(1, 1024), ylim=(0.25, 0.65), xlabel="n (coin flips)",
             ylabel="P(y = 1 | n flips)", title="Posterior predictive")
    for col, (q, color) in enumerate(((0.3, GREEN), (0.6, PURPLE))):
        rate = -math.log(lik[-1, col] / lik[511, col]) / 512   # its decay rate: straight on a log axis
        right.plot(ns, lik[:, col], color=color, lw=1.8, label=f"$L_{{{q}}}(n)$, ≈ $e^{{-{rate:.3f}\\,n}}$")
    right.set(yscale="log", xlim=(0, 1024), xlabel="n (coin flips)", ylabel="expected likelihood",
              title="Expected likelihoods")
    legend_below(fig, [("Posterior Ground Truth", line(EXACT)), *((h.get_label(), h) for h in right.lines),
                       ("coin biases", line(GUIDE, "--", 1))])
    return {"coin_flip": fig}, (
        f"The predictive passes the truth 0.5 at n = {int(ns[(predictive > 0.5).nonzero()[0]])}.\n\n"
        + table(("n", "P(y = 1)", "L_0.3(n)", "L_0.6(n)"), [(n, f"{predictive[n - 1]:.4f}",
                f"{lik[n - 1, 0]:.3e}", f"{lik[n - 1, 1]:.3e}") for n in (1, 16, 1024)]))

def gp_step(fast):
    """E9: GP regression (RBF kernel, output scale 1, ℓ = 0.4, noise variance 0.01, mean 0, nothing fitted)
    on a step y = 1[x ≥ 0] at n points of [-2, 2]: the overshoot stays while the band shrinks."""
    fine = torch.arange(-2000, 2001, dtype=torch.float64) / 1000     # [-2, 2], step 0.001, 0 and 0.5 exactly
    target, rows = (fine >= 0).double(), []
    fig, axes = plt.subplots(2, 3, figsize=(10, 5.6), sharex=True, sharey=True, layout="constrained")
    for ax, n in zip(axes.flat, (10, 20, 50, 100, 200, 400)):
        x = torch.linspace(-2, 2, n, dtype=torch.float64)
        mean, std = gp_posterior(x, (x >= 0).double(), fine)
        ax.plot(x, (x >= 0).double(), "o", color="black", ms=max(1.5, 4 * math.sqrt(10 / n)),
                alpha=min(1, 0.3 + 10 / n), zorder=1)     # fainter as they get denser: never hiding the mean
        ax.fill_between(fine, mean - 2 * std, mean + 2 * std, color=EXACT, alpha=0.25, lw=0, zorder=2)
        ax.plot(fine, target, color=GUIDE, ls="--", lw=1, zorder=2)
        ax.plot(fine, mean, color=EXACT, lw=1.5, zorder=3)
        ax.set(title=f"n = {n}", xlim=(-2, 2), ylim=(-0.5, 1.5))
        outside = ((target < mean - 2 * std) | (target > mean + 2 * std)).double().mean()
        rows.append((n, f"{mean.max() - 1:.3f}", f"{(mean - target).abs().mean():.4f}",
                     f"{std[fine == 0.5].item():.4f}", f"{outside:.1%}"))
    legend_below(fig, [("In-Context Examples", dot("black")), ("GP Posterior Mean", line(EXACT, lw=1.5)),
                       ("±2 std of f", plt.Rectangle((0, 0), 1, 1, color=EXACT, alpha=0.25, lw=0)),
                       ("the step 1[x ≥ 0]", line(GUIDE, "--", 1))])
    return {"gp_step": fig}, table(("n", "overshoot max(mean) - 1", "mean abs error (4001 points of [-2, 2])",
                                    "std of f at 0.5", "step outside ±2 std"), rows)
# --- Any prompt, any prior (your own too): the picture behind the figures, in one call -------------------
def plot_prompt(model, x, y, path, title=None, n_query=101):
    """Draw the exact PPD and the network's (50%, 90% intervals, means) on [-1, 1] given the context (x, y),
    both (k,), into `path` (PNG or PDF). Returns the largest abs(network mean - exact mean)."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.dim() != 1:
        raise ValueError(f"plot_prompt draws one context: x and y of shape (k,), not {tuple(x.shape)}")
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.5, 3.4), layout="constrained")
        exact, net, _, _ = bands(ax, model, x, y, torch.linspace(-1, 1, n_query, dtype=torch.float64))
        ax.set_title(title or f"prior {model.prior}, {len(x)} context points")
        legend_below(fig, [("context", dot("black")), ("exact PPD (50%, 90%)", line(EXACT)),
                           ("network", line(NETWORK))])
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
    return (net.mean.double() - exact.mean).abs().max().item()
# --- Command line; every figure in the paper's order: name -> make(fast) -> ({file stem: figure}, tables) ---
FIGURES = {name: make or functools.partial(panel_figure, name) for name, make in [
    ("sines_and_lines", None), ("bad_priors_become_worse_with_more_conditioning", None),
    ("sines_and_lines_slope_abl", None), ("sines_and_lines_epoch_abl", None), ("sins", None), ("steps", None),
    ("steps_up_down_representation_is_not_enough", steps_up_down), ("less_likely_data_ablation", None),
    ("ppd_bands", ppd_bands), ("posterior_gap", posterior_gap_figure), ("counting", counting),
    ("tiny_mlp", tiny_mlp), ("coin_flip", coin_flip), ("gp_step", gp_step)]}
for name in PANELS:
    FIGURES[name].__doc__ = PANELS[name]["doc"]
    PANELS[name].setdefault("nets", lambda fast: [("NN", {})])      # the preset's own network
def main(argv=None):
    parser = train._Parser(prog="figures.py", description="The paper's figures, PNG and PDF.")
    parser.add_argument("names", nargs="*", metavar="NAME", help="figures to make (default: all; see --list)")
    parser.add_argument("--list", action="store_true", help="list the figures and exit")
    parser.add_argument("--fast", action="store_true", help="tiny budgets: a first look, marked 'fast run'")
    parser.add_argument("--out", default="figures", help="output folder (default: figures)")
    parser.add_argument("--docs", action="store_true", help="also write the README's figures into docs/")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--jobs", type=int, default=2, help="networks trained at once (default 2)")
    try:
        args = parser.parse_args(argv)
        unknown = ", ".join(repr(n) for n in args.names if n not in FIGURES)
        for bad, why in [(unknown, f"unknown figure {unknown}; known figures: {', '.join(FIGURES)}"),
                         (min(args.threads, args.jobs) < 1, "--threads and --jobs must be >= 1"),
                         (args.docs and args.fast, "--docs takes real figures only, not --fast ones")]:
            if bad:
                raise ValueError(why)
        if args.list:
            print("\n".join(f"{name:12s} {make.__doc__.splitlines()[0]}" for name, make in FIGURES.items()))
            return 0
        os.makedirs(args.out, exist_ok=True)
    except (ValueError, OSError) as e:
        problem = f"cannot make the output folder {args.out!r}: {e.strerror}" if isinstance(e, OSError) else e
        print(f"figures.py: {problem}", file=sys.stderr)
        return 2
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        train_first(args.names or list(FIGURES), args.fast, args.jobs)
        for name in args.names or list(FIGURES):
            paths, seconds = render(name, args.out, args.fast, args.docs)
            print(f"{name}: {seconds:.1f} s -> {', '.join(paths)}")
    finally:
        torch.set_num_threads(previous)   # main() may run inside another program (the tests): as found
    return 0
if __name__ == "__main__":
    sys.exit(main())