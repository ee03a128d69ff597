"""Tests: everything is checked against a trusted reference — brute force, the paper's numbers, or the
exact posterior itself."""
import math

import numpy as np
import pytest
import torch

from posterior_icl import (PRIORS, BarPredictive, BernoulliPredictive, Family, Muon, Prior, brute_force,
                           bucket_borders, gap_plan, get_prior, load_model, make_model, posterior_gap,
                           save_model)

torch.set_num_threads(2)


def box(n=20, h=0.2):
    x = torch.linspace(-1, 1, n, dtype=torch.float64)
    return x, h * ((x > -0.5).double() - (x > 0.5).double())


# ------------------------------------------------------------------------------------------------
# The exact posterior: the paper's reference values (SPEC §3) and brute force
# ------------------------------------------------------------------------------------------------

def test_sines_lines_reference_values():
    x = torch.linspace(-1, 1, 10, dtype=torch.float64)
    post = PRIORS["sines_lines"].posterior(x, 0.2 * torch.sin(3 * math.pi * x) + 0.23 * x)
    assert post.family_mass["sine"].item() == pytest.approx(0.725, abs=5e-4)
    assert post.family_mass["sine"] + post.family_mass["line"] == pytest.approx(1.0, abs=1e-12)
    # the paper's p(D) includes the U(-1, 1) density of the 10 x values: (1/2)^10
    assert math.exp(post.log_evidence.item() + 10 * math.log(0.5)) == pytest.approx(6.35e-4, rel=1e-3)


def test_steps_updown_box_reference_means():
    x, y = box()
    pred = PRIORS["steps_updown"].predict(x, y, torch.tensor([-0.9, 0.0, 0.9]))
    assert pred.mean.tolist() == pytest.approx([0.070, 0.125, 0.070], abs=5e-4)


@pytest.mark.parametrize("x_off, y_off, amp, n_levels, best_ramp",
                         [(-0.2, 0.0, 0.5, 11, 0.012), (0.8, -0.5, 1.0, 12, 0.024)])
def test_steps_mean_is_a_staircase_at_a_jump(x_off, y_off, amp, n_levels, best_ramp):
    """E3's step prompts: between the two context points around the jump every x_off of the prior's grid
    (spacing 0.02) fits equally well, so the exact mean climbs one equal rise per grid position, amp/11
    each: a staircase. On the plotted grid the best straight ramp is within best_ramp of it."""
    x = torch.linspace(-1, 1, 10, dtype=torch.float64)
    grid = torch.linspace(-1, 1, 201, dtype=torch.float64)
    mean = PRIORS["steps"].predict(x, y_off + amp * (x > x_off).double(), grid).mean
    i = int((x <= x_off).sum()) - 1                          # x[i] < jump < x[i + 1]
    levels = torch.unique(mean[(grid > x[i]) & (grid <= x[i + 1])].round(decimals=4))
    assert len(levels) == n_levels
    assert levels.diff().tolist() == pytest.approx([amp / 11] * (n_levels - 1), abs=2e-3)
    # every straight ramp from the left level to the right one, starting and ending on a 0.001 grid near
    # x[i] and x[i + 1]
    start = torch.linspace(x[i] - 0.03, x[i] + 0.05, 81, dtype=torch.float64)[:, None, None]
    end = torch.linspace(x[i + 1] - 0.05, x[i + 1] + 0.03, 81, dtype=torch.float64)[None, :, None]
    ramps = mean[0] + (mean[-1] - mean[0]) * ((grid - start) / (end - start)).clamp(0, 1)
    assert (ramps - mean).abs().amax(-1).min().item() == pytest.approx(best_ramp, abs=1e-3)


def test_coins_reference_series():
    coins = PRIORS["coins"]
    got = [coins.predict(torch.zeros(c), torch.ones(c), torch.zeros(1)).mean.item()
           for c in (1, 2, 4, 8, 16, 32, 64)]
    assert got == pytest.approx([0.663, 0.746, 0.829, 0.896, 0.940, 0.966, 0.980], abs=5e-4)


TINY = Prior("tiny", [
    Family("bump", lambda p, x: p["h"] * torch.exp(-((x - p["c"]) / p["w"]) ** 2),
           {"h": [-0.5, 0.3, 1.0], "c": [-0.5, 0.0, 0.5, 0.7], "w": [0.2, 0.6]}, linear=("h",)),
    Family("line", lambda p, x: p["a"] * x + p["b"], {"a": [-1.0, 0.5], "b": [0.0, 0.2, 0.4]},
           linear=("a", "b")),
    Family("wave", lambda p, x: 0.3 * torch.sin(p["k"] * x), {"k": [1.0, 2.0, 4.0]}),
])


def close(a, b, atol):
    torch.testing.assert_close(torch.as_tensor(a).double(), torch.as_tensor(b).double(), atol=atol, rtol=0)


@pytest.mark.parametrize("n_ctx", [0, 1, 6])
def test_exact_posterior_matches_brute_force(n_ctx):
    g = torch.Generator().manual_seed(n_ctx)
    x, y = TINY.sample(1, n_ctx + 5, generator=g)
    x, y = x[0].double(), y[0].double()
    xc, yc, xq, yq = x[:n_ctx], y[:n_ctx], x[n_ctx:], y[n_ctx:]
    log_w, log_ev, mean, log_dens, cdf = brute_force(TINY, xc, yc, xq, yq)
    post = TINY.posterior(xc, yc)
    # grid order = meshgrid 'ij'
    ours = torch.cat([post.log_weights[f.name].flatten() for f in TINY.families])
    close(ours, log_w, 1e-9)
    assert post.log_evidence.item() == pytest.approx(log_ev.item(), abs=1e-9)
    pred = TINY.predict(xc, yc, xq)
    close(pred.mean, mean, 1e-10)
    close(pred.log_prob(yq), log_dens, 1e-9)
    close(pred.cdf(yq), cdf, 1e-10)


def test_brute_force_is_bayes_rule_by_hand():
    """The reference itself, against Bayes' rule written out for a two-latent prior."""
    two = Prior("two", [Family("c", lambda p, x: p["c"] + 0 * x, {"c": [0.0, 0.3]})])
    x, y = torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.2], dtype=torch.float64)
    log_w, log_ev, mean, _, cdf = brute_force(two, x, y, torch.zeros(1),
                                              torch.tensor([0.1], dtype=torch.float64))
    lik = (torch.exp(-0.5 * ((0.2 - torch.tensor([0.0, 0.3], dtype=torch.float64)) / 0.1) ** 2)
           / (0.1 * math.sqrt(2 * math.pi)))
    w = lik / lik.sum()
    close(log_w.exp(), w, 1e-12)
    assert log_ev.item() == pytest.approx(math.log(lik.mean().item()), abs=1e-12)
    assert mean.item() == pytest.approx(0.3 * w[1].item(), abs=1e-12)
    assert cdf.item() == pytest.approx(w[0] * 0.5 * (1 + math.erf(1 / math.sqrt(2)))
                                       + w[1] * 0.5 * (1 + math.erf(-2 / math.sqrt(2))), abs=1e-12)


def test_family_names_in_a_prior_must_differ():
    """The posterior keys its families by name: two of one name would overwrite each other's mass."""
    with pytest.raises(ValueError, match="family names must differ"):
        Prior("twice", [TINY.families[1], TINY.families[1]])


STEPPY = Prior("steppy", [Family("step", lambda p, x: p["y_off"] + p["amp"] * (x > p["x_off"]),
                                  {"x_off": torch.linspace(-1, 1, 17), "y_off": [-0.2, 0.0, 0.3],
                                   "amp": [-0.5, 0.4, 1.0]}, linear=("y_off", "amp"))])


@pytest.mark.parametrize("n_ctx", [1, 4])
def test_merging_latents_alike_at_the_queries_matches_brute_force(n_ctx):
    """At 3 queries the 17 step positions fall into at most 4 groups: merged, the PPD must not change."""
    x, y = STEPPY.sample(1, n_ctx + 3, generator=torch.Generator().manual_seed(7))
    x, y = x[0].double(), y[0].double()
    xc, yc, xq, yq = x[:n_ctx], y[:n_ctx], x[n_ctx:], y[n_ctx:]
    _, _, mean, log_dens, cdf = brute_force(STEPPY, xc, yc, xq, yq)
    merged, plain = STEPPY.predict(xc, yc, xq), STEPPY.predict(xc, yc, xq, merge=False)
    # merged
    assert sum(len(p[1]) for p in merged.parts[0]) <= 4 * 9 < sum(len(p[1]) for p in plain.parts[0])
    for pred in (merged, plain):
        close(pred.mean, mean, 1e-10)
        close(pred.log_prob(yq), log_dens, 1e-9)
        close(pred.cdf(yq), cdf, 1e-10)
    torch.testing.assert_close(merged.quantile(torch.tensor([0.1, 0.9])[:, None]),
                               plain.quantile(torch.tensor([0.1, 0.9])[:, None]), atol=1e-9, rtol=0)


def test_empty_contexts_in_a_batch_are_merged_each_at_its_own_queries():
    """No context: the prior, at each dataset's own queries (merged per dataset, since they differ)."""
    x, _ = STEPPY.sample(3, 3, generator=torch.Generator().manual_seed(8))
    x, empty = x.double(), torch.zeros(3, 0, dtype=torch.float64)
    ys = torch.tensor([-0.4, 0.1, 0.9], dtype=torch.float64)
    merged, plain = STEPPY.predict(empty, empty, x), STEPPY.predict(empty, empty, x, merge=False)
    assert all(sum(len(p[1]) for p in parts) <= 4 * 9 for parts in merged.parts)      # each dataset merged
    for b in range(3):
        _, _, mean, log_dens, cdf = brute_force(STEPPY, torch.zeros(0), torch.zeros(0), x[b], ys)
        for pred in (merged, plain):
            close(pred.mean[b], mean, 1e-10)
            close(pred.log_prob(ys)[b], log_dens, 1e-9)
            close(pred.cdf(ys)[b], cdf, 1e-10)


def test_linear_shortcut_equals_plain_enumeration():
    """Declaring parameters linear is only a speed-up: the posterior must not change."""
    plain = Prior("plain", [Family(f.name, f.f, f.grid) for f in TINY.families])
    x, y = TINY.sample(3, 8, generator=torch.Generator().manual_seed(1))
    a, b = TINY.posterior(x, y), plain.posterior(x, y)
    for f in TINY.families:
        torch.testing.assert_close(a.log_weights[f.name], b.log_weights[f.name], atol=1e-9, rtol=0)


def test_family_refuses_a_false_linear_claim():
    with pytest.raises(ValueError, match="not affine"):
        Family("bad", lambda p, x: p["a"] ** 2 * x, {"a": [0.0, 1.0]}, linear=("a",))


@pytest.mark.parametrize("chunk", [None, 2])
def test_batched_posterior_equals_one_by_one(chunk, monkeypatch):
    """Also across memory chunks: with CHUNK = 2 latent sets, 5 datasets take three chunks of predict."""
    prior = PRIORS["sines_lines"] if chunk is None else TINY
    if chunk:
        monkeypatch.setattr(TINY, "CHUNK", chunk * TINY.n_latents)
    x, y = prior.sample(5, 7, generator=torch.Generator().manual_seed(2))
    batch = prior.predict(x[:, :4], y[:, :4], x[:, 4:])
    for i in range(5):
        one = prior.predict(x[i, :4], y[i, :4], x[i, 4:])
        torch.testing.assert_close(batch.mean[i], one.mean)
        torch.testing.assert_close(batch.log_prob(y[:, 4:].double())[i], one.log_prob(y[i, 4:].double()))
        torch.testing.assert_close(batch.cdf(y[:, 4:].double())[i], one.cdf(y[i, 4:].double()))


def test_pruning_drops_latents_and_errs_by_at_most_their_mass():
    """prune=2 keeps only latents within e^2 of the best: the mean (from unpruned moments) stays exact, the
    density and cdf lose at most what was dropped, as brute force over every latent says."""
    x, y = STEPPY.sample(1, 7, generator=torch.Generator().manual_seed(3))
    xc, yc, xq, yq = x[0, :3].double(), y[0, :3].double(), x[0, 3:].double(), y[0, 3:].double()
    pred = STEPPY.predict(xc, yc, xq, prune=2.0, merge=False)
    kept = sum(len(p[1]) for p in pred.parts[0])
    dropped = 1 - sum(p[2].exp().sum().item() for p in pred.parts[0])
    assert kept < STEPPY.n_latents and 1e-6 < dropped < 1                 # it pruned, and something mattered
    _, _, mean, log_dens, cdf = brute_force(STEPPY, xc, yc, xq, yq)
    close(pred.mean, mean, 1e-10)
    lost = log_dens.exp() - pred.log_prob(yq).exp()
    assert (lost >= -1e-12).all() and (lost <= dropped / (0.1 * math.sqrt(2 * math.pi)) + 1e-12).all()
    assert ((cdf - pred.cdf(yq)) >= -1e-12).all() and ((cdf - pred.cdf(yq)) <= dropped + 1e-12).all()


# ------------------------------------------------------------------------------------------------
# Sampler and posterior share one grid
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sines_lines", "steps"])
def test_posterior_concentrates_on_the_latent_that_made_the_data(name):
    prior = PRIORS[name]
    fam = prior.families[-1]
    true = {k: v[len(v) // 3] for k, v in fam.grid.items()}
    g = torch.Generator().manual_seed(0)
    x = torch.rand(80, generator=g, dtype=torch.float64) * 2 - 1
    y = fam(true, x) + prior.noise_std * torch.randn(80, generator=g, dtype=torch.float64)
    masses = []
    for n in (5, 20, 80):
        lw = prior.posterior(x[:n], y[:n]).log_weights[fam.name]
        masses.append(lw[tuple(len(v) // 3 for v in fam.grid.values())].exp().item())
    assert masses[0] < masses[1] < masses[2]
    # 1000× more than its prior weight, among 10⁴–10⁶
    assert masses[2] * prior.n_latents > 1000


@pytest.mark.parametrize("name, n", [("sines_lines", 3000), ("sines_phase", 3000), ("steps", 300)])
def test_samples_follow_the_exact_prior_predictive(name, n):
    """Probability integral transform: if the sampler draws from the grid the posterior enumerates,
    the exact prior-predictive cdf of each sampled y (at its own x) is uniform on (0, 1)."""
    prior = PRIORS[name]
    x, y = prior.sample(n, 1, generator=torch.Generator().manual_seed(6))
    exact = prior.predict(torch.zeros(0), torch.zeros(0), x[:, 0])   # empty context: n queries, one posterior
    u = exact.cdf(y[:, 0].double()).sort().values
    ks = (u - torch.linspace(0, 1, n, dtype=torch.float64)).abs().max().item()
    assert ks < 1.63 / math.sqrt(n)                      # the 1% Kolmogorov–Smirnov critical value
    assert y.double().mean().item() == pytest.approx(exact.mean.mean().item(),
                                                     abs=4 * y.std().item() / math.sqrt(n))


def test_prior_sample_shapes_and_determinism():
    for name, prior in PRIORS.items():
        x, y = prior.sample(5, 7, generator=torch.Generator().manual_seed(0))
        assert x.shape == y.shape == (5, 7) and x.dtype == y.dtype == torch.float32
        x2, y2 = prior.sample(5, 7, generator=torch.Generator().manual_seed(0))
        assert torch.equal(y, y2), name
    assert set(PRIORS["coins"].sample(50, 4)[1].unique().tolist()) <= {0.0, 1.0}


def test_empty_context_gives_the_prior_predictive():
    prior = PRIORS["sines_lines"]
    pred = prior.predict(torch.zeros(0), torch.zeros(0), torch.tensor([0.1, 0.5], dtype=torch.float64))
    # sines: offset mean 0.5 plus the sine; lines: mean 0 at every x -> half of (0.5 + 0.2 sin(3πx))
    sine = 0.2 * torch.sin(3 * math.pi * torch.tensor([0.1, 0.5], dtype=torch.float64))
    close(pred.mean, 0.5 * (0.5 + sine), 1e-12)


# ------------------------------------------------------------------------------------------------
# Bar distribution: one density behind every method
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bar():
    borders = bucket_borders(PRIORS["sines_lines"], n_buckets=50, n_datasets=2000)
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    return BarPredictive(borders.double(), logits)


def test_borders_are_strictly_increasing_quantiles():
    b = bucket_borders(PRIORS["sines_lines"], n_buckets=1000)
    assert len(b) == 1001 and (b.diff() > 0).all()
    coarse = bucket_borders(PRIORS["coins"], n_buckets=10)    # y only 0 or 1: duplicates merged
    assert (coarse.diff() > 0).all() and len(coarse) == 2


def test_bar_density_integrates_to_one_and_cdf_and_mean_are_its_integrals(bar):
    y = torch.linspace(-10, 10, 4_000_001, dtype=torch.float64)[:, None]          # (V, 1) against (3,)
    dy = (y[1] - y[0]).item()
    dens = bar.log_prob(y).exp()                                                     # (V, 3)
    # tails included
    assert torch.trapezoid(dens, dx=dy, dim=0).tolist() == pytest.approx([1, 1, 1], abs=5e-5)
    assert torch.trapezoid(dens * y, dx=dy, dim=0).tolist() == pytest.approx(bar.mean.tolist(), abs=1e-4)
    c = bar.cdf(y)
    assert (c.diff(dim=0) >= -1e-12).all() and c[0].max() < 1e-6 and c[-1].min() > 1 - 1e-6
    integral = torch.cumulative_trapezoid(dens, dx=dy, dim=0) + c[0]
    assert (integral - c[1:]).abs().max() < 1e-4


def test_bar_quantile_inverts_the_cdf(bar):
    q = torch.tensor([1e-4, 0.01, 0.3, 0.5, 0.77, 0.99, 1 - 1e-4], dtype=torch.float64)[:, None]
    assert (bar.cdf(bar.quantile(q)) - q).abs().max() < 1e-9


def test_far_values_stay_finite(bar):
    far = bar.log_prob(torch.tensor([[-1e3], [1e3]], dtype=torch.float64))
    assert torch.isfinite(far).all()


def test_float32_bar_tails_invert_and_stay_finite():
    """As the network uses it: float32 quantiles far in the tails are finite and ordered, and
    quantile(cdf(y)) == y in both tails and the bulk."""
    borders = bucket_borders(PRIORS["sines_lines"], n_buckets=50, n_datasets=2000)
    bar32 = BarPredictive(borders, torch.randn(50, generator=torch.Generator().manual_seed(0)))
    q = bar32.quantile(torch.tensor([1e-30, 1e-12, 1e-3, 0.5, 1 - 1e-3, 1 - 1e-7]))
    assert torch.isfinite(q).all() and (q.diff() > 0).all()
    y = torch.tensor([borders[0] - 0.5, borders[0] - 0.05, borders[20], borders[-1] + 0.05])
    torch.testing.assert_close(bar32.quantile(bar32.cdf(y)), y, atol=2e-4, rtol=0)


def test_bucket_probs_of_the_exact_posterior_match_brute_force():
    x = torch.linspace(-1, 1, 10, dtype=torch.float64)
    y, xq = 0.2 * torch.sin(3 * math.pi * x), torch.tensor([0.0, 0.5], dtype=torch.float64)
    borders = bucket_borders(PRIORS["sines_lines"], n_buckets=100, n_datasets=1000).double()
    probs = PRIORS["sines_lines"].predict(x, y, xq).bucket_probs(borders)
    assert probs.shape == (2, 100)
    for j in range(2):              # each bucket's mass from the brute-force cdf at its two borders
        cdf = brute_force(PRIORS["sines_lines"], x, y, xq[j].expand(99), borders[1:-1])[4]
        close(probs[j], torch.cat([cdf[:1], cdf.diff(), 1 - cdf[-1:]]), 1e-10)


def test_exact_quantile_inverts_exact_cdf():
    x, y = box()
    exact = PRIORS["steps"].predict(x[:8], y[:8], torch.tensor([-0.6, 0.1]))
    q = torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)[:, None]             # (3, 1) against 2 queries
    assert (exact.cdf(exact.quantile(q)) - q).abs().max() < 1e-9


# ------------------------------------------------------------------------------------------------
# The transformer: a set model whose queries are independent
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = make_model("sines_lines", n_buckets=100, d_model=64, n_layers=2)
    for p in m.parameters():             # zero-initialised layers would hide attention: randomise all
        torch.nn.init.normal_(p, std=0.2)
    return m.eval()


def test_shuffling_the_context_changes_no_prediction(model):
    x, y = PRIORS["sines_lines"].sample(2, 12, generator=torch.Generator().manual_seed(0))
    perm = torch.randperm(8)
    a = model(x[:, :8], y[:, :8], x[:, 8:])
    b = model(x[:, :8][:, perm], y[:, :8][:, perm], x[:, 8:])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # the context matters
    assert not torch.allclose(a, model(x[:, :8], y[:, :8].flip(1), x[:, 8:]), atol=1e-3)


def test_queries_do_not_see_each_other(model):
    x, y = PRIORS["sines_lines"].sample(2, 12, generator=torch.Generator().manual_seed(1))
    xc, yc, xq = x[:, :6], y[:, :6], x[:, 6:]
    full = model(xc, yc, xq)
    # removing
    torch.testing.assert_close(model(xc, yc, xq[:, [2]]), full[:, [2]], atol=1e-5, rtol=1e-5)
    # reordering
    torch.testing.assert_close(model(xc, yc, xq.flip(1)), full.flip(1), atol=1e-5, rtol=1e-5)
    more = torch.cat([xq, torch.rand(2, 9) * 2 - 1], 1)                                               # adding
    torch.testing.assert_close(model(xc, yc, more)[:, :6], full, atol=1e-5, rtol=1e-5)


def test_empty_context_is_finite(model):
    pred = model.predict(torch.zeros(0), torch.zeros(0), torch.linspace(-1, 1, 5))
    assert torch.isfinite(pred.mean).all() and torch.isfinite(pred.log_prob(torch.zeros(5))).all()


def test_model_and_exact_share_one_interface(model):
    x, y = PRIORS["sines_lines"].sample(3, 9, generator=torch.Generator().manual_seed(2))
    for pred in (model.predict(x[:, :4], y[:, :4], x[:, 4:]),
                 PRIORS["sines_lines"].predict(x[:, :4], y[:, :4], x[:, 4:])):
        assert pred.mean.shape == (3, 5)
        assert pred.log_prob(y[:, 4:]).shape == pred.cdf(y[:, 4:]).shape == (3, 5)
        assert pred.quantile(
            torch.tensor([0.1, 0.9], dtype=pred.mean.dtype)[:, None, None]).shape == (2, 3, 5)
        assert pred.bucket_probs(torch.linspace(-2, 2, 11)).shape == (3, 5, 10)


def test_checkpoint_round_trip_is_identical(model, tmp_path):
    path = tmp_path / "m.pt"
    save_model(model, path)
    ckpt = torch.load(path, weights_only=True)         # plain things only: no code is unpickled
    assert ckpt["prior"] == "sines_lines" and ckpt["config"]["d_model"] == 64
    loaded = load_model(path)
    x, y = PRIORS["sines_lines"].sample(2, 10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(loaded(x[:, :5], y[:, :5], x[:, 5:]), model(x[:, :5], y[:, :5], x[:, 5:]))
    with pytest.raises(ValueError, match="prior 'sines_lines', not 'steps'"):
        load_model(path, prior="steps")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]     # no temporary file left behind


def test_phase_features_reach_the_network_and_survive_a_checkpoint(tmp_path):
    """x_freq = w: the x embedding sees [x, sin(wπx), cos(wπx)]; the setting is part of the checkpoint."""
    torch.manual_seed(0)
    m = make_model("sines_phase", n_buckets=50, d_model=32, n_layers=1, x_freq=3).eval()
    x = torch.tensor([[-1.0, 0.0, 1 / 6]])
    torch.testing.assert_close(m.x_features(x)[0],
                               torch.tensor([[-1.0, 0.0, -1.0], [0.0, 0.0, 1.0], [1 / 6, 1.0, 0.0]]),
                               atol=1e-6, rtol=0)
    assert make_model("sines_phase", n_buckets=50, d_model=32, n_layers=1).x_features(x).shape == (1, 3, 1)
    save_model(m, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.config["x_freq"] == 3.0
    xs, ys = PRIORS["sines_phase"].sample(2, 10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(loaded(xs[:, :5], ys[:, :5], xs[:, 5:]), m(xs[:, :5], ys[:, :5], xs[:, 5:]))


def test_a_truncated_or_foreign_file_is_not_a_checkpoint(tmp_path, model):
    save_model(model, tmp_path / "m.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "m.pt").read_bytes()[:1000])
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    (tmp_path / "text.pt").write_text("hello")
    for name, message in [("cut.pt", "not a readable"), ("foreign.pt", "not a posterior-icl/2 checkpoint"),
                          ("text.pt", "not a readable"), ("missing.pt", "not a readable")]:
        with pytest.raises(ValueError, match=message) as e:
            load_model(tmp_path / name)
        assert "\n" not in str(e.value)


def test_figures_retrain_another_configs_network_and_resume_an_unfinished_one(tmp_path, monkeypatch, capsys):
    """figures.trained never draws a network of another config, nor an unfinished one: retrains, resumes."""
    monkeypatch.chdir(tmp_path)
    overrides = {k: v for k, v in TINY_RUN.items() if k != "prior"}
    model = figures.trained("sines_lines", **overrides)           # missing: trained, named from the overrides
    path = model.run["path"]
    assert path == train.resolve_config(["--preset", "sines_lines"], out="", **overrides)["out"]
    assert os.path.basename(path).startswith("sines_lines-") and model.run["steps"] == 16
    assert model.run["gap"]["n_datasets"] == 16 and model.run["gap"]["seed"] == 12345
    assert model.run["final_loss"] == pytest.approx(figures.final_loss(model.run["history"], 16))
    train.train(**{**TINY_RUN, "x_freq": 0.0, "out": path})                 # another config in its place
    capsys.readouterr()
    model = figures.trained("sines_lines", **overrides)
    out = capsys.readouterr().out
    assert out.count("\n") >= 1 and "x_freq" in out.splitlines()[0] and "retraining" in out.splitlines()[0]
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["train_config"]["x_freq"] == 3.0 == model.config["x_freq"] and ckpt["step"] == 16
    del ckpt["summary"]                                                      # unfinished: stopped at step 10
    torch.save({**ckpt, "step": 10, "history": [h for h in ckpt["history"] if h[0] <= 10]}, path)
    model = figures.trained("sines_lines", **overrides)
    assert "resuming" in capsys.readouterr().out
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 16 == model.run["steps"] and "gap" in ckpt["summary"]
    del ckpt["summary"]                                # stopped in the final evaluation: every step, no gap
    torch.save(ckpt, path)
    model = figures.trained("sines_lines", **overrides)                      # evaluated anew, not trained
    assert "resuming" in capsys.readouterr().out and model.run["gap"]["se"] > 0
    torch.save({**torch.load(path, weights_only=True), "format": "posterior-icl/1"}, path)  # an old one
    model = figures.trained("sines_lines", **overrides)                      # trained anew, never loaded
    assert "training sines_lines" in capsys.readouterr().out
    assert torch.load(path, weights_only=True)["format"] == "posterior-icl/2"


def test_averaging_attention_cannot_count_but_the_count_feature_can():
    """E5's claim, checked on random weights: k identical tokens give one output whatever k is."""
    torch.manual_seed(0)
    for count_feature, expect_constant in [(False, True), (True, False)]:
        m = make_model("coins", d_model=32, n_layers=2, count_feature=count_feature)
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.3)
        p1 = torch.stack([m.predict(torch.zeros(c), torch.ones(c), torch.zeros(1)).mean
                          for c in (1, 2, 8, 64)])
        assert torch.allclose(p1, p1[0], atol=1e-5) == expect_constant, count_feature


def test_coin_network_gives_a_bernoulli():
    torch.manual_seed(0)
    m = make_model("coins", d_model=32, n_layers=1)
    pred = m.predict(torch.zeros(3), torch.ones(3), torch.zeros(2))
    assert isinstance(pred, BernoulliPredictive) and pred.mean.shape == (2,)
    assert torch.isfinite(pred.log_prob(torch.tensor([0.0, 1.0]))).all()


def test_posterior_gap_of_a_fresh_network_is_large_with_a_standard_error(model):
    r = posterior_gap(model, PRIORS["sines_lines"], n_datasets=40, n_points=8)
    assert r["gap"] > 0.5 and 0 < r["se"] < r["gap"] / 5      # an untrained network is far from the posterior
    assert (r["all_sizes"] and list(r["per_context"]) == [str(k) for k in range(8)]
            and list(r["bins"]) == ["0", "1", "2–3", "4–7"])
    assert all(se > 0 for _, se in r["per_context"].values())
    assert 0 <= r["head"] < 0.1                         # 100 buckets cost little


# A "network" whose expected KL to the exact posterior is known in closed form: the one-latent
# prior y ~ N(0, σ²) has that as its exact PPD whatever the context; the network says N(δ, σ²),
# KL = δ² / (2σ²) per query.
ZERO = Prior("zero", [Family("c", lambda p, x: p["c"] + 0 * x, {"c": [0.0]})])
SHIFTED = Prior("zero", [Family("c", lambda p, x: p["c"] + 0 * x, {"c": [0.05]})])


class Shifted:
    prior = "zero"

    def predict(self, xc, yc, xq):
        return SHIFTED.predict(xc, yc, xq)


@pytest.mark.parametrize("all_sizes", [True, False])
def test_posterior_gap_estimates_a_known_kl_within_its_standard_error(all_sizes):
    r = posterior_gap(Shifted(), ZERO, n_datasets=200, n_points=5, seed=3, all_sizes=all_sizes)
    kl = 0.05**2 / (2 * 0.1**2)                                          # 0.125 nats per query
    assert abs(r["gap"] - kl) < 4 * r["se"] and r["se"] < 0.03
    assert all(abs(m - kl) < 5 * se for m, se in r["per_context"].values())
    assert r["head"] == 0.0


def test_posterior_gap_of_the_exact_ppd_on_the_buckets_is_the_heads_cost():
    """A network that outputs the exact PPD's mass in each bucket costs exactly what the head alone costs."""
    borders = bucket_borders(TINY, n_buckets=30, n_datasets=500)

    class OnBuckets:
        prior = "tiny"

        def predict(self, xc, yc, xq):
            mass = TINY.predict(xc, yc, xq).bucket_probs(borders).clamp_min(1e-300)
            return BarPredictive(borders, mass.log().float())
    r = posterior_gap(OnBuckets(), TINY, n_datasets=12, n_points=6, all_sizes=False)
    assert r["gap"] > 0.01 and r["head"] == pytest.approx(r["gap"], rel=1e-4) and r["head_se"] > 0


def test_posterior_gap_bins_cover_every_context_size():
    """Each context size falls in exactly one bin, the last open-ended: nothing a long run
    measures is dropped."""
    r = posterior_gap(Shifted(), ZERO, n_datasets=3, n_points=70)
    assert list(r["bins"]) == ["0", "1", "2–3", "4–7", "8–15", "16–31", "32–63", "≥ 64"]
    per_size = torch.tensor([r["per_context"][str(k)][0] for k in range(64, 70)], dtype=torch.float64)
    assert r["bins"]["≥ 64"][0] == pytest.approx(per_size.mean().item(), abs=1e-12)    # sizes 64 … 69


def test_every_context_size_at_once_is_the_exact_predictive():
    """posterior_gap's shortcut (one matrix product per dataset for all context sizes) against predict."""
    from posterior_icl import _log_prob_at_every_size
    for prior in (TINY, PRIORS["sines_lines"]):
        x, y = prior.sample(3, 6, generator=torch.Generator().manual_seed(4))
        every = _log_prob_at_every_size(prior, x, y)                       # [b, k, q]
        for k in (0, 2, 5):
            close(every[:, k, k:],
                  prior.predict(x[:, :k], y[:, :k], x[:, k:]).log_prob(y[:, k:].double()), 1e-9)


def test_posterior_gap_refuses_what_it_cannot_measure(model):
    with pytest.raises(ValueError, match="n_datasets >= 200"):           # 100 sizes, two datasets each
        posterior_gap(model, PRIORS["sines_lines"], n_datasets=64, n_points=100, all_sizes=False)
    with pytest.raises(ValueError, match="n_datasets >= 40"):
        gap_plan(PRIORS["steps"], 39, 20)                                # 10⁶ latents: one size per dataset
    with pytest.raises(ValueError, match="trained on prior 'sines_lines', not 'steps'"):
        posterior_gap(model, PRIORS["steps"], n_datasets=40)


# ------------------------------------------------------------------------------------------------
# Bad input: a clear ValueError that says what was wrong
# ------------------------------------------------------------------------------------------------

def test_unknown_prior_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown prior 'sine'.*"
                                         "sines_lines, sines_phase, steps, steps_updown, coins"):
        get_prior("sine")
    with pytest.raises(ValueError, match="unknown prior"):
        make_model("nope")


@pytest.mark.parametrize("args, message", [
    ((torch.zeros(3), torch.zeros(4), torch.zeros(2)), "same shape"),
    ((torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 2)), "batch layout"),
    ((torch.zeros(3), torch.zeros(3), torch.zeros(1, 2)), "batch layout"),
    ((torch.zeros(1, 1, 3), torch.zeros(1, 1, 3), torch.zeros(1, 1, 2)), "shape"),
    ((torch.tensor([0.0, float("nan")]), torch.zeros(2), torch.zeros(2)), "NaN or inf"),
    ((torch.zeros(2), torch.tensor([0.0, float("inf")]), torch.zeros(2)), "NaN or inf"),
    ((torch.zeros(2), torch.zeros(2), torch.tensor([float("-inf")])), "NaN or inf"),
])
def test_bad_input_is_a_clear_error(args, message, model):
    for predictor in (PRIORS["sines_lines"], model):
        with pytest.raises(ValueError, match=message):
            predictor.predict(*args)


@pytest.mark.parametrize("x, y, message", [
    (torch.zeros(3), torch.zeros(4), "same shape"),
    (torch.zeros(2, 3, 1), torch.zeros(2, 3, 1), r"shape \(N,\) for one dataset or \(B, N\)"),
    (torch.tensor([0.0, float("nan")]), torch.zeros(2), "x contains NaN or inf"),
    (torch.zeros(2), torch.tensor([float("inf"), 0.0]), "y contains NaN or inf"),
    ([[0.0, "a"]], [[0.0, 1.0]], "tensor or array of numbers"),
])
def test_bad_posterior_input_is_a_clear_error(x, y, message):
    with pytest.raises(ValueError, match=message):
        PRIORS["steps"].posterior(x, y)
    with pytest.raises(ValueError, match="does not broadcast"):
        PRIORS["sines_lines"].predict(torch.zeros(2), torch.zeros(2), torch.zeros(3)).log_prob(torch.zeros(4))


def test_coin_labels_must_be_binary():
    with pytest.raises(ValueError, match="0 or 1"):
        PRIORS["coins"].predict(torch.zeros(2), torch.tensor([0.0, 0.5]), torch.zeros(1))
    with pytest.raises(ValueError, match=r"y in \{0, 1\}"):
        BernoulliPredictive(torch.tensor([0.5])).log_prob(torch.tensor([2.0]))


# ------------------------------------------------------------------------------------------------
# train.py: endless data, exact resumption, torchrun, clear errors
# ------------------------------------------------------------------------------------------------
import os
import signal
import subprocess
import sys

import train

TINY_RUN = dict(prior="sines_lines", steps=16, batch_size=4, n_points=8, short_points=4, mid_points=6,
                d_model=32, n_layers=1, n_buckets=50, eval_every=0, eval_datasets=8, final_eval_datasets=16,
                save_every=5, progress=False, threads=2, muon=False)


def test_training_lowers_the_gap_and_writes_a_loadable_checkpoint(tmp_path):
    out = str(tmp_path / "a.pt")
    model, summary = train.train(**{**TINY_RUN, "steps": 200, "batch_size": 16, "out": out, "lr": 1e-2,
                                    "final_eval_datasets": 64})
    untrained = make_model("sines_lines", n_buckets=50, d_model=32, n_layers=1)
    before = posterior_gap(untrained, PRIORS["sines_lines"], n_datasets=64, n_points=8, seed=12345)["gap"]
    assert summary["gap"]["gap"] < before / 2           # 200 tiny steps already close half of the gap
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["step"] == 200 and ckpt["train_config"]["lr"] == 1e-2 and ckpt["summary"]["gap"]["gap"] > 0
    assert torch.equal(load_model(out, prior="sines_lines").state_dict()["decoder.2.weight"],
                       model.state_dict()["decoder.2.weight"])


@pytest.mark.parametrize("how, error, saved", [("sigint", SystemExit, 9), ("crash", RuntimeError, 10),
                                               ("raised", KeyboardInterrupt, 5), ("muon", SystemExit, 9)])
def test_a_stopped_run_resumes_to_the_same_weights(how, error, saved, tmp_path, monkeypatch):
    """Ctrl-C in step 8 lets step 8 finish, then saves it; a crash in step 12, or a KeyboardInterrupt raised
    by code in step 8 (not Ctrl-C), leaves the last periodic checkpoint; Muon's state resumes too. Resumed,
    each ends with the weights of a run that never stopped."""
    run = {**TINY_RUN, "muon": how == "muon"}
    straight, _ = train.train(**{**run, "out": str(tmp_path / "straight.pt")})
    real = train.batch

    def stopping(cfg, prior, step, rank=0):
        if step == 8 and how in ("sigint", "muon"):
            os.kill(os.getpid(), signal.SIGINT)
        if step == 12 and how == "crash":
            raise RuntimeError("power cut")
        if step == 8 and how == "raised":
            raise KeyboardInterrupt
        return real(cfg, prior, step, rank)
    monkeypatch.setattr(train, "batch", stopping)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(error):
        train.train(**{**run, "out": str(tmp_path / "stopped.pt")})
    assert torch.load(tmp_path / "stopped.pt", weights_only=True)["step"] == saved
    assert signal.getsignal(signal.SIGINT) is handler              # Ctrl-C works as before once it returns
    monkeypatch.setattr(train, "batch", real)
    resumed, _ = train.train(**{**run, "out": str(tmp_path / "stopped.pt"), "resume": True})
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_more_processes_are_another_run(monkeypatch, tmp_path):
    """torchrun's processes each draw a batch: twice the data per step, so it is another run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = train.resolve_config([])
    assert cfg["out"] == os.path.join("checkpoints", "sines_lines-world_size2.pt")
    assert train.mismatch({**cfg, "world_size": 1}, cfg) == ["world_size"]


def test_resume_refuses_a_changed_schedule(tmp_path):
    out = str(tmp_path / "a.pt")
    train.train(**{**TINY_RUN, "steps": 4, "out": out})
    for key, value in [("steps", 8), ("batch_size", 5), ("lr", 1e-2), ("beta2", 0.9), ("mid_points", 7)]:
        with pytest.raises(SystemExit) as e:
            train.main([*(f"--{k}={v}" for k, v in {**TINY_RUN, "steps": 4, key: value}.items()),
                        "--out", out, "--resume"])
        assert f"was trained with {key}=" in str(e.value) and "\n" not in str(e.value)


def test_an_experiment_never_writes_over_the_presets_network(tmp_path, monkeypatch):
    """`train.py --steps 2` (any override) is its own checkpoint; a preset's file of another
    config is kept."""
    monkeypatch.chdir(tmp_path)
    cfg = train.resolve_config(["--steps", "2"])
    assert cfg["out"] == os.path.join("checkpoints", "sines_lines-steps2.pt")
    assert train.resolve_config(["--seed", "1", "--lr", "0.01", "--threads", "1"])["out"] == \
        os.path.join("checkpoints", "sines_lines-lr0.01-seed1.pt")          # runtime keys name nothing
    small = {k: v for k, v in TINY_RUN.items() if k != "prior"}
    # a network at the preset's path
    train.train(**small, out=os.path.join("checkpoints", "sines_lines.pt"))
    with pytest.raises(ValueError, match="checkpoints/sines_lines.pt was trained with .*pass --out"):
        # the preset itself would overwrite it
        train.resolve_config([])
    assert (train.resolve_config(["--out", "checkpoints/sines_lines.pt"])["out"]
            == "checkpoints/sines_lines.pt")


def test_same_seed_same_run(tmp_path):
    a, _ = train.train(**{**TINY_RUN, "steps": 6, "out": str(tmp_path / "a.pt")})
    b, _ = train.train(**{**TINY_RUN, "steps": 6, "out": str(tmp_path / "b.pt")})
    c, _ = train.train(**{**TINY_RUN, "steps": 6, "seed": 1, "out": str(tmp_path / "c.pt")})
    assert torch.equal(a.decoder[2].weight, b.decoder[2].weight)
    assert not torch.equal(a.decoder[2].weight, c.decoder[2].weight)


def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp.pt"
    args = [f"--{k}={v}" for k, v in {**TINY_RUN, "steps": 6, "threads": 1, "out": out}.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "train.py", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=HERE)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("posterior gap") == 1                      # rank 0 alone reports
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["step"] == 6 and ckpt["train_config"]["world_size"] == 2 and "data_rng" not in ckpt
    # each rank draws its own data, and a resumed rank draws what it would have drawn: no state to save
    cfg = train.resolve_config(**TINY_RUN)
    assert torch.equal(train.batch(cfg, PRIORS["sines_lines"], 3, 1)[1],
                       train.batch(cfg, PRIORS["sines_lines"], 3, 1)[1])
    assert not torch.equal(train.batch(cfg, PRIORS["sines_lines"], 3, 0)[1],
                           train.batch(cfg, PRIORS["sines_lines"], 3, 1)[1])


BAD_CALLS = [       # (what is tried, the words of its one-line answer); CLI lines go through train.main
    (["--prior", "sine"], "unknown prior 'sine'; known priors: sines_lines"),
    (["--preset", "huge"], "invalid choice: 'huge' (choose from"),
    (["--stepz", "3"], "unrecognized arguments: --stepz 3; known options: --preset, --prior, --steps"),
    (["--steps", "-5"], "steps must be an integer >= 1; got -5"),
    (["--batch_size", "0"], "batch_size must be an integer >= 1"),
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--steps", "1.5"], "argument --steps: invalid int value: '1.5'"),
    (["--d_model", "100"], "d_model (100) must be a multiple of head_size (32)"),
    (["--steps"], "argument --steps: expected one argument"),
    (["--x_freq", "-3"], "x_freq must be a finite number >= 0"),
    (["--x_freq", "inf"], "x_freq must be a finite number >= 0"),
    (["--lr", "0"], "lr must be a finite number > 0"),
    (["--warmup", "1"], "warmup must be a number in [0, 1)"),
    (["--beta2", "1"], "beta2 must be a number in [0, 1)"),
    (["--mid_fraction", "0.5"], "mid_fraction must be <= 1 - short_fraction (0.6); got 0.5"),
    (["--short_fraction", "2"], "short_fraction must be a number in [0, 1]"),
    (["--short_batch", "-1"], "short_batch must be an integer >= 0; got -1"),
    (["--seed", "-1"], "seed must be an integer in [0, 2^24)"),
    (["--pre_norm", "maybe"], "argument --pre_norm: invalid true_or_false value: 'maybe'"),
    (["--mid_points", "200"], "mid_points must be <= n_points (100) while mid_fraction > 0; got 200"),
    (["--n_points", "1"], "short_points must be <= n_points (1) while short_fraction > 0; got 20"),
    (["--device", "cuda"], "device must be auto, cpu or cuda[:N] where torch sees CUDA; got 'cuda'"),
    (["--device", "tpu"], "device must be auto, cpu or cuda[:N] where torch sees CUDA; got 'tpu'"),
    (["--prior", "steps", "--final_eval_datasets", "10"],
     "posterior_gap needs n_points >= 1 and final_eval_datasets >= 40 (two per context size, for a standard "
     "error); got final_eval_datasets 10"),
    (["--seed", str(2**24)], "seed must be an integer in [0, 2^24)"),
    (["--n_buckets", "1"], "n_buckets must be an integer >= 2"),
    (["--resume", "--out", "no/such/file.pt"],
     "'no/such/file.pt' is not a readable posterior-icl checkpoint"),
    (lambda: train.resolve_config(stepz=3), "unrecognized arguments: --stepz=3; known options: --preset"),
    (lambda: train.resolve_config(preset="huge"), "argument --preset: invalid choice: 'huge' (choose from"),
    (lambda: train.resolve_config(steps=1.5), "argument --steps: invalid int value: '1.5'"),
    (lambda: train.resolve_config(lr=math.nan), "lr must be a finite number > 0; got nan"),
    (lambda: get_prior("sine"), "unknown prior 'sine'; known priors: sines_lines, sines_phase, steps"),
    (lambda: make_model("nope"), "unknown prior 'nope'"),
    (lambda: make_model("sines_lines", d_model=100), "d_model (100) must be a multiple of head_size (32)"),
    (lambda: PRIORS["steps"].sample(0, 5), "batch_size and n_points must be >= 1"),
    (lambda: PRIORS["sines_lines"].predict([0.0], [0.0], [[0.5]]),
     "x_query must match the context's batch layout"),
    (lambda: PRIORS["sines_lines"].predict([0.0], [0.0], [0.5]).quantile(1.5), "strictly between 0 and 1"),
    (lambda: Family("f", lambda p, x: p["a"] * x, {"a": [1.0]}, linear=("b",)),
     "must name parameters of ['a']"),
]


@pytest.mark.parametrize("call, message", BAD_CALLS)
def test_bad_input_is_one_line_that_says_what_is_allowed(call, message, tmp_path, monkeypatch):
    assert len(BAD_CALLS) >= 20
    monkeypatch.chdir(tmp_path)                          # nothing read from, or written to, the checkout
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)      # as on a machine without CUDA
    with pytest.raises((SystemExit, ValueError)) as e:
        train.main(call) if isinstance(call, list) else call()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_resume_with_another_priors_checkpoint_is_refused(tmp_path):
    out = str(tmp_path / "coins.pt")
    train.train(**{**TINY_RUN, "prior": "coins", "steps": 2, "out": out})
    with pytest.raises(SystemExit) as e:
        train.main(["--prior", "sines_lines", "--out", out, "--resume", "--steps", "4"])
    assert "holds a network for prior 'coins', not 'sines_lines'" in str(e.value)


def test_the_curriculum_has_three_stages(tmp_path, monkeypatch):
    """sines_lines: 60% of the steps on 64 20-point datasets, 25% on 32 of 50, the rest on 32 of 100; the
    others one size."""
    monkeypatch.chdir(tmp_path)
    cfg, prior = train.resolve_config([]), PRIORS["sines_lines"]
    shapes = [tuple(train.batch(cfg, prior, s)[0].shape) for s in (0, 4199, 4200, 5949, 5950, 6999)]
    assert shapes == [(64, 20), (64, 20), (32, 50), (32, 50), (32, 100), (32, 100)]
    cfg = train.resolve_config(["--prior", "steps"])
    assert {train.batch(cfg, PRIORS["steps"], s)[0].shape[1] for s in (0, 3000, 5999)} == {20}


def test_resolved_config_reaches_the_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = train.resolve_config(["--prior", "steps", "--lr", "3e-4", "--pre_norm", "false", "--resume"])
    assert cfg["preset"] == "steps" and cfg["n_points"] == train.PRESETS["steps"]["n_points"]
    assert cfg["lr"] == 3e-4 and cfg["pre_norm"] is False and cfg["resume"] is True
    assert cfg["out"] == os.path.join("checkpoints", "steps-lr0.0003.pt")
    assert train.resolve_config(["--preset", "sines_lines_long"])["out"].endswith("sines_lines_long.pt")
    # the default network must take the 80-point E1a prompt; a keyword None means not given
    assert train.resolve_config()["n_points"] > 80
    assert train.resolve_config(preset=None, out=None)["out"] == os.path.join("checkpoints", "sines_lines.pt")
    # the decoder's hidden width: d_model by default, the paper's 4 d_model where a preset asks for it
    assert train.resolve_config(["--prior", "sines_phase"])["decoder_mult"] == 4
    wide = make_model("sines_lines", n_buckets=10, d_model=32, n_layers=1, decoder_mult=4)
    assert wide.decoder[0].out_features == 128 and wide.config["decoder_mult"] == 4


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = make_model("sines_lines", n_buckets=10, d_model=32, n_layers=2)
    adamw, muon = train.optimizers(model, {**train.CONFIG, "muon": True})
    matrices = {id(p) for n, p in model.named_parameters() if n.startswith("blocks") and p.dim() == 2}
    assert len(matrices) == 8 and {id(p) for g in muon.param_groups for p in g["params"]} == matrices
    assert sum(len(g["params"]) for g in adamw.param_groups) == len(list(model.parameters())) - 8
    assert len(train.optimizers(model, train.CONFIG)) == 1                   # by default AdamW alone


def test_muon_takes_torchs_steps():
    """posterior_icl.Muon moves each matrix as torch.optim.Muon does (ours orthogonalises in float32,
    torch's in bfloat16: they agree to bfloat16's precision) and skips a matrix without a gradient."""
    torch.manual_seed(0)
    ours = [torch.randn(shape) for shape in [(288, 96), (96, 96), (96, 384), (96, 384), (5, 7)]]
    ref = [w.clone() for w in ours]
    start = [w.clone() for w in ours]
    opts = [Muon(ours, lr=0.02, weight_decay=0.1),
            torch.optim.Muon(ref, lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")]
    for step in range(3):
        grads = [torch.randn_like(w) for w in ours]
        for w, r, g in zip(ours, ref, grads):
            w.grad, r.grad = (None, None) if step == 1 and w.shape == (5, 7) else (g, g.clone())
        for opt in opts:
            opt.step()
    for w, r, w0 in zip(ours, ref, start):
        moved, expected = w - w0, r - w0
        assert (moved - expected).norm() < 0.03 * expected.norm()         # bfloat16: 8 bits
        assert expected.norm() > 0.01                                            # a real step, not none
    lone = torch.zeros(3, 4, requires_grad=True)
    Muon([lone], lr=0.1).step()                                                   # no gradient: untouched
    assert (lone == 0).all()


def test_a_checkpoint_from_before_decoder_mult_and_muon_loads_and_resumes(tmp_path, monkeypatch):
    out, real = str(tmp_path / "old.pt"), train.batch
    straight, _ = train.train(**{**TINY_RUN, "steps": 4, "out": str(tmp_path / "straight.pt")})

    def stop_at_2(cfg, prior, step, rank=0):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)                    # Ctrl-C in step 2: saved once it ends
        return real(cfg, prior, step, rank)
    monkeypatch.setattr(train, "batch", stop_at_2)
    with pytest.raises(SystemExit):
        train.train(**{**TINY_RUN, "steps": 4, "out": out})
    monkeypatch.setattr(train, "batch", real)
    ckpt = torch.load(out, weights_only=True)
    for key in ("decoder_mult", "muon"):                                        # as written before the keys
        ckpt["config"].pop(key, None), ckpt["train_config"].pop(key)
    ckpt["optimizer"] = ckpt["optimizer"][0]                                    # then AdamW's state alone
    torch.save(ckpt, out)
    assert load_model(out).decoder[0].out_features == 32                     # d_model: the only decoder then
    same_run = train.resolve_config(**{**TINY_RUN, "steps": 4, "out": out})
    assert train.mismatch(ckpt["train_config"], same_run) == []   # figures load it, not retrain
    resumed, _ = train.train(**{**TINY_RUN, "steps": 4, "out": out, "resume": True})
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


# ------------------------------------------------------------------------------------------------
# The limits (E7, E8, E9): closed forms against independent computations, and figures.py
# ------------------------------------------------------------------------------------------------

import torch.nn.functional as F  # noqa: E402  (this section was appended: its imports live here)

import figures  # noqa: E402
from posterior_icl import coin_flip_predictive, gp_posterior, tiny_mlp_posterior  # noqa: E402


def test_gp_posterior_matches_a_direct_numpy_solve():
    rng = np.random.default_rng(0)
    x, y, xq = rng.uniform(-2, 2, 7), rng.normal(size=7), np.array([-2.5, -0.3, 0.0, 0.41, 3.0])
    ell, s2, noise = 0.7, 1.5, 0.05
    k = lambda a, b: s2 * np.exp(-(a[:, None] - b[None, :]) ** 2 / (2 * ell**2))
    K = k(x, x) + noise * np.eye(7)
    mean = k(x, xq).T @ np.linalg.solve(K, y)
    cov = k(xq, xq) - k(x, xq).T @ np.linalg.solve(K, k(x, xq))
    got_mean, got_std = gp_posterior(x, y, xq, length_scale=ell, output_scale=s2, noise_var=noise)
    assert got_mean.numpy() == pytest.approx(mean, abs=1e-10)
    assert got_std.numpy() == pytest.approx(np.sqrt(np.diag(cov)), abs=1e-10)
    # no data: the prior, mean 0 and std √output_scale (the std is of f: no noise in it)
    m0, s0 = gp_posterior([], [], [0.0, 1.0], output_scale=s2)
    assert m0.tolist() == [0.0, 0.0] and s0.numpy() == pytest.approx([math.sqrt(s2)] * 2)


@pytest.mark.parametrize("args, kw, message", [
    (([0.0, 1.0], [0.0], [0.5]), {}, "same shape"),
    (([[0.0, 1.0]], [[0.0, 1.0]], [0.5]), {}, r"x_train must have shape \(n,\)"),
    (([0.0, float("nan")], [0.0, 1.0], [0.5]), {}, "x_train contains NaN"),
    (([0.0, 1.0], [0.0, 1.0], [float("inf")]), {}, "x_test contains NaN or inf"),
    (([0.0, 1.0], [0.0, 1.0], [0.5]), {"noise_var": 0.0}, "noise_var must be a finite number > 0"),
    (([0.0, 1.0], [0.0, 1.0], [0.5]), {"length_scale": -0.4}, "length_scale must be a finite number > 0"),
    (([0.0, 1.0], [0.0, 1.0], [0.5]), {"output_scale": float("nan")},
     "output_scale must be a finite number > 0"),
])
def test_gp_posterior_bad_input_is_a_clear_error(args, kw, message):
    with pytest.raises(ValueError, match=message):
        gp_posterior(*args, **kw)


def _coin_by_hand(n, p_true, support):
    """Expected likelihoods and predictive by plain summation (fine for small n)."""
    binom = lambda k, p: math.comb(n, k) * p**k * (1 - p) ** (n - k)
    lik = [sum(binom(k, p_true) * binom(k, q) for k in range(n + 1)) for q in support]
    return sum(l * q for l, q in zip(lik, support)) / sum(lik), lik


@pytest.mark.parametrize("p_true, support", [(0.5, (0.3, 0.6)), (0.7, (0.1, 0.5, 0.9))])
def test_coin_flip_predictive_matches_direct_summation(p_true, support):
    ns = list(range(1, 13)) + [25]
    predictive, lik = coin_flip_predictive(ns, p_true=p_true, support=support)
    for i, n in enumerate(ns):
        want_pred, want_lik = _coin_by_hand(n, p_true, support)
        assert predictive[i].item() == pytest.approx(want_pred, rel=1e-12)
        assert lik[i].tolist() == pytest.approx(want_lik, rel=1e-10)


def test_coin_flip_predictive_goes_from_the_prior_to_the_wrong_coin():
    predictive, lik = coin_flip_predictive([1, 1024])
    assert predictive[0].item() == pytest.approx(0.45, abs=1e-12)   # one flip: L_q(1) = 1/2 for every q
    assert lik[0].tolist() == pytest.approx([0.5, 0.5], abs=1e-12)
    assert predictive[1].item() == pytest.approx(0.6, abs=1e-9)     # converged onto 0.6, not the truth 0.5
    assert torch.isfinite(lik).all() and (lik > 0).all()            # log space: 1024 flips stay representable
    one, lik_one = coin_flip_predictive(16)                          # one n in, one value out
    assert one.dim() == 0 and lik_one.shape == (2,)


@pytest.mark.parametrize("kw, message", [
    ({"ns": [0, 4]}, "positive integer"),
    ({"ns": [2.5]}, "positive integer"),
    ({"ns": [float("nan")]}, "positive integer"),
    ({"ns": []}, "or a 1-D sequence of them"),
    ({"ns": [3], "p_true": 1.2}, "p_true must be a number strictly between 0 and 1"),
    ({"ns": [3], "p_true": float("nan")}, "p_true must be a number strictly between 0 and 1"),
    ({"ns": [3], "support": (0.3, 0.0)}, r"support\[1\] must be a number strictly between 0 and 1"),
    ({"ns": [3], "support": (0.3, 0.3)}, "distinct biases"),
])
def test_coin_flip_bad_input_is_a_clear_error(kw, message):
    with pytest.raises(ValueError, match=message):
        coin_flip_predictive(**kw)


@pytest.mark.parametrize("noise", [0.1, 0.3, 1.0])
def test_tiny_mlp_posterior_is_bayes_rule_with_two_gaussians(noise):
    x = np.linspace(-0.5, 1.5, 81)   # the densities stay far from underflow here for every noise
    pdf = lambda mu: np.exp(-0.5 * ((x - mu) / noise) ** 2) / (noise * np.sqrt(2 * np.pi))
    bayes = 0.5 * pdf(1) / (0.5 * pdf(0) + 0.5 * pdf(1))
    assert tiny_mlp_posterior(x, noise).numpy() == pytest.approx(bayes, rel=1e-9, abs=1e-15)


def test_tiny_mlp_posterior_without_noise_exists_only_on_the_data():
    p = tiny_mlp_posterior(torch.tensor([0.0, 1.0, 0.5, 0.999, -3.0]), noise_std=0)
    assert p[:2].tolist() == [0.0, 1.0] and p[2:].isnan().all()
    for x, noise, message in [([0.5, float("nan")], 0.1, "NaN or inf"),
                              ([0.5], -0.1, "noise_std must be a finite number >= 0"),
                              ([0.5], "a", "noise_std must be a finite number")]:
        with pytest.raises(ValueError, match=message):
            tiny_mlp_posterior(x, noise)


def test_batched_tiny_mlps_are_independent_networks():
    params, forward = figures.tiny_mlps([3, 4])
    x = torch.randn(2, 9)
    logits = forward(params, x)
    logits.square().sum().backward()                        # any loss summed over the networks
    for s, seed in enumerate((3, 4)):
        alone = figures.tiny_mlp_net(seed)                  # the plain network of that seed
        assert torch.allclose(alone(x[s, :, None]), logits[s], atol=1e-6)
        alone(x[s, :, None]).square().sum().backward()
        for name, p in alone.named_parameters():
            assert torch.equal(params[name][s].detach(), p.detach())
            assert torch.allclose(params[name].grad[s], p.grad, atol=1e-5)   # its own loss's gradient only
    # a network is defined by its seed, not by its neighbours in the batch
    assert torch.equal(figures.tiny_mlps([4])[0]["2.weight"][0], params["2.weight"][1])


def test_noiseless_two_point_batch_gives_the_full_batch_gradient():
    params, forward = figures.tiny_mlps([0])
    with torch.random.fork_rng():                            # the batch comes from torch's random stream
        torch.manual_seed(1)
        x, y, w = figures.tiny_mlp_batch(0.0, 1, 1024)
    ones = round(w[0, 1].item() * 1024)
    assert x.shape == (1, 2) and w.sum().item() == pytest.approx(1.0) and 0 < ones < 1024
    (w * F.cross_entropy(forward(params, x)[0], y[0], reduction="none")).sum().backward()
    compressed = {name: p.grad.clone() for name, p in params.items()}
    for p in params.values():
        p.grad = None
    full_y = torch.cat([torch.zeros(1024 - ones), torch.ones(ones)]).long()
    F.cross_entropy(forward(params, full_y[None].float())[0], full_y).backward()   # all 1024 points, x = y
    for name, p in params.items():
        assert torch.allclose(compressed[name], p.grad, rtol=1e-4, atol=1e-6)   # float32 sums of 1024 terms


def test_figures_fast_run_writes_files_and_keeps_other_summary_sections(tmp_path):
    (tmp_path / "summary.md").write_text("# Figure summary\n\n## counting\n\nkept as it was\n")
    # one thread: the fast run's tensors are too small to share, and a busy second core stalls every op
    fast = ["--fast", "--threads", "1", "--out", str(tmp_path)]
    assert figures.main(fast + ["coin_flip", "gp_step", "tiny_mlp"]) == 0
    stems = ["coin_flip", "gp_step", "tiny_mlp_curves_noise0", "tiny_mlp_curves_noise0.1",
             "tiny_mlp_point_0.5"]
    for stem in stems:
        assert (tmp_path / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    assert figures.main(fast + ["coin_flip"]) == 0                           # remade: replaced
    summary = (tmp_path / "summary.md").read_text()
    for name in ("counting", "coin_flip", "gp_step", "tiny_mlp"):
        assert summary.count(f"\n## {name}\n") == 1
    assert "kept as it was" in summary and summary.count("**Fast run**") == 3
    assert "| 1024 | 0.6000 |" in summary                                          # E8: the wrong coin
    gp = summary.split("\n## gp_step\n")[1].split("\n## ")[0]
    assert [row.split("|")[1].strip() for row in gp.splitlines()
            if row.startswith("| ") and row[2].isdigit()] == \
        ["10", "20", "50", "100", "200", "400"]
    assert "| 0.1 |" in summary.split("\n## tiny_mlp\n")[1] and "undefined" in summary


def test_figures_command_line_names(capsys, tmp_path):
    assert figures.main(["--list"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == list(figures.FIGURES)
    assert {"tiny_mlp", "coin_flip", "gp_step"} <= set(figures.FIGURES)
    assert figures.main(["coin_flp"]) == 2
    err = capsys.readouterr().err
    known = ", ".join(figures.FIGURES)
    assert err.count("\n") == 1 and f"unknown figure 'coin_flp'; known figures: {known}" in err
    assert figures.main(["--threads", "0", "coin_flip"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert figures.main(["--jobs", "0", "coin_flip"]) == 2
    assert "--threads and --jobs must be >= 1" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")                     # an output folder that cannot be made
    assert figures.main(["--out", str(tmp_path / "a_file" / "out"), "coin_flip"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot make the output folder" in err and "a_file" in err


def no_training_here(*_, **__):
    raise AssertionError("a figure trained a network itself: figures.train_first did not list it")


def test_counting_figure_fast(tmp_path, monkeypatch):
    """E5 from an empty checkpoints/: trains both coin networks (tiny budgets, two processes at once),
    draws them against Bayes."""
    monkeypatch.chdir(tmp_path)                          # fast networks go to ./checkpoints/fast: keep them
    monkeypatch.setattr(train, "train", no_training_here)   # here only: the two processes train them
    assert figures.main(["--fast", "--threads", "1", "--out", "out", "counting"]) == 0
    assert (tmp_path / "out" / "counting.png").exists()
    assert (tmp_path / "checkpoints" / "fast" / "coins_counting.pt").exists()
    rows = [r.split("|")[1:5] for r in (tmp_path / "out" / "summary.md").read_text().splitlines()
            if r[:3] in ("| 1", "| 2", "| 4", "| 8", "| 3", "| 6")]
    exact, plain, counting = ([float(r[i]) for r in rows] for i in (1, 2, 3))
    assert exact == [0.663, 0.746, 0.829, 0.896, 0.940, 0.966, 0.980]
    assert max(plain) - min(plain) < 1e-3                # averaging attention: one answer for every c
    assert max(counting) - min(counting) > 1e-2          # the count feature lets it move
    assert not (tmp_path / "docs").exists()              # a README figure: docs/ only with --docs
    assert figures.main(["--fast", "--out", "out", "--docs", "counting"]) == 2      # and never a fast one
    monkeypatch.setattr(figures, "README_FIGURES", ("coin_flip",))
    assert figures.main(["--threads", "1", "--out", "out", "--docs", "coin_flip"]) == 0
    assert [p.name for p in (tmp_path / "docs").iterdir()] == ["coin_flip.png"]


# ------------------------------------------------------------------------------------------------
# E1–E4 figures: the networks against the exact posterior (figures.py, first half of the paper)
# ------------------------------------------------------------------------------------------------

def test_e4_optimal_latents_are_grid_latents_whose_mix_is_the_box_exactly():
    fam = PRIORS["steps_updown"].families[0]
    for h in (0.2, 0.3, 0.4, 0.5):
        p = figures.box(h)
        up, down = figures.box_optimal_latents(h)
        for latent in (up, down):                                  # real latents of the prior, no near misses
            assert all((fam.grid[k] == v).any() for k, v in latent.items())
        assert up["amp"] > 0 > down["amp"]
        for x in (p.x, figures.GRID):                              # on the prompt and everywhere in between
            box_y = h * ((x > -0.5).double() - (x > 0.5).double())
            mix = 0.5 * (figures.latent_curve(up, x) + figures.latent_curve(down, x))
            assert torch.allclose(mix, box_y, rtol=0, atol=1e-12)
        # alone, each misses the 10 points outside the box by h (the up-step: -h left, h right)
        for latent in (up, down):
            miss = (figures.latent_curve(latent, p.x) - p.y).abs()
            off = (miss - h).abs() < 1e-12
            assert off.sum().item() == 10 and ((miss < 1e-12) | off).all()
    assert len(p.x) == 20 and p.y.sum().item() == pytest.approx(10 * 0.5)          # 10 of the 20 in the box
    with pytest.raises(ValueError, match="off the steps_updown grid"):
        figures.box_optimal_latents(0.123)


def test_e4a_data_likelihoods_are_the_papers_in_its_convention():
    """The paper's 'Data Likelihood' titles are (1/2)^20 · p(y | x): the x density included."""
    for h, paper in ((0.2, 5.74e-01), (0.3, 6.97e-05), (0.4, 4.89e-10), (0.5, 1.44e-16)):
        fit = figures.compare(PRIORS["steps_updown"], [], figures.box(h))
        assert fit.paper_likelihood == pytest.approx(paper, rel=5e-3)
        assert fit.paper_likelihood == pytest.approx(math.exp(fit.log_evidence) / 2**20, rel=1e-12)


def test_coarse_exact_quantiles_agree_with_the_exact_quantile():
    x = torch.linspace(-1, 1, 10, dtype=torch.float64)
    y = 0.2 * torch.sin(3 * math.pi * x) + 0.23 * x
    pred = PRIORS["sines_lines"].predict(x, y, torch.linspace(-1, 1, 7))
    levels = (0.05, 0.25, 0.75, 0.95)
    coarse = pred.quantile(torch.tensor(levels, dtype=torch.float64)[:, None], tol=1e-4)
    assert coarse.shape == (4, 7)
    exact = pred.quantile(torch.tensor(levels, dtype=torch.float64)[:, None])
    assert torch.allclose(coarse, exact, atol=1e-4)
    assert (coarse.diff(dim=0) > 0).all()


def test_e1b_and_e1c_networks_are_as_described():
    """E1c: 25 … 1,600 steps, then the preset's own network, the others with a quicker final evaluation (it
    names nothing); E1b: seeds 0, 1, 2 of its own preset, Muon on 20-point datasets."""
    e1c, e1b = figures.e1c_networks(False), figures.PANELS["sines_and_lines_slope_abl"]["nets"](False)
    quick = dict(final_eval_datasets=16)
    assert [o for _, o in e1c] == [{"steps": 25 * 2**i, **quick} for i in range(7)] + [{}]
    assert [o for _, o in e1b] == [{"seed": s} for s in (0, 1, 2)]
    name = lambda p, o: os.path.basename(train.resolve_config(["--preset", p], out="", **o)["out"])
    assert [name("sines_lines", o) for _, o in e1c][-3:] == ["sines_lines-steps800.pt",
                                                             "sines_lines-steps1600.pt", "sines_lines.pt"]
    assert [name("sines_lines_e1b", o) for _, o in e1b] == ["sines_lines_e1b.pt", "sines_lines_e1b-seed1.pt",
                                                            "sines_lines_e1b-seed2.pt"]
    cfg = train.resolve_config(["--preset", "sines_lines_e1b"])
    assert cfg["muon"] and cfg["n_points"] == 20 and train.stages(cfg)[-1] == (0, 20, 32)
    fast_e1b = figures.PANELS["sines_and_lines_slope_abl"]["nets"](True)
    tiny = figures.FAST_BUDGET_NET
    assert [o for _, o in fast_e1b] == [{**tiny, "seed": s} for s in range(3)]
    assert [o for _, o in figures.e1c_networks(True)] == [{"steps": 10 * 2**i, **figures.FAST_BUDGET_NET}
                                                           for i in range(8)]


def test_final_loss_averages_the_last_tenth_of_the_steps_by_window_length():
    history = [(50 * i, float(i)) for i in range(1, 21)]
    assert figures.final_loss(history, 1000) == pytest.approx((19 + 20) / 2)   # entries at 950 and 1000
    assert figures.final_loss([(30, -0.5)], 30) == -0.5                        # a run shorter than one window
    assert figures.final_loss([(50, 1.0), (100, 2.0), (120, 4.0)], 120) == pytest.approx(4.0)   # 20 steps


def test_first_half_figures_fast(tmp_path, monkeypatch):
    """E1, E1a and E2 from an empty checkpoints/: tiny networks trained, figures and summary written."""
    monkeypatch.chdir(tmp_path)                          # fast networks go to ./checkpoints/fast: keep them
    names = ["sines_and_lines", "bad_priors_become_worse_with_more_conditioning", "sins"]
    monkeypatch.setattr(train, "train", no_training_here)   # trained first, two processes at once
    assert figures.main(["--fast", "--threads", "1", "--out", "out"] + names) == 0
    for stem in names:
        assert (tmp_path / "out" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / "out" / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    assert (tmp_path / "checkpoints" / "fast" / "sines_lines.pt").exists()
    summary = (tmp_path / "out" / "summary.md").read_text()
    section = {n: summary.split(f"\n## {n}\n")[1].split("\n## ")[0] for n in names}
    is_row = lambda r: r.startswith("| ") and r.split("|")[2].strip().isdigit()       # fit rows: n a number
    rows = {n: [r.split("|")[1:-1] for r in s.splitlines() if is_row(r)]
            for n, s in section.items()}
    # E1: one row per prompt; the unseen sloped sine is the paper's reference case (SPEC §3)
    e1 = rows["sines_and_lines"]
    assert [r[0].strip() for r in e1] == ["0.2·sin(3πx)", "0.23·x", "0.2·sin(3πx) + 0.23·x"]
    assert float(e1[2][3]) == pytest.approx(6.35e-4, rel=1e-3) and "sine 0.725" in e1[2][4]
    for r in e1:                                         # max >= mean >= 0, both finite numbers
        assert float(r[6]) >= float(r[7]) >= 0
    # E1a: the more points, the surer the posterior is of the (wrong) pure sine
    e1a = rows["bad_priors_become_worse_with_more_conditioning"]
    assert [int(r[1]) for r in e1a] == [10, 20, 40, 80]
    mass = [float(r[4].split("sine")[1].split(",")[0]) for r in e1a]
    assert mass == sorted(mass) and mass[-1] > 0.99
    # E2: the unseen frequency gets a flat exact mean
    flat = float(section["sins"].split("exact mean stays within ±")[1].split()[0])
    assert flat < 0.05
    for n in names:
        assert "posterior gap" in section[n] and "**Fast run**" in section[n]


# ------------------------------------------------------------------------------------------------
# The documentation runs: every Python snippet of the README, every exercise
# ------------------------------------------------------------------------------------------------

import re  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def python_blocks(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_readme_python_snippets_run(tmp_path, monkeypatch, capsys):
    """The tutorial cannot rot: each ```python block of the README runs, in order, as written."""
    # the snippets write checkpoints/ and figures/: not into the checkout
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks("README.md")
    assert len(blocks) >= 2 and any("PRIORS[\"quadratics\"] = " in b for b in blocks)
    try:
        for i, block in enumerate(blocks):
            exec(compile(block, f"README.md python block {i + 1}", "exec"), {"__name__": "readme"})
    finally:
        PRIORS.pop("quadratics", None)
    out = capsys.readouterr().out
    assert "0.725" in out                                # the sloped sine's posterior mass on the sine family
    gap = float(out.split("posterior gap")[-1].split()[0])         # the snippet's own print, the last
    assert math.isfinite(gap)
    assert (tmp_path / "figures" / "quadratics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "checkpoints").glob("quadratics-*.pt"))) == 1      # named from what differs


def test_plot_prompt_refuses_a_batch():
    model = make_model("sines_lines", n_buckets=10, d_model=32, n_layers=1)
    with pytest.raises(ValueError, match=r"shape \(k,\)"):
        figures.plot_prompt(model, torch.zeros(2, 3), torch.zeros(2, 3), "unused.png")


def test_a_prior_without_a_preset_trains_with_the_defaults():
    PRIORS["tiny"] = TINY
    try:
        cfg = train.resolve_config(["--prior", "tiny", "--steps", "5"])
        assert cfg["prior"] == "tiny" and cfg["steps"] == 5 and cfg["d_model"] == train.CONFIG["d_model"]
        assert cfg["out"] == os.path.join("checkpoints", "tiny-steps5.pt")
    finally:
        PRIORS.pop("tiny")
    with pytest.raises(ValueError, match="unknown prior 'tiny'"):
        train.resolve_config(["--prior", "tiny"])


def test_exercises_run_in_fast_form(tmp_path, monkeypatch, capsys):
    """Every exercise's check runs (tiny networks): its asserts are the worked answers, computed exactly."""
    monkeypatch.chdir(tmp_path)
    setup, *checks = python_blocks("EXERCISES.md")
    assert "FAST = False" in setup and len(checks) >= 6
    namespace = {"__name__": "exercises"}
    exec(setup.replace("FAST = False", "FAST = True"), namespace)
    for i, block in enumerate(checks):
        exec(compile(block, f"EXERCISES.md exercise {i + 1}", "exec"), dict(namespace))
    # every check with a network printed it
    assert capsys.readouterr().out.count("network") >= len(checks) - 1
