"""posterior-icl: a transformer trained on tasks from a prior, measured against the prior's exact posterior.

A reimplementation of Müller, Hollmann & Hutter (2024), "Bayes' Power for Explaining In-Context Learning
Generalizations". Its sections (=== below) follow the paper's story; the README takes a tour of them.
Shapes: B datasets, N points per dataset, k context points, Q query points, L latents.
"""
import math, os
from collections import namedtuple
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.special import ndtr, ndtri

NOISE_STD = 0.1  # y = f(x) + N(0, 0.1²) for every regression prior of the paper

# === 0. Input checks: a clear ValueError instead of a silent wrong answer or a deep stack trace =============
def _as_data(name, t, dims=(1, 2)):
    """t as a finite float64 tensor of 1 or 2 dimensions (only 1 if dims == (1,)); else a ValueError."""
    try:
        t = torch.as_tensor(t, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a tensor or array of numbers, got {type(t).__name__}") from None
    if t.dim() not in dims:
        shapes = "(n,)" if dims == (1,) else "(N,) for one dataset or (B, N) for a batch"
        raise ValueError(f"{name} must have shape {shapes}; got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf; every value must be finite")
    return t

def _check_task(x_ctx, y_ctx, x_query):
    """Validate (context, queries); returns float64 (B, k), (B, k), (B, Q) and whether it was batched."""
    x_ctx, y_ctx, x_query = _as_data("x_ctx", x_ctx), _as_data("y_ctx", y_ctx), _as_data("x_query", x_query)
    _same_shape("x_ctx", x_ctx, "y_ctx", y_ctx)
    if x_ctx.dim() != x_query.dim() or x_ctx.shape[:-1] != x_query.shape[:-1]:
        raise ValueError("x_query must match the context's batch layout: (Q,) with a (k,) context, (B, Q) "
                         f"with (B, k); got context {tuple(x_ctx.shape)}, queries {tuple(x_query.shape)}")
    batched = x_ctx.dim() == 2
    if not batched:
        x_ctx, y_ctx, x_query = x_ctx[None], y_ctx[None], x_query[None]
    return x_ctx, y_ctx, x_query, batched

def _same_shape(a, ta, b, tb):
    if ta.shape != tb.shape:
        raise ValueError(f"{a} and {b} must have the same shape; got {tuple(ta.shape)} and {tuple(tb.shape)}")

def _against(t, dtype, shape, levels=False):
    """y values (or quantile levels) broadcast against the queries' shape; else a ValueError."""
    t = torch.as_tensor(t, dtype=dtype)
    if not (((t > 0) & (t < 1)) if levels else torch.isfinite(t)).all():
        raise ValueError("quantile levels must lie strictly between 0 and 1" if levels else
                         "y contains NaN or inf; every value must be finite")
    try:
        return t.expand(torch.broadcast_shapes(t.shape, shape))
    except RuntimeError:
        raise ValueError(f"shape {tuple(t.shape)} does not broadcast against the queries' {tuple(shape)}") \
            from None

def _number(name, v, ok, allowed):
    """float(v) if it is finite and ok(v); otherwise a ValueError that says what is allowed."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {allowed}, got {v!r}") from None
    if not (math.isfinite(v) and ok(v)):
        raise ValueError(f"{name} must be {allowed}, got {v}")
    return v

# === 1. Priors and the exact posterior: finite grids of latents, enumerated =================================
@dataclass
class Family:
    """y = f(params, x) + noise, one latent per point of the meshgrid over `grid` ({name: values}); f takes
    {name: tensor broadcasting against x}. `linear` names parameters f is affine in, jointly: a speed-up only
    (Prior._log_joint then needs a few sums per setting of the others, not a pass per latent)."""
    name: str
    f: object
    grid: dict
    linear: tuple = ()
    def __post_init__(self):
        self.grid = {k: torch.as_tensor(v, dtype=torch.float64).flatten() for k, v in self.grid.items()}
        if set(self.linear) - set(self.grid):
            raise ValueError(f"family {self.name!r}: linear {self.linear} must name parameters of "
                             f"{list(self.grid)}")
        self.nonlinear = tuple(k for k in self.grid if k not in self.linear)
        self.linear = tuple(k for k in self.grid if k in self.linear)
        self.shape = tuple(len(self.grid[k]) for k in self.nonlinear + self.linear)   # latent index order
        self.size = math.prod(self.shape)
        # a family that is not affine in what it calls linear would get a wrong posterior: test a mixture
        g = torch.Generator().manual_seed(0)
        x = torch.rand(7, generator=g).double() * 2 - 1
        theta = {k: v[torch.randint(len(v), (1,), generator=g)] for k, v in self.grid.items()}
        a, b = ({k: torch.randn(1, generator=g).double() for k in self.linear} for _ in range(2))
        f = lambda c: self({**theta, **c}, x)
        if not torch.allclose(f({k: 0.3 * a[k] + 0.7 * b[k] for k in a}), 0.3 * f(a) + 0.7 * f(b), atol=1e-9):
            raise ValueError(f"family {self.name!r}: f is not affine in its linear parameters {self.linear}")
    def params_at(self, idx):
        """Parameters of latents by flat index (nonlinear axes first, then linear, each in grid order)."""
        idx = torch.unravel_index(idx, self.shape)
        return {k: self.grid[k][i] for k, i in zip(self.nonlinear + self.linear, idx)}
    def __call__(self, params, x):
        shape = torch.broadcast_shapes(*[v.shape for v in params.values()], x.shape)
        return torch.as_tensor(self.f(params, x), dtype=x.dtype).expand(shape)

class Prior:
    """A uniform mixture of families, each uniform over its grid, with Gaussian noise."""
    kind = "regression"
    CHUNK = 2**24  # latents × datasets weighed at once by predict: bounds its memory
    def __init__(self, name, families, noise_std=NOISE_STD):
        names = [fam.name for fam in families]
        if len(set(names)) < len(names):
            raise ValueError(f"prior {name!r}: family names must differ (posteriors key by them): {names}")
        self.name, self.families, self.noise_std = name, list(families), noise_std
        self.n_latents = sum(fam.size for fam in self.families)
    def sample(self, batch_size, n_points, generator=None):
        """B datasets of N points, x (B, N) and y (B, N) in float32, drawn from the posterior's own grid."""
        if batch_size < 1 or n_points < 1:
            raise ValueError(f"batch_size and n_points must be >= 1; got {batch_size}, {n_points}")
        g = generator
        x = torch.rand(batch_size, n_points, generator=g, dtype=torch.float64) * 2 - 1
        fam_of = torch.randint(len(self.families), (batch_size,), generator=g)
        y = torch.empty_like(x)
        for i, fam in enumerate(self.families):
            rows = (fam_of == i).nonzero().flatten()
            # uniform over the meshgrid = each axis uniform and independent
            params = {k: v[torch.randint(len(v), (len(rows), 1), generator=g)] for k, v in fam.grid.items()}
            y[rows] = fam(params, x[rows])
        y += self.noise_std * torch.randn(y.shape, generator=g, dtype=torch.float64)
        return x.float(), y.float()
    def _log_joint(self, fam, x, y):
        """log p(latent) + log p(y | x, latent) for every latent of one family: (B, T, M), T the nonlinear
        settings, M the linear ones. With f = f0 + c·phi and r = y - f0, sum (r - c·phi)^2 =
        r·r - 2c·(phi r) + c·(phi phi^T)c: three sums per nonlinear setting, then one product for all c."""
        basis = _basis(fam, x).transpose(0, 1)                                  # (B, T, 1+J, n)
        r, phi = y[:, None, :] - basis[:, :, 0], basis[:, :, 1:]                 # (B, T, n), (B, T, J, n)
        stats = torch.cat([(r * r).sum(-1, keepdim=True), (phi @ r[..., None])[..., 0],
                           (phi @ phi.transpose(-1, -2)).flatten(-2)], -1)       # (B, T, 1+J+J²)
        c = _coefficients(fam)                                                  # (M, J)
        cfeat = torch.cat([torch.ones(len(c), 1).double(), -2 * c, (c[:, :, None] * c[:, None]).flatten(1)],
                          1)
        s = self.noise_std
        const = -x.shape[1] * math.log(s * math.sqrt(2 * math.pi)) - math.log(len(self.families) * fam.size)
        stats = stats * (-0.5 / s**2)
        stats[..., 0] += const                        # cfeat[:, 0] is 1: the constant rides along
        return stats @ cfeat.T                                                  # (B, T, M)
    def posterior(self, x, y):
        """The exact posterior of one dataset (N,) or a batch (B, N): log_weights[family] (B, *grid shape),
        log_evidence (B,) = log p(y | x) (the paper's p(D) adds N·log(1/2), the U(-1, 1) density of x),
        family_mass[family] (B,). Memory: B × n_latents float64 values."""
        x, y = _as_data("x", x), _as_data("y", y)
        _same_shape("x", x, "y", y)
        batched = x.dim() == 2
        x, y = (x, y) if batched else (x[None], y[None])
        joints = [self._log_joint(fam, x, y).flatten(1) for fam in self.families]
        log_ev = torch.cat(joints, 1).logsumexp(1)                                # (B,)
        log_w, mass = {}, {}
        for fam, j in zip(self.families, joints):
            lw = (j - log_ev[:, None]).reshape(-1, *fam.shape)
            names = fam.nonlinear + fam.linear
            log_w[fam.name] = lw.permute(0, *[1 + names.index(k) for k in fam.grid])
            mass[fam.name] = lw.flatten(1).logsumexp(1).exp()
        one = (lambda d: d) if batched else (lambda d: {k: v[0] for k, v in d.items()})
        return Posterior(one(log_w), log_ev if batched else log_ev[0], one(mass))
    def predict(self, x_ctx, y_ctx, x_query, prune=40.0, merge=True):
        """The exact PPD at x_query, a Gaussian mixture over latents. Latents below e^-prune of the best are
        dropped (under n_latents·e^-prune of the mass); merge: latents alike at every query are one."""
        x_ctx, y_ctx, x_query, batched = _check_task(x_ctx, y_ctx, x_query)
        B, empty = x_ctx.shape[0], x_ctx.shape[1] == 0
        # no context: every dataset's posterior is the prior, weighed once and shared where not merged
        step = B if empty else max(1, self.CHUNK // self.n_latents)
        parts = [[] for _ in range(B)]
        for b0 in range(0, B, step):
            rows = slice(0, 1) if empty else slice(b0, b0 + step)
            joints = [self._log_joint(fam, x_ctx[rows], y_ctx[rows]) for fam in self.families]
            log_ev = torch.cat([j.flatten(1) for j in joints], 1).logsumexp(1)               # (b,)
            top = torch.stack([j.flatten(1).amax(1) for j in joints]).amax(0) - log_ev       # (b,)
            for fam, j in zip(self.families, joints):
                log_w = j - log_ev[:, None, None]                                            # (b, T, M)
                # the mean needs only Σ_c w·[1, c] per nonlinear setting (f is affine in c)
                coef = _coefficients(fam)
                moments = log_w.exp() @ torch.cat([torch.ones(len(coef), 1).double(), coef], 1)
                shared = None
                for i in range(b0, min(B, b0 + step)):
                    r = 0 if empty else i - b0
                    merged = _merge_alike(fam, log_w[r], x_query[i]) if merge else None
                    if merged is None and shared is not None:
                        parts[i].append(shared)
                        continue
                    lw = (log_w[r] if merged is None else merged).flatten()
                    keep = (lw > top[r] - prune).nonzero().flatten()
                    parts[i].append((fam, keep, lw[keep], moments[r]))
                    if empty and merged is None:
                        shared = parts[i][-1]
        return MixturePredictive(parts, x_query, self.noise_std, batched)

def _meshgrid(grid, names):
    """Flattened meshgrid ('ij' order) over the named axes: {name: (product of sizes,)}; {} if none."""
    axes = torch.meshgrid(*[grid[k] for k in names], indexing="ij") if names else []
    return {k: a.flatten() for k, a in zip(names, axes)}

def _basis(fam, x):
    """f = φ₀(x; θ) + Σ cⱼ φⱼ(x; θ), c linear, θ the rest: (B, n) -> (T, B, 1+J, n)."""
    theta = {k: v[:, None, None] for k, v in _meshgrid(fam.grid, fam.nonlinear).items()}   # (T, 1, 1)
    T = math.prod(len(fam.grid[k]) for k in fam.nonlinear)
    zero = {k: torch.zeros((), dtype=torch.float64) for k in fam.linear}
    phi0 = fam({**theta, **zero}, x)
    phis = [fam({**theta, **zero, k: torch.ones((), dtype=torch.float64)}, x) - phi0 for k in fam.linear]
    return torch.stack([p.expand(T, *x.shape) for p in [phi0, *phis]], -2)

def _coefficients(fam):
    """The linear coefficients' meshgrid as (M, J); one empty setting (1, 0) if there are none."""
    m = _meshgrid(fam.grid, fam.linear)
    return torch.stack(list(m.values()), -1) if m else torch.zeros(1, 0, dtype=torch.float64)

def _merge_alike(fam, log_w, x_query):
    """Sum the weights of nonlinear settings that give the same f at every query, (T, M) -> (T, M), into the
    first of each group (the others get weight 0, and are pruned); None unless the mixture shrinks 4×.
    Exact, as the PPD sees f only at the queries: Q queries split the step positions into Q+1 groups."""
    if not fam.nonlinear:
        return None
    phi = _basis(fam, x_query[None])[:, 0].flatten(1)                      # (T, (1+J)·Q): f at the queries
    _, group, counts = torch.unique(phi, dim=0, return_inverse=True, return_counts=True)
    if len(counts) > len(group) // 4:
        return None
    top = log_w.max()
    summed = log_w.new_zeros(len(counts), log_w.shape[1]).index_add_(0, group, (log_w - top).exp())
    first = torch.full((len(counts),), len(group)).scatter_reduce_(0, group, torch.arange(len(group)), "amin")
    merged = torch.full_like(log_w, -math.inf)
    merged[first] = summed.log() + top
    return merged

Posterior = namedtuple("Posterior", "log_weights log_evidence family_mass")

def brute_force(prior, x, y, xq, yq):
    """Bayes' rule the straightforward way, to check the fast one: every latent, one data point at a time.
    x, y (k,), xq, yq (Q,) -> log posterior weights of all latents (L,; families in order, each in 'ij' order
    of its grid), log evidence, and the PPD's mean, log density and cdf at (xq, yq), each (Q,)."""
    grids, log_w, log_normal = _every_latent(prior)
    f_at = lambda xi: torch.cat([fam(p, torch.as_tensor(xi).double()) for fam, p in grids])   # (L,)
    for xi, yi in zip(x, y):
        log_w = log_w + log_normal(yi, f_at(xi))
    log_ev = log_w.logsumexp(0)
    log_w = log_w - log_ev
    ppd = [[(log_w.exp() * mu).sum(), (log_w + log_normal(yj, mu)).logsumexp(0),   # a query at a time
            (log_w.exp() * ndtr((yj - mu) / prior.noise_std)).sum()]
           for xj, yj in zip(xq, yq) for mu in [f_at(xj)]]
    return (log_w, log_ev, *torch.tensor(ppd, dtype=torch.float64).reshape(-1, 3).T)

def _every_latent(prior):
    """Each family's whole meshgrid, the log prior of every latent (L,), and the Gaussian log density."""
    s, grids = prior.noise_std, [(fam, _meshgrid(fam.grid, list(fam.grid))) for fam in prior.families]
    log_prior = torch.cat([torch.full((f.size,), -math.log(len(grids) * f.size), dtype=torch.float64)
                           for f, _ in grids])
    return grids, log_prior, lambda v, mu: -0.5 * ((v - mu) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))

class CoinPrior:
    """E5: a coin with unknown bias p on a grid; x ≡ 0 carries no information, y ~ Bernoulli(p)."""
    kind = "classification"
    def __init__(self, name, ps):
        self.name, self.ps = name, torch.as_tensor(ps, dtype=torch.float64)
        self.n_latents = len(self.ps)
    def sample(self, batch_size, n_points, generator=None):
        if batch_size < 1 or n_points < 1:
            raise ValueError(f"batch_size and n_points must be >= 1; got {batch_size}, {n_points}")
        p = self.ps[torch.randint(len(self.ps), (batch_size, 1), generator=generator)]
        y = torch.rand(batch_size, n_points, generator=generator, dtype=torch.float64) < p
        return torch.zeros(batch_size, n_points), y.float()
    def _log_joint(self, y):                                                   # (B, L)
        if not ((y == 0) | (y == 1)).all():
            raise ValueError(f"prior {self.name!r} is a coin: y values must be 0 or 1")
        ones, n = y.sum(-1, keepdim=True), y.shape[-1]
        return ones * self.ps.log() + (n - ones) * (1 - self.ps).log() - math.log(len(self.ps))
    def predict(self, x_ctx, y_ctx, x_query):
        x_ctx, y_ctx, x_query, batched = _check_task(x_ctx, y_ctx, x_query)
        p1 = (self._log_joint(y_ctx).softmax(-1) @ self.ps)[:, None].expand(x_query.shape)   # (B, Q)
        return BernoulliPredictive(p1 if batched else p1[0])


# The paper's priors. Each family's f takes a dict of parameters and x, broadcasting.
_lin = lambda a, b, n: torch.linspace(a, b, n, dtype=torch.float64)

_sine = Family("sine", lambda p, x: p["y_off"] + 0.2 * torch.sin(3 * math.pi * x), {"y_off": _lin(0, 1, 101)},
               linear=("y_off",))
_line = Family("line", lambda p, x: p["y_off"] + p["slope"] * x,
               {"slope": _lin(-1, 1, 101), "y_off": _lin(-1, 1, 101)}, linear=("slope", "y_off"))
_phase = Family("sine", lambda p, x: 0.2 * torch.sin(3 * math.pi * x + 2 * math.pi * p["phase"]),
                {"phase": _lin(0, 1, 101)})
_step = lambda p, x: p["y_off"] + p["amp"] * (x > p["x_off"])      # strict: at x_off the value is y_off
_steps = Family("step", _step, {"x_off": _lin(-1, 1, 101), "y_off": _lin(-1, 1, 101), "amp": _lin(0, 2, 101)},
                linear=("y_off", "amp"))
_steps_ud = Family("step", _step, {k: _lin(-1, 1, 201) for k in ("x_off", "y_off", "amp")},
                   linear=("y_off", "amp"))

PRIORS = {
    "sines_lines": Prior("sines_lines", [_sine, _line]),
    "sines_phase": Prior("sines_phase", [_phase]),
    "steps": Prior("steps", [_steps]),
    "steps_updown": Prior("steps_updown", [_steps_ud]),
    "coins": CoinPrior("coins", torch.arange(1, 102, dtype=torch.float64) / 102),
}

def get_prior(name):
    """PRIORS[name], or a ValueError that lists the known names."""
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; known priors: {', '.join(PRIORS)}")
    return PRIORS[name]

# === 2. Predictive distributions: one interface for the exact posterior and for the network =================
class Predictive:
    """mean, log_prob(y), cdf(y), quantile(q), bucket_probs(borders), shaped like the queries: (Q,) or
    (B, Q). y and q broadcast against that shape and may add leading dimensions: (V, 1, 1) -> (V, B, Q)."""
    def bucket_probs(self, borders):
        """Mass in each bucket [borders[i], borders[i+1]) (the outer ones take the tails): (..., buckets)."""
        inner = torch.as_tensor(borders, dtype=torch.float64)[1:-1]
        c = self.cdf(inner.reshape(-1, *[1] * self.mean.dim())).double()                 # (buckets-1, ...)
        c = torch.cat([torch.zeros_like(c[:1]), c, torch.ones_like(c[:1])])
        return c.diff(dim=0).movedim(0, -1).clamp_min(0)

class MixturePredictive(Predictive):
    """The exact PPD Σ_l w_l N(y; f_l(x*), σ²), in chunks of latents to bound memory. parts[b] lists, per
    family: (family, indices (K,) and log weights (K,) of the latents that matter, moments Σ_c w·[1, c])."""
    CHUNK = 2**18  # latents × values × queries at once: small enough to stay in the cache
    def __init__(self, parts, x_query, noise_std, batched):
        self.parts, self.xq, self.sigma, self.batched = parts, x_query, noise_std, batched
        self.mean_shape = x_query.shape if batched else x_query.shape[1:]
    def _chunks(self, b, width=1):
        """Yield (log_w (K, 1, 1), mu (K, 1, Q)) over dataset b's latents."""
        step = max(1, self.CHUNK // (width * self.xq.shape[1]))
        for fam, idx, lw, _ in self.parts[b]:
            for s in range(0, len(idx), step):
                params = {k: v[:, None] for k, v in fam.params_at(idx[s:s + step]).items()}
                yield lw[s:s + step, None, None], fam(params, self.xq[b])[:, None, :]
    def _per_value(self, y, fn):
        """fn(b, v (V, Q)) -> (V, Q) for each dataset b, on y of shape (..., [B,] Q): a result like y."""
        y = _against(y, torch.float64, self.mean_shape)
        yb = y.reshape(-1, *self.xq.shape)                                          # (V, B, Q)
        return torch.stack([fn(b, yb[:, b]) for b in range(len(self.parts))], 1).reshape(y.shape)
    @property
    def mean(self):
        """Σ_l w_l f_l(x*): the paper's 'Posterior Ground Truth' curve."""
        m = torch.stack([sum(torch.einsum("tj,tjq->q", mom, _basis(fam, self.xq[b][None])[:, 0])
                             for fam, _, _, mom in self.parts[b]) for b in range(len(self.parts))])
        return m if self.batched else m[0]
    def log_prob(self, y):
        c = -math.log(self.sigma * math.sqrt(2 * math.pi))
        def one(b, v):
            return torch.stack([torch.logsumexp(lw - 0.5 * ((v - mu) / self.sigma) ** 2 + c, 0)
                                for lw, mu in self._chunks(b, len(v))]).logsumexp(0)
        return self._per_value(y, one)
    def cdf(self, y):
        def one(b, v):
            return sum((lw.exp() * ndtr((v - mu) / self.sigma)).sum(0) for lw, mu in self._chunks(b, len(v)))
        return self._per_value(y, one).clamp(0, 1)
    def quantile(self, q, tol=1e-13):
        """Inverse cdf by bisection to `tol` (the mixture's cdf is continuous and strictly increasing)."""
        q = _against(q, torch.float64, self.mean_shape, levels=True).contiguous()
        top = max(mu.abs().max().item() for b in range(len(self.parts)) for _, mu in self._chunks(b))
        lo, hi = torch.full_like(q, -top - 12 * self.sigma), torch.full_like(q, top + 12 * self.sigma)
        for _ in range(math.ceil(math.log2(2 * (top + 12 * self.sigma) / tol))):      # halve to tol
            mid = (lo + hi) / 2
            below = self.cdf(mid) < q
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return (lo + hi) / 2

class BernoulliPredictive:
    """y in {0, 1} with P(y = 1) = p: the exact coin posterior and the network's coin head alike. Its whole
    distribution is p, so it has a mean and a log_prob, and no cdf or quantiles to plot."""
    def __init__(self, p):
        self.p = self.mean = p
    def log_prob(self, y):
        y = torch.as_tensor(y, dtype=self.p.dtype)
        if not ((y == 0) | (y == 1)).all():
            raise ValueError("a Bernoulli predictive takes y in {0, 1}")
        return torch.where(y == 1, self.p, 1 - self.p).log()

# === 3. The bar distribution: how a network outputs a whole predictive distribution over y ==================
def bucket_borders(prior, n_buckets=1000, n_datasets=10_000, n_points=10, seed=0):
    """Borders at equal-mass quantiles of y sampled from the prior, (n_buckets + 1,): resolution where the
    data are. Duplicates (y with atoms) are merged, so no bucket has width 0 and log-density -inf."""
    _, y = prior.sample(n_datasets, n_points, generator=torch.Generator().manual_seed(seed))
    b = torch.quantile(y.flatten().double(), torch.linspace(0, 1, n_buckets + 1, dtype=torch.float64))
    return torch.unique(b).float()

class BarPredictive(Predictive):
    """A density over buckets, logits (..., buckets): bucket b holds softmax(logits)_b, uniform inside an
    inner bucket; the outer two hold a half-normal pointing outwards from their inner border, half of it in
    the bucket, so the support is all of ℝ and a far y has a finite log-density. Every method uses it."""
    HALF = 0.6744897501960817  # median of |N(0, 1)|
    def __init__(self, borders, logits):
        self.borders, self.logits = borders.to(logits.dtype), logits
        self.widths = self.borders.diff()
        self.log_p = logits.log_softmax(-1)
        self.scale_left, self.scale_right = self.widths[0] / self.HALF, self.widths[-1] / self.HALF
    def _bucket(self, y):
        """The bucket holding y; values beyond the borders belong to the outer buckets."""
        b = torch.searchsorted(self.borders, y.contiguous(), right=True) - 1
        return b.clamp(0, len(self.widths) - 1)
    def _tail_distance(self, y):
        """How far y lies outside the two inner borders, in units of each tail's scale: (left, right) >= 0."""
        return ((self.borders[1] - y).clamp_min(0) / self.scale_left,
                (y - self.borders[-2]).clamp_min(0) / self.scale_right)
    def _log_shape(self, y, b):
        """log density at y of bucket b's shape, normalised to mass 1."""
        left, right = self._tail_distance(y)
        half_normal = lambda d, s: math.log(2 / math.sqrt(2 * math.pi)) - 0.5 * d**2 - s.log()
        last = len(self.widths) - 1
        inner = torch.where(b == last, half_normal(right, self.scale_right), -self.widths[b].log())
        return torch.where(b == 0, half_normal(left, self.scale_left), inner)
    def _at(self, t, b):
        """t (..., buckets) at bucket b (...)."""
        return t.expand(*b.shape, -1).gather(-1, b[..., None])[..., 0]
    def log_prob(self, y):
        y = _against(y, self.logits.dtype, self.logits.shape[:-1])
        b = self._bucket(y)
        return self._at(self.log_p, b) + self._log_shape(y, b)
    def cdf(self, y):
        y = _against(y, self.logits.dtype, self.logits.shape[:-1])
        b, p = self._bucket(y), self.log_p.exp()
        left, right = self._tail_distance(y)
        inside = ((y - self.borders[b]) / self.widths[b]).clamp(0, 1)                # inner buckets: linear
        inside = torch.where(b == 0, 2 * ndtr(-left), inside)                        # P(half-normal > d)
        inside = torch.where(b == len(self.widths) - 1, 1 - 2 * ndtr(-right), inside)
        return self._at(p.cumsum(-1) - p, b) + self._at(p, b) * inside
    def quantile(self, q):
        """Inverse of cdf, bucket by bucket (the tails by the normal's inverse cdf); q broadcasts."""
        q = _against(q, self.logits.dtype, self.logits.shape[:-1], levels=True)
        p = self.log_p.exp().expand(*q.shape, -1)
        cum, last = p.cumsum(-1), len(self.widths) - 1
        b = torch.searchsorted(cum.contiguous(), q[..., None].contiguous())[..., 0].clamp(0, last)
        pb = self._at(p, b)
        tiny = torch.finfo(q.dtype).tiny                      # ndtri(0) is -inf: stay a hair inside
        u = ((q - self._at(cum - p, b)) / pb.clamp_min(tiny)).clamp(tiny, 1)         # position inside b
        left = self.borders[1] + self.scale_left * ndtri((u / 2).clamp_min(tiny))
        right = self.borders[-2] - self.scale_right * ndtri(((1 - u) / 2).clamp_min(tiny))
        inner = self.borders[b] + u * self.widths[b]
        return torch.where(b == 0, left, torch.where(b == last, right, inner))
    @property
    def mean(self):
        mids = (self.borders[:-1] + self.borders[1:]) / 2
        mids[0] = self.borders[1] - self.scale_left * math.sqrt(2 / math.pi)        # the tails' own means
        mids[-1] = self.borders[-2] + self.scale_right * math.sqrt(2 / math.pi)
        return (self.log_p.exp() * mids).sum(-1)


# === 4. The transformer: a set model from (context, queries) to a predictive per query ======================
class Block(nn.Module):
    """Attention + feed-forward, each residual; post-norm as in the paper, or pre-norm. The output
    projection and the second feed-forward layer start at zero: each block starts as the identity."""
    def __init__(self, d_model, head_size, pre_norm):
        super().__init__()
        self.heads, self.pre_norm = d_model // head_size, pre_norm
        self.qkv, self.out = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        self.ff1, self.ff2 = nn.Linear(d_model, 4 * d_model), nn.Linear(4 * d_model, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        for layer in (self.out, self.ff2):
            nn.init.zeros_(layer.weight), nn.init.zeros_(layer.bias)
    def attend(self, h, n_ctx):
        """h: (B, k+Q, E), the first k tokens the context -> (B, k+Q, E)."""
        B, T, E = h.shape
        if n_ctx == 0:                          # nothing to look at: attention adds nothing
            return torch.zeros_like(h)
        q, k, v = self.qkv(h).view(B, T, 3, self.heads, E // self.heads).permute(2, 0, 3, 1, 4)
        # Every token asks, only the context answers: a query sees the context and nothing else, so its
        # prediction cannot depend on which other queries share the batch.
        a = F.scaled_dot_product_attention(q, k[:, :, :n_ctx], v[:, :, :n_ctx])   # (B, heads, T, E/heads)
        return self.out(a.transpose(1, 2).reshape(B, T, E))
    def forward(self, h, n_ctx):
        if self.pre_norm:
            h = h + self.attend(self.norm1(h), n_ctx)
            return h + self.ff2(F.gelu(self.ff1(self.norm2(h))))
        h = self.norm1(h + self.attend(h, n_ctx))
        return self.norm2(h + self.ff2(F.gelu(self.ff1(h))))

class Transformer(nn.Module):
    """The prior-data fitted network: context token Linear_x(x) + Linear_y(y), query token Linear_x(x), no
    positional encoding (the context is a set); logits over the buckets, or 2 for coins.
    count_feature (E5): softmax attention averages, so k identical tokens look alike for every k; log(1 + k)
    on every token shows the failure to count is the architecture's. x_freq = w (E1, E2): x also as sin(wπx),
    cos(wπx), so attention can compare phases along a sine, which a linear embedding of x cannot.
    """
    def __init__(self, prior, borders=None, d_model=128, n_layers=4, head_size=32, pre_norm=False,
                 count_feature=False, x_freq=0.0, decoder_mult=1):
        super().__init__()
        if d_model % head_size:
            raise ValueError(f"d_model ({d_model}) must be a multiple of head_size ({head_size})")
        self.prior = prior
        self.config = dict(d_model=d_model, n_layers=n_layers, head_size=head_size, pre_norm=pre_norm,
                           count_feature=count_feature, x_freq=float(x_freq), decoder_mult=decoder_mult)
        regression = get_prior(prior).kind == "regression"
        if regression and borders is None:
            raise ValueError(f"prior {prior!r} is a regression prior: give bucket borders (bucket_borders)")
        self.register_buffer("borders", torch.as_tensor(borders if regression else [], dtype=torch.float32))
        self.embed_x, self.embed_y = nn.Linear(3 if x_freq else 1, d_model), nn.Linear(1, d_model)
        self.embed_count = nn.Linear(1, d_model) if count_feature else None
        self.blocks = nn.ModuleList(Block(d_model, head_size, pre_norm) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()
        n_out = len(self.borders) - 1 if regression else 2
        hidden = decoder_mult * d_model          # the paper: 4; sines_lines learns as well with 1, faster
        self.decoder = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, n_out))
    def x_features(self, x):
        """(B, n) -> (B, n, 1), or with x_freq = w (B, n, 3): [x, sin(wπx), cos(wπx)]."""
        w = self.config["x_freq"] * math.pi
        return torch.stack([x, torch.sin(w * x), torch.cos(w * x)] if w else [x], -1)
    def forward(self, x_ctx, y_ctx, x_query):
        """(B, k), (B, k), (B, Q) -> logits (B, Q, n_outputs)."""
        k = x_ctx.shape[1]
        ctx = self.embed_x(self.x_features(x_ctx)) + self.embed_y(y_ctx[..., None])     # (B, k, E)
        h = torch.cat([ctx, self.embed_x(self.x_features(x_query))], 1)                 # (B, k+Q, E)
        if self.embed_count is not None:
            h = h + self.embed_count(torch.full((1, 1, 1), math.log1p(k), device=h.device, dtype=h.dtype))
        for block in self.blocks:
            h = block(h, k)
        return self.decoder(self.final_norm(h[:, k:]))
    def predictive(self, logits):
        """Logits -> the predictive distribution, with the exact posterior's interface."""
        if len(self.borders):
            return BarPredictive(self.borders.to(logits.device), logits.float())
        return BernoulliPredictive((logits[..., 1] - logits[..., 0]).sigmoid())
    def nll(self, logits, y):
        """The training loss: mean negative log-likelihood of the query labels y (B, Q)."""
        if len(self.borders):
            return -self.predictive(logits).log_prob(y.float()).mean()
        return F.cross_entropy(logits.float().flatten(0, -2), y.long().flatten())
    @torch.no_grad()
    def predict(self, x_ctx, y_ctx, x_query):
        """The predictive at x_query given the context, (k,), (k,), (Q,) or (B, ·): as prior.predict."""
        x_ctx, y_ctx, x_query, batched = _check_task(x_ctx, y_ctx, x_query)
        if not len(self.borders):
            get_prior(self.prior)._log_joint(y_ctx)           # refuses labels other than 0 and 1
        p = next(self.parameters())          # no dropout or batch statistics: train and eval modes agree
        logits = self(*(t.to(p.device, p.dtype) for t in (x_ctx, y_ctx, x_query))).float().cpu()
        return self.predictive(logits if batched else logits[0])

def make_model(prior, n_buckets=1000, seed=0, **config):
    """A fresh Transformer for a prior by name, with bucket borders computed from that prior."""
    p = get_prior(prior)
    borders = bucket_borders(p, n_buckets, seed=seed) if p.kind == "regression" else None
    return Transformer(prior, borders, **config)

class Muon(torch.optim.Optimizer):
    """torch.optim.Muon's update of weight matrices (Nesterov momentum 0.95, orthogonalised by five Newton-
    Schulz steps, scaled to AdamW's RMS), the matrices of one shape orthogonalised together in float32:
    torch's takes one matrix at a time in bfloat16, which a CPU does slowly."""
    def __init__(self, params, lr, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))
    @torch.no_grad()
    def step(self):
        group, shapes = self.param_groups[0], {}
        for p in (p for p in group["params"] if p.grad is not None):   # no context: no attention gradient
            m = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)).lerp_(p.grad, 0.05)
            shapes.setdefault(p.shape, []).append((p, p.grad.lerp(m, 0.95)))
        for (rows, cols), pairs in shapes.items():
            x = torch.stack([u.mT if rows > cols else u for _, u in pairs])        # (matrices, short, long)
            x = x / x.norm(dim=(1, 2), keepdim=True).clamp_min(1e-7)
            for _ in range(5):
                a = x @ x.mT
                x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
            for (p, _), u in zip(pairs, x):
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(u.mT if rows > cols else u, alpha=-group["lr"] * 0.2 * max(rows, cols) ** 0.5)

# === 5. Checkpoints: one file of plain things, written atomically ===========================================
FORMAT = "posterior-icl/2"

def atomic_write(path, write):
    """Create `path` through write(binary file): written beside it, then renamed over it, so a crash never
    leaves half a file and never destroys the previous one."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise

def save_model(model, path, **extra):
    """Write weights, borders, prior name and config (plus any plain `extra`) to `path`, atomically."""
    ckpt = dict(format=FORMAT, prior=model.prior, config=model.config, borders=model.borders.cpu(),
                state_dict={k: v.cpu() for k, v in model.state_dict().items()}, **extra)
    atomic_write(path, lambda f: torch.save(ckpt, f))

def load_checkpoint(path, prior=None):
    """The checkpoint (weights_only: no code is unpickled); a ValueError if not ours, or not `prior`'s."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:                    # missing, truncated, or not a torch file at all
        raise ValueError(f"{str(path)!r} is not a readable posterior-icl checkpoint ({type(e).__name__})") \
            from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:   # /1: its decoder fixed at d -> 4d
        raise ValueError(f"{str(path)!r} is not a {FORMAT} checkpoint (an earlier version's? retrain it)")
    if prior is not None and ckpt["prior"] != prior:
        raise ValueError(f"{str(path)!r} holds a network for prior {ckpt['prior']!r}, not {prior!r}")
    return ckpt

def load_model(path, prior=None):
    """Rebuild the Transformer stored at `path` (optionally insisting on its prior)."""
    ckpt = load_checkpoint(path, prior)
    model = Transformer(ckpt["prior"], ckpt["borders"] if len(ckpt["borders"]) else None, **ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()

# === 6. The headline metric: how far is the network from the exact posterior? ===============================
GAP_BINS = ((0, 0), (1, 1), (2, 3), (4, 7), (8, 15), (16, 31), (32, 63), (64, math.inf))

def bin_label(lo, hi):
    return f"{lo}" if lo == hi else f"≥ {lo}" if hi == math.inf else f"{lo}–{hi}"

def gap_plan(prior, n_datasets, n_points, all_sizes=None, name="n_datasets"):
    """Whether posterior_gap takes each dataset at every size (default where the exact posterior is cheap) or
    at one; a ValueError, calling n_datasets `name`, if a size would get fewer than two datasets."""
    all_sizes = prior.n_latents <= 10**5 if all_sizes is None else all_sizes
    need = 2 if all_sizes else 2 * n_points
    if n_points < 1 or n_datasets < need:
        raise ValueError(f"posterior_gap needs n_points >= 1 and {name} >= {need} (two per context size, for "
                         f"a standard error); got {name} {n_datasets}, n_points {n_points}")
    return all_sizes

def _log_prob_at_every_size(prior, x, y):
    """log p(y_q | x_q, the first k points) of the exact PPD for all k <= q, (B, N, N) as [b, k, q]: one
    matrix product per dataset over every latent, exp-normalised (data from the prior do not underflow it)."""
    grids, log_prior, log_normal = _every_latent(prior)
    out = []
    for xb, yb in zip(x.double(), y.double()):
        ll = log_normal(yb, torch.cat([fam({k: v[:, None] for k, v in p.items()}, xb) for fam, p in grids]))
        joint = log_prior[:, None] + torch.cat([0 * ll[:, :1], ll.cumsum(1)[:, :-1]], 1)   # [l, k]: k points
        w, lik = (joint - joint.amax(0)).exp(), (ll - ll.amax(0)).exp()
        out.append(((w.T @ lik) / w.sum(0)[:, None]).log() + ll.amax(0))                              # [k, q]
    return torch.stack(out)

@torch.no_grad()
def posterior_gap(model, prior, n_datasets=512, n_points=20, seed=12345, all_sizes=None):
    """NLL_network - NLL_exact per query on seeded datasets from the prior (nats): as E[NLL_network] =
    E[KL(PPD ‖ network)] + E[NLL_exact], an estimate of the expected KL, far less noisy than either NLL. At
    size k a dataset's first k points are the context. Returns dict(gap, se: mean over sizes 0 … N-1, each
    weighted equally as in training, ± its standard error over datasets; per_context {'k': [gap, se]}; bins
    {label: [gap, se]}; head, head_se: the exact PPD on the network's buckets; nll_exact, n_datasets, ...)."""
    prior = get_prior(prior) if isinstance(prior, str) else prior
    if model.prior != prior.name:
        raise ValueError(f"the network was trained on prior {model.prior!r}, not {prior.name!r}")
    all_sizes = gap_plan(prior, n_datasets, n_points, all_sizes)
    x, y = prior.sample(n_datasets, n_points, generator=torch.Generator().manual_seed(seed))
    gap, head, nll = (torch.full((n_datasets, n_points), math.nan, dtype=torch.float64) for _ in range(3))
    every = _log_prob_at_every_size(prior, x, y) if all_sizes and isinstance(prior, Prior) else None
    for k in range(n_points):
        rows = torch.arange(n_datasets) if all_sizes else torch.arange(k, n_datasets, n_points)
        xc, yc, xq, yq = x[rows, :k], y[rows, :k], x[rows, k:], y[rows, k:]
        own = torch.arange(len(rows))[k::n_points] if all_sizes else torch.arange(len(rows))  # head: a share
        net = model.predict(xc, yc, xq)
        exact = prior.predict(xc, yc, xq) if every is None else prior.predict(xc[own], yc[own], xq[own])
        lp_exact = exact.log_prob(yq.double()) if every is None else every[rows, k, k:]
        gap[rows, k] = (lp_exact - net.log_prob(yq).double()).mean(-1)
        nll[rows, k] = -lp_exact.mean(-1)
        head[rows[own], k] = 0.0
        if isinstance(net, BarPredictive) and len(own):
            # the best any head on these buckets can do: y's bucket's exact mass, in that bucket's shape
            yo, b, last = yq[own], net._bucket(yq[own]), len(net.widths) - 1
            edges = torch.stack([torch.where(b == 0, -1e6, net.borders[b]),
                                 torch.where(b == last, 1e6, net.borders[b + 1])])
            lp_head = exact.cdf(edges).diff(dim=0)[0].clamp_min(1e-300).log() + net._log_shape(yo, b).double()
            head[rows[own], k] = (lp_exact[own] - lp_head).mean(-1)
    def stat(v):                    # per-dataset values -> [mean, standard error]; NaN: not measured
        v = v[~v.isnan()]
        return [v.mean().item(), (v.std() / math.sqrt(len(v))).item() if len(v) > 1 else math.nan]
    bins = {bin_label(lo, hi): stat(gap[:, lo:int(min(hi, n_points)) + 1].nanmean(1))
            for lo, hi in GAP_BINS if lo < n_points}
    (g, se), (h, h_se) = stat(gap.nanmean(1)), stat(head.nanmean(1))
    return dict(gap=g, se=se, head=h, head_se=h_se, nll_exact=nll.nanmean().item(), n_datasets=n_datasets,
                seed=seed, all_sizes=all_sizes, bins=bins,   # per_context keys are str, as in a checkpoint
                per_context={str(k): stat(gap[:, k]) for k in range(n_points)})

# === 7. The limits: closed forms where the posterior is undefined (E7) or itself misleads (E8, E9) ==========
def coin_flip_predictive(ns, p_true=0.5, support=(0.3, 0.6)):
    """E8: P(y = 1) after n flips of a p_true-coin under an equal-weight prior on the biases `support`,
    each bias q weighed (as the paper does) by its expected likelihood L_q(n) = Σ_k Bin(k; n, p_true)
    Bin(k; n, q). ns (N,) or one int -> (predictive (N,), likelihood (N, S)), float64, in log space."""
    ns_t = torch.as_tensor(ns, dtype=torch.float64)
    whole = ns_t.isfinite() & (ns_t >= 1) & (ns_t == ns_t.round())
    if ns_t.dim() > 1 or not ns_t.numel() or not whole.all():
        raise ValueError(f"ns must be a positive integer (flips) or a 1-D sequence of them; got {ns}")
    between = "a number strictly between 0 and 1"
    p_true = _number("p_true", p_true, lambda p: 0 < p < 1, between)
    q = torch.tensor([_number(f"support[{i}]", v, lambda p: 0 < p < 1, between)
                      for i, v in enumerate(support)], dtype=torch.float64)
    if len(q) == 0 or len(set(q.tolist())) < len(q):
        raise ValueError(f"support must hold distinct biases (a repeat doubles its weight); got {support}")
    n = ns_t.reshape(-1)[:, None, None]                                 # (N, 1, 1)
    k = torch.arange(int(n.max()) + 1, dtype=torch.float64)             # (K,) numbers of ones
    def log_bin(p):                                                     # log Bin(k; n, p); -inf where k > n
        lp = torch.distributions.Binomial(n, probs=p, validate_args=False).log_prob(torch.minimum(k, n))
        return torch.where(k <= n, lp, -math.inf)
    log_lik = (log_bin(torch.tensor(p_true, dtype=torch.float64)) + log_bin(q[:, None])).logsumexp(-1)  # N, S
    predictive = log_lik.softmax(-1) @ q                       # the posterior: a softmax of log L
    return (predictive[0], log_lik.exp()[0]) if ns_t.dim() == 0 else (predictive, log_lik.exp())

def gp_posterior(x_train, y_train, x_test, length_scale=0.4, output_scale=1.0, noise_var=0.01):
    """E9: exact GP regression, kernel output_scale · exp(-(a - b)² / (2ℓ²)), mean 0, nothing fitted.
    x_train, y_train (n,), x_test (m,) -> (mean, std) of f at x_test (m,), via the Cholesky factor of
    K + σ²I (K alone is singular for dense data); n = 0 gives the prior."""
    x, y, xq = (_as_data(*a, (1,)) for a in (("x_train", x_train), ("y_train", y_train), ("x_test", x_test)))
    _same_shape("x_train", x, "y_train", y)
    given = dict(length_scale=length_scale, output_scale=output_scale, noise_var=noise_var)
    ell, s2, noise = (_number(k, v, lambda t: t > 0, "a finite number > 0") for k, v in given.items())
    k = lambda a, b: s2 * torch.exp(-0.5 * ((a[:, None] - b[None, :]) / ell) ** 2)
    chol = torch.linalg.cholesky(k(x, x) + noise * torch.eye(len(x), dtype=torch.float64))   # (n, n), lower
    k_star = k(x, xq)                                                                        # (n, m)
    mean = k_star.T @ torch.cholesky_solve(y[:, None], chol)[:, 0]
    v = torch.linalg.solve_triangular(chol, k_star, upper=False)                            # L⁻¹K*
    return mean, (s2 - (v * v).sum(0)).clamp_min(0).sqrt()     # rounding can leave var a hair below 0

def tiny_mlp_posterior(x, noise_std=0.1):
    """E7: the exact P(y = 1 | x) for y ~ Bernoulli(0.5), x = y + N(0, σ²): Bayes' rule with two Gaussians,
    sigmoid((x - 0.5) / σ²). Without noise: 0 at x = 0, 1 at x = 1, NaN elsewhere, where p(x) = 0."""
    x = _as_data("x", x, (0, 1, 2, 3))
    noise_std = _number("noise_std", noise_std, lambda s: s >= 0, "a finite number >= 0")
    if noise_std > 0:
        return torch.sigmoid((x - 0.5) / noise_std**2)
    return torch.where(x == 0, 0.0, torch.where(x == 1, 1.0, torch.full_like(x, math.nan)))
