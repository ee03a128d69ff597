"""figures.py: regenerate the paper's figures, exact posteriors against networks.

    python figures.py                        # every figure
    python figures.py coin_flip gp_step      # some of them
    python figures.py --list                 # what there is
    python figures.py --fast tiny_mlp        # tiny budgets: a first look (and what the tests run)
    python figures.py --out somewhere        # another output folder (default: figures/)

Each figure is written as PNG and PDF into the output folder, and its numbers into
<out>/summary.md: one section per figure, rewritten when that figure is remade, the other
figures' sections kept as they were. A --fast run says "fast run" on every figure and in its
summary section, so a first look is never mistaken for a result.

Adding a figure: write a function `make(fast: bool) -> Result` and decorate it with
@figure("name"). It returns matplotlib figures by file stem and a Markdown summary; the runner
applies the style, stamps fast runs, saves and records the summary. FIGURES holds them in the
order they are defined, which is the paper's.
"""
import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, and the same pixels everywhere
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from posterior_icl import atomic_write, coin_flip_predictive, gp_posterior, tiny_mlp_posterior

# ================================================================================================
# Style: the paper's look (muted palette, serif text, open axes, legend below the axes)
# ================================================================================================

# seaborn's "muted" palette, which the paper's figures use; written out to avoid the dependency
BLUE, ORANGE, GREEN, RED, PURPLE, BROWN, PINK, GRAY, OLIVE, CYAN = (
    "#4878D0", "#EE854A", "#6ACC64", "#D65F5F", "#956CB4", "#8C613C", "#DC7EC0", "#797979", "#D5BB67", "#82C6E2")
EXACT, NETWORK, GUIDE = BLUE, ORANGE, "#BBBBBB"   # exact posterior blue, network orange, as in every paper figure

STYLE = {
    "font.family": "serif",
    "font.serif": ["STIXGeneral", "DejaVu Serif"],  # STIX ships with matplotlib and looks like the paper's Times
    "mathtext.fontset": "stix",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=[BLUE, ORANGE, GREEN, RED, PURPLE, BROWN, PINK, GRAY, OLIVE, CYAN]),
    "legend.frameon": True,
    "legend.edgecolor": "#CCCCCC",
    "savefig.dpi": 200,
}


def legend_below(fig, handles, ncol=None):
    """One legend for the whole figure, centred below the axes (the figure needs layout='constrained')."""
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol or len(handles))


def guide(ax, y, **kw):
    """A dashed grey horizontal reference line."""
    ax.axhline(y, color=GUIDE, ls="--", lw=1, zorder=0, **kw)


# ================================================================================================
# The registry, and the runner that saves figures and keeps summary.md
# ================================================================================================

@dataclass
class Result:
    """What a figure function returns: figures by file stem, and a Markdown summary of its numbers."""
    figures: dict = field(default_factory=dict)
    summary: str = ""


FIGURES = {}


def figure(name):
    """Register `make(fast) -> Result` under `name` (the command-line name and summary section)."""
    def register(make):
        if name in FIGURES:
            raise ValueError(f"figure {name!r} is registered twice")
        FIGURES[name] = make
        return make
    return register


def save(fig, out, stem, fast):
    """Write <out>/<stem>.png and .pdf, stamping fast runs. Returns the two paths."""
    if fast:
        fig.text(0.5, 0.5, "fast run", ha="center", va="center", rotation=20, fontsize=48,
                 color=RED, alpha=0.25, zorder=100)
    paths = [os.path.join(out, f"{stem}.{ext}") for ext in ("png", "pdf")]   # not with_suffix: stems hold dots
    fig.savefig(paths[0])
    fig.savefig(paths[1], metadata={"CreationDate": None})   # no timestamp: an unchanged figure gives the same file
    plt.close(fig)
    return paths


def update_summary(path, name, body):
    """Replace the section '## name' of the Markdown file at `path` with `body`, keeping all others.

    Sections start at lines '## <name>'; a new name is appended. Written to a temporary file and
    renamed over the old one, so a crash never leaves half a summary.
    """
    head, sections = "# Figure summary\n\nThe numbers behind the figures in this folder. " \
                     "Each section is rewritten by `python figures.py NAME`.\n", {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        parts = ("\n" + text).split("\n## ")
        head = parts[0].lstrip("\n")
        for part in parts[1:]:
            sections[part.split("\n", 1)[0].split()[0]] = "## " + part.rstrip("\n") + "\n"
    sections[name] = f"## {name}\n\n{body.strip()}\n"
    text = "\n".join(([head.strip() + "\n"] if head.strip() else []) + list(sections.values()))
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def render(name, out="figures", fast=False):
    """Make figure `name`, save its files into `out`, record its summary. Returns (paths, seconds)."""
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    with plt.rc_context(STYLE):
        result = FIGURES[name](fast)
        paths = [p for stem, fig in result.figures.items() for p in save(fig, out, stem, fast)]
    seconds = time.perf_counter() - start
    how = (f"**Fast run** (tiny budgets, not a result): `python figures.py --fast {name}`" if fast
           else f"`python figures.py {name}`")
    update_summary(os.path.join(out, "summary.md"), name, f"{result.summary.strip()}\n\n"
                   f"_{how}: {seconds:.1f} s, torch threads: {torch.get_num_threads()}; "
                   f"files: {', '.join(os.path.basename(p) for p in paths)}._")
    return paths, seconds


# ================================================================================================
# Networks: reuse checkpoints/<preset>.pt, or train it through train.py (with its progress bar)
# ================================================================================================

def network(preset, fast, **overrides):
    """The trained network of a train.py preset; trained first if its checkpoint is missing.

    A fast run trains a tiny budget into checkpoints/fast/<preset>.pt instead, so it never
    touches (or is mistaken for) a real network.
    """
    import train
    from posterior_icl import load_model
    if fast:
        overrides = dict(dict(steps=100, batch_size=16, final_eval_datasets=32, save_every=0), **overrides)
    cfg = train.resolve_config(["--preset", preset], **overrides)
    cfg["out"] = os.path.join("checkpoints", "fast", f"{preset}.pt") if fast else cfg["out"]
    if not os.path.exists(cfg["out"]):
        print(f"training {preset} for {cfg['steps']} steps -> {cfg['out']}")
        train.train(cfg)
    return load_model(cfg["out"], prior=cfg["prior"])


# ================================================================================================
# E5 counting: a set model with averaging attention cannot count identical tokens
# ================================================================================================
#
# Context: c ones (x ≡ 0). The exact posterior over the coin's bias sharpens with c, so P(y = 1)
# climbs from 0.66 to 0.98. But softmax attention over c identical keys gives every one weight 1/c
# and returns the same average for every c: the network sees one context whatever c is, and its
# prediction is a flat line (the paper's ≈ 0.889). The variant trained identically but given
# log(1 + c) as an extra input (train.py --preset coins_counting; see Transformer.count_feature)
# follows the posterior: the failure is the architecture's, not the training's.

@figure("counting")
def counting(fast):
    """E5: P(y = 1) after c ones, exact posterior against the paper's network and a counting variant."""
    from posterior_icl import PRIORS
    cs = [1, 2, 4, 8, 16, 32, 64]
    exact = [PRIORS["coins"].predict(torch.zeros(c), torch.ones(c), torch.zeros(1)).mean.item() for c in cs]
    nets = {"coins": "NN Posterior Approx. (the paper's network)",
            "coins_counting": "NN given log(1 + context size)"}
    preds = {}
    for preset in nets:
        model = network(preset, fast)
        preds[preset] = [model.predict(torch.zeros(c), torch.ones(c), torch.zeros(1)).mean.item() for c in cs]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    ax.plot(cs, exact, "o-", color=EXACT, label="Posterior Ground Truth")
    ax.plot(cs, preds["coins"], "o-", color=NETWORK, label=nets["coins"])
    ax.plot(cs, preds["coins_counting"], "s--", color=GREEN, label=nets["coins_counting"])
    ax.set_xscale("log")
    ax.set_xticks(cs, [str(c) for c in cs])
    ax.set_xlabel("number of ones in the context, c (log scale)")
    ax.set_ylabel("P(y = 1 | c ones)")
    ax.set_title("Counting identical examples")
    ax.grid(alpha=0.3)
    legend_below(fig, ax.get_legend_handles_labels()[0], ncol=1)
    rows = "\n".join(f"| {c} | {e:.3f} | {a:.3f} | {b:.3f} |"
                      for c, e, a, b in zip(cs, exact, preds["coins"], preds["coins_counting"]))
    spread = max(preds["coins"]) - min(preds["coins"])
    summary = ("| c | exact P(y=1) | network (paper) | network + log(1+c) |\n|---|---|---|---|\n" + rows +
               f"\n\nThe paper's network varies by {spread:.2e} across c = 1 … 64 (it cannot tell the contexts apart); "
               f"the counting variant's largest |error| is {max(abs(a - b) for a, b in zip(exact, preds['coins_counting'])):.3f}.")
    return Result({"counting": fig}, summary)


# ================================================================================================
# E7 tiny_mlp: outside the support of the data, anything goes
# ================================================================================================
#
# A 1-64-64-2 MLP learns P(y = 1 | x) for y ~ Bernoulli(0.5), x = y (+ N(0, 0.1²)). With noise
# the exact posterior is sigmoid(100 (x - 0.5)) everywhere; without noise the data are two points,
# the posterior exists only at x = 0 and x = 1, and at x = 0.5 nothing ties a network down: ten
# seeds give ten different answers. Training ten networks one after another would cost ten times
# the Python overhead, so they are trained at once as one batched network (see TinyMLPs).

class TinyMLPs:
    """S independent MLPs 1-64-64-2 (ReLU), one per seed, stored as batched weights.

    Layer weights are (S, fan_in, fan_out) and biases (S, 1, fan_out), so torch.bmm runs all S
    networks in one call. Member s is initialised like nn.Linear (uniform in ±1/√fan_in) from a
    generator seeded with seeds[s], so it is the same network whatever else is in the batch.
    """

    def __init__(self, seeds, hidden=64):
        self.seeds = list(seeds)
        sizes = [(1, hidden), (hidden, hidden), (hidden, 2)]
        per_seed = []
        for seed in self.seeds:
            g, tensors = torch.Generator().manual_seed(seed), []
            for fan_in, fan_out in sizes:
                bound = 1 / math.sqrt(fan_in)
                tensors += [(torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound,     # weight
                            (torch.rand(1, fan_out, generator=g) * 2 - 1) * bound]          # bias
            per_seed.append(tensors)
        self.params = [torch.stack(p).requires_grad_() for p in zip(*per_seed)]  # W1, b1, W2, b2, W3, b3

    def __call__(self, x):
        """x: (S, n) inputs, one row per network -> logits (S, n, 2)."""
        w1, b1, w2, b2, w3, b3 = self.params
        h = torch.relu(x[..., None] * w1 + b1)            # one input feature: an outer product, no matmul
        h = torch.relu(torch.baddbmm(b2, h, w2))
        return torch.baddbmm(b3, h, w3)

    @torch.no_grad()
    def prob(self, x):
        """P(y = 1 | x) of every network at the same points x (n,): (S, n)."""
        return self(x.float().expand(len(self.seeds), -1)).softmax(-1)[..., 1]

    def member(self, s):
        """Network s as a plain nn.Sequential (a copy), e.g. to check the batched maths."""
        net = nn.Sequential(nn.Linear(1, self.params[0].shape[-1]), nn.ReLU(),
                            nn.Linear(*self.params[2].shape[1:]), nn.ReLU(), nn.Linear(*self.params[4].shape[1:]))
        with torch.no_grad():
            for layer, (w, b) in zip(net[::2], zip(self.params[::2], self.params[1::2])):
                layer.weight.copy_(w[s].T), layer.bias.copy_(b[s, 0])
        return net


def tiny_mlp_batch(noise_std, n_nets, batch_size, generator):
    """One training batch per network: x (S, n), y (S, n), weights (S, n) that sum to 1 per network.

    Without noise every x is exactly 0 or 1, so a batch of 1024 holds just two distinct inputs. The
    mean loss over the batch is then exactly (count of zeros / B)·loss(x=0, y=0) + (count of ones /
    B)·loss(x=1, y=1): the same gradient from 2 points as from 1024, and the noiseless networks
    cost next to nothing. With noise every point is distinct and each has weight 1/B.
    """
    if noise_std == 0:
        ones = torch.binomial(torch.full((n_nets,), float(batch_size)), torch.tensor(0.5), generator=generator)
        x = torch.tensor([0.0, 1.0]).expand(n_nets, 2)
        return x, x.long(), torch.stack([batch_size - ones, ones], 1) / batch_size     # without noise, y = x
    y = torch.randint(0, 2, (n_nets, batch_size), generator=generator)
    x = y + noise_std * torch.randn(n_nets, batch_size, generator=generator)
    return x, y, torch.full(x.shape, 1 / batch_size)


def train_tiny_mlps(noise_std, seeds, steps, batch_size=1024, lr=1e-3, data_seed=0, progress=True):
    """Train one TinyMLPs per seed on E7's data with cross-entropy. Returns (networks, last loss per network (S,)).

    AdamW (torch's defaults: betas 0.9/0.999, weight decay 0.01; fused: one kernel per tensor),
    learning rate lr decayed to 0 by a cosine, no warm-up. All networks train at once: the loss
    is the *sum* of the networks' own mean losses, so each network's parameters get exactly the
    gradient of its own loss, and AdamW's update is elementwise, so each network follows the same
    path it would follow alone (given the same data).
    """
    nets = TinyMLPs(seeds)
    opt = torch.optim.AdamW(nets.params, lr=lr, fused=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    g = torch.Generator().manual_seed(data_seed)
    loss = torch.full((len(nets.seeds),), math.nan)
    for _ in tqdm(range(steps), desc=f"tiny_mlp, noise {noise_std}", leave=False, disable=not progress, mininterval=1):
        x, y, w = tiny_mlp_batch(noise_std, len(nets.seeds), batch_size, g)
        logits = nets(x)
        loss = (w * F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(w)).sum(1)   # (S,)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        schedule.step()
    return nets, loss.detach()


@figure("tiny_mlp")
def tiny_mlp(fast):
    """E7: ten seeds of a tiny MLP against the exact P(y = 1 | x), with and without input noise."""
    steps, batch_size, seeds = (200, 256, range(10)) if fast else (10_000, 1024, range(10))
    grid = torch.arange(-100, 301, dtype=torch.float64) / 200        # x in [-0.5, 1.5], step 0.005, exact 0 and 1
    result, at_half, rows = Result(), {}, []
    for level, noise in enumerate((0.0, 0.1)):
        nets, loss = train_tiny_mlps(noise, seeds, steps, batch_size, data_seed=1000 + level)
        probs = nets.prob(grid).double()                            # (S, X)
        exact = tiny_mlp_posterior(grid, noise)                     # (X,), NaN where undefined
        defined = ~exact.isnan()
        near_data = defined & ((grid.abs() <= 3 * noise) | ((grid - 1).abs() <= 3 * noise))   # within 3 std of 0 or 1
        at_half[noise] = probs[:, grid == 0.5][:, 0]
        gap, gap_near = ((probs[:, m] - exact[m]).abs().max().item() for m in (defined, near_data))

        fig, ax = plt.subplots(figsize=(5.6, 4.0), layout="constrained")
        # where the training inputs are: two point masses, or two Gaussian bumps (scaled to fit)
        if noise == 0:
            ax.vlines([0, 1], 0, 0.25, color=GUIDE, lw=4, zorder=0)
            ax.text(0.02, 0.97, "p(x) = 0 between the two inputs:\nno posterior there", transform=ax.transAxes,
                    ha="left", va="top", color=GRAY, fontsize=9)
        else:
            density = (torch.exp(-0.5 * (grid / noise) ** 2) + torch.exp(-0.5 * ((grid - 1) / noise) ** 2)) / 2
            ax.fill_between(grid, 0, 0.25 * density, color=GUIDE, lw=0, zorder=0)
        for p in probs:
            ax.plot(grid, p, color=NETWORK, lw=1, alpha=0.75)
        if noise == 0:
            ax.plot(grid[defined], exact[defined], "o", color=EXACT, ms=7, zorder=5)
        else:
            ax.plot(grid, exact, color=EXACT, lw=1.8, zorder=5)
        ax.set(xlim=(-0.5, 1.5), ylim=(-0.02, 1.02), xlabel="x", ylabel="P(y = 1 | x)",
               title=f"Model predictions, noise std {noise}")
        legend_below(fig, [
            plt.Line2D([], [], color=GUIDE, lw=4, label="Training inputs"),
            plt.Line2D([], [], color=EXACT, lw=1.8, marker="o" if noise == 0 else None, ls="none" if noise == 0 else "-",
                       label="Posterior Ground Truth"),
            plt.Line2D([], [], color=NETWORK, lw=1, label=f"NN, {len(nets.seeds)} seeds")], ncol=3)
        result.figures[f"tiny_mlp_curves_noise{noise:g}"] = fig
        p = at_half[noise]
        small = lambda v: f"{v:.3f}" if v >= 1e-3 else f"{v:.1e}"
        rows.append(f"| {noise} | {p.mean():.3f} | {p.min():.3f} | {p.max():.3f} | "
                    f"{'0.5' if noise else 'undefined'} | {small(gap)} over "
                    f"{'all ' + str(int(defined.sum())) + ' grid points' if noise else 'x ∈ {0, 1}'} | "
                    f"{small(gap_near)} | {loss.mean():.1e} |")

    fig, ax = plt.subplots(figsize=(5.6, 4.0), layout="constrained")
    for i, (noise, p) in enumerate(at_half.items()):
        ax.plot(torch.full_like(p, i), p, "o", color=NETWORK, alpha=0.6, ms=6)
        if noise:
            ax.plot([i - 0.12, i + 0.12], [0.5, 0.5], color=EXACT, lw=2.5)
        else:
            ax.text(i + 0.08, 0.5, "undefined", color=EXACT, va="center")
    ax.set(xticks=[0, 1], xticklabels=[f"noise std {n}" for n in at_half], xlim=(-0.5, 1.5), ylim=(0, 1),
           ylabel="P(y = 1 | x = 0.5)", title="Predictions at x = 0.5")
    legend_below(fig, [plt.Line2D([], [], color=EXACT, lw=2.5, label="Posterior Ground Truth"),
                       plt.Line2D([], [], color=NETWORK, marker="o", ls="none", alpha=0.6,
                                  label=f"NN, one dot per seed ({len(seeds)})")])
    result.figures["tiny_mlp_point_0.5"] = fig

    result.summary = f"""E7: MLP 1-64-64-2 (ReLU), {len(seeds)} seeds per noise level, {steps:,} steps of batch {batch_size},
AdamW 1e-3 (weight decay 0.01) with cosine decay. Predictions P(y = 1 | x = 0.5) across seeds,
and the largest gap to the exact posterior on the grid x = -0.5, -0.495, …, 1.5 where the
posterior exists, and on the part of it within 3 noise std of the data (x = 0 or 1).

| noise std | mean at 0.5 | min | max | exact at 0.5 | max abs(NN - exact) | … near the data | final loss (mean) |
|---|---|---|---|---|---|---|---|
""" + "\n".join(rows)
    return result


# ================================================================================================
# E8 coin_flip: a posterior that excludes the truth converges to the wrong answer
# ================================================================================================

@figure("coin_flip")
def coin_flip(fast):
    """E8: a fair coin, a prior on {0.3, 0.6}: the posterior predictive converges to 0.6."""
    ns = torch.arange(1, 1025)               # closed form, milliseconds: `fast` has nothing to cut
    predictive, lik = coin_flip_predictive(ns)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")

    for y, label in ((0.3, "q = 0.3"), (0.5, "truth 0.5"), (0.6, "q = 0.6")):
        guide(left, y)
        left.text(1200, y, label, va="center", fontsize=9, color=GRAY)
    left.plot(ns, predictive, color=EXACT, lw=1.8)
    left.set(xscale="log", xlim=(1, 1024), ylim=(0.25, 0.65), xlabel="n (coin flips)", ylabel="P(y = 1 | n flips)",
             title="Posterior predictive")

    # on a log axis an exponential decay is a straight line; its slope is the rate in coin_flip_predictive's docstring
    for col, (q, color) in enumerate(((0.3, GREEN), (0.6, PURPLE))):
        rate = -math.log(lik[-1, col] / lik[511, col]) / 512
        right.plot(ns, lik[:, col], color=color, lw=1.8, label=f"$L_{{{q}}}(n)$, ≈ $e^{{-{rate:.3f}\\,n}}$")
    right.set(yscale="log", xlim=(0, 1024), xlabel="n (coin flips)", ylabel="expected likelihood",
              title="Expected likelihoods")
    legend_below(fig, [plt.Line2D([], [], color=EXACT, lw=1.8, label="Posterior Ground Truth"),
                       *right.get_lines(), plt.Line2D([], [], color=GUIDE, ls="--", label="coin biases")])

    rows = "\n".join(f"| {n} | {predictive[n - 1]:.4f} | {lik[n - 1, 0]:.3e} | {lik[n - 1, 1]:.3e} |" for n in (1, 16, 1024))
    crossing = int(ns[(predictive > 0.5).nonzero()[0]])
    return Result({"coin_flip": fig}, f"""E8: true coin 0.5, prior {{0.3, 0.6}} with equal weight, expected likelihood
L_q(n) = Σ_k Bin(k; n, 0.5) Bin(k; n, q). Closed form: a fast run gives the same numbers.

| n | P(y = 1) | L_0.3(n) | L_0.6(n) |
|---|---|---|---|
{rows}

The predictive passes the truth 0.5 at n = {crossing} and converges to the wrong coin, 0.6.""")


# ================================================================================================
# E9 gp_step: an exact GP posterior on a step is confidently wrong
# ================================================================================================

@figure("gp_step")
def gp_step(fast):
    """E9: GP regression (RBF, ℓ = 0.4) on a step: the overshoot stays while the band shrinks."""
    sizes = (10, 20, 50, 100, 200, 400)      # closed form, about a second: `fast` has nothing to cut
    fine = torch.arange(-2000, 2001, dtype=torch.float64) / 1000     # [-2, 2], step 0.001, holds 0 and 0.5 exactly
    step = (fine >= 0).double()
    fig, axes = plt.subplots(2, 3, figsize=(10, 5.6), sharex=True, sharey=True, layout="constrained")
    rows = []
    for ax, n in zip(axes.flat, sizes):
        x = torch.linspace(-2, 2, n, dtype=torch.float64)
        y = (x >= 0).double()
        mean, std = gp_posterior(x, y, fine)
        ax.fill_between(fine, mean - 2 * std, mean + 2 * std, color=EXACT, alpha=0.25, lw=0)
        ax.plot(fine, step, color=GUIDE, ls="--", lw=1)
        ax.plot(fine, mean, color=EXACT, lw=1.5)
        ax.plot(x, y, "o", color="black", ms=max(1.5, 4 * math.sqrt(10 / n)))
        ax.set(title=f"n = {n}", xlim=(-2, 2), ylim=(-0.5, 1.5))
        outside = ((step < mean - 2 * std) | (step > mean + 2 * std)).double().mean().item()
        rows.append(f"| {n} | {mean.max().item() - 1:.3f} | {(mean - step).abs().mean().item():.4f} | "
                    f"{std[fine == 0.5].item():.4f} | {outside:.1%} |")
    legend_below(fig, [plt.Line2D([], [], color="black", marker="o", ls="none", label="In-Context Examples"),
                       plt.Line2D([], [], color=EXACT, lw=1.5, label="GP Posterior Mean"),
                       plt.Rectangle((0, 0), 1, 1, color=EXACT, alpha=0.25, lw=0, label="±2 std of f"),
                       plt.Line2D([], [], color=GUIDE, ls="--", label="the step 1[x ≥ 0]")])
    return Result({"gp_step": fig}, """E9: GP with RBF kernel (output scale 1, length scale 0.4), noise variance 0.01, mean 0,
nothing fitted; data y = 1[x ≥ 0] at n equally spaced points on [-2, 2]. Measured on 4001 points of
[-2, 2]: the overshoot max(mean) - 1, the mean absolute error of the mean against the step, the
posterior std of f at x = 0.5, and the share of x where the step lies outside the ±2 std band.
Closed form: a fast run gives the same numbers.

| n | overshoot | mean abs error | std at 0.5 | step outside ±2 std |
|---|---|---|---|---|
""" + "\n".join(rows))


# ================================================================================================
# Command line
# ================================================================================================

def main(argv=None):
    parser = argparse.ArgumentParser(description="Regenerate the paper's figures into a folder, as PNG and PDF.")
    parser.add_argument("names", nargs="*", metavar="NAME", help="figures to make (default: all; see --list)")
    parser.add_argument("--list", action="store_true", help="list the figures and exit")
    parser.add_argument("--fast", action="store_true", help="tiny budgets: a first look, marked 'fast run'")
    parser.add_argument("--out", default="figures", help="output folder (default: figures)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads (default 2, the reference machine; 1 is faster on a busy machine)")
    args = parser.parse_args(argv)
    if args.list:
        for name, make in FIGURES.items():
            print(f"{name:12s} {(make.__doc__ or '').strip().split(chr(10))[0]}")     # the docstring's first line
        return 0
    unknown = [n for n in args.names if n not in FIGURES]
    if unknown:
        print(f"figures.py: unknown figure {', '.join(map(repr, unknown))}; known figures: {', '.join(FIGURES)}",
              file=sys.stderr)
        return 2
    if args.threads < 1:
        print(f"figures.py: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        for name in args.names or list(FIGURES):
            paths, seconds = render(name, args.out, args.fast)
            print(f"{name}: {seconds:.1f} s -> {', '.join(paths)}")
    finally:
        torch.set_num_threads(previous)   # main() may run inside another program (the tests): leave it as found
    return 0


if __name__ == "__main__":
    sys.exit(main())
