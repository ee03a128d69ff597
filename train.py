"""Train a transformer on endless tasks sampled from a prior (the only target: the posterior predictive), then
measure its gap to the exact posterior. Every CONFIG key is a flag (--help); torchrun runs it as DDP."""
import argparse, math, os, signal, sys, threading, time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from posterior_icl import Muon, gap_plan, get_prior, load_checkpoint, make_model, posterior_gap, save_model

# ---- Config: plain values, each a command-line flag -----------------------------------------------------
CONFIG = dict(
    prior="sines_lines", steps=6500, batch_size=32,   # datasets per step (per process under torchrun)
    n_points=100,          # points per dataset; the context size k is uniform in 0 … n_points-1
    short_fraction=0.0, short_points=20,   # curriculum: this fraction of the steps on short_points points,
    mid_fraction=0.0, mid_points=50,       #   the next on mid_points, the rest on n_points: basics cheaply
    short_batch=0,         # datasets per short step (0: batch_size): short steps are cheap, so take more
    max_queries=0,         # 0: the other n_points-k points are queries (the paper); else at most this many
    lr=1.5e-3, beta2=0.95,  # AdamW's β₂: 0.95 (nanoGPT's) trained our networks better than torch's 0.999
    warmup=0.05, muon=False,   # warm-up: a fraction of the steps, then cosine to 0; muon: see optimizers()
    weight_decay=0.0, grad_clip=1.0, d_model=96, n_layers=4, head_size=32, n_buckets=1000, seed=0,
    decoder_mult=1,        # the decoder's hidden layer: this many times d_model (the paper: 4)
    pre_norm=False,        # post-norm, as in the paper: it trained the small networks better
    count_feature=False,   # E5: give every token log(1 + context size), so the network can count
    x_freq=0.0,            # w > 0 also embeds sin(wπx), cos(wπx): the sines' own frequency, 3, in E1 and E2
    device="auto", threads=0, progress=True,   # auto: CUDA if present, else CPU; threads 0: torch's default
    eval_every=0, eval_datasets=128, final_eval_datasets=256,   # gap every eval_every steps (0: at the end)
    save_every=500, out="", resume=False,   # out: default checkpoints/<preset>[-<what differs>].pt; resume it
)
# What a key is allowed to be, as one table: (keys, test of the value and the config, what is allowed).
RULES = [
    ("steps batch_size n_points short_points mid_points d_model n_layers head_size decoder_mult "
     "eval_datasets final_eval_datasets", lambda v, c: v >= 1, "an integer >= 1"),
    ("max_queries short_batch threads eval_every save_every", lambda v, c: v >= 0, "an integer >= 0"),
    ("n_buckets", lambda v, c: v >= 2, "an integer >= 2"),
    ("seed", lambda v, c: 0 <= v < 2**24, "an integer in [0, 2^24)"),   # see batch()
    ("weight_decay grad_clip x_freq", lambda v, c: 0 <= v < math.inf, "a finite number >= 0"),
    ("lr", lambda v, c: 0 < v < math.inf, "a finite number > 0"),
    ("short_fraction mid_fraction", lambda v, c: 0 <= v <= 1, "a number in [0, 1]"),
    ("mid_fraction", lambda v, c: c["short_fraction"] + v <= 1, "<= 1 - short_fraction ({short_fraction})"),
    ("short_points", lambda v, c: v <= c["n_points"] or not c["short_fraction"],
     "<= n_points ({n_points}) while short_fraction > 0"),
    ("mid_points", lambda v, c: v <= c["n_points"] or not c["mid_fraction"],
     "<= n_points ({n_points}) while mid_fraction > 0"),
    ("warmup beta2", lambda v, c: 0 <= v < 1, "a number in [0, 1)"),
    ("device", lambda v, c: v in ("auto", "cpu") or v.startswith("cuda") and torch.cuda.is_available(),
     "auto, cpu or cuda[:N] where torch sees CUDA"),
]
RUNTIME = "device threads eval_every eval_datasets final_eval_datasets save_every out resume progress".split()
SHAPE = "d_model n_layers head_size decoder_mult pre_norm count_feature x_freq n_buckets seed".split()
# Presets: sized for each prior's figures (sines_lines: E1, E1a, E1c) and a 2-core CPU; each sets its prior.
PRESETS = {
    "sines_lines": dict(prior="sines_lines", x_freq=3.0, steps=7000, short_fraction=0.6, mid_fraction=0.25,
                        short_batch=64, muon=True, lr=1e-3),
    "sines_phase": dict(prior="sines_phase", n_points=30, steps=4000, d_model=64, lr=1e-3, x_freq=3.0,
                        beta2=0.999, decoder_mult=4),      # E2; with beta2 0.95 it stayed at the prior
    "steps": dict(prior="steps", n_points=20, steps=7000, decoder_mult=4, muon=True),  # E3 (10-point prompts)
    "steps_updown": dict(prior="steps_updown", n_points=30, steps=6000, final_eval_datasets=128),   # E4
    "coins": dict(prior="coins", steps=2000, d_model=64, n_layers=2, batch_size=32),                      # E5
    "paper_size": dict(prior="sines_lines", batch_size=64, d_model=512, n_layers=8, steps=20000, lr=1e-4,
                       warmup=0.1, decoder_mult=4),                             # the paper's own size
}
PRESETS["sines_lines_long"] = dict(PRESETS["sines_lines"], steps=17500, lr=1.5e-3)   # longer, lr as measured
PRESETS["coins_counting"] = dict(PRESETS["coins"], count_feature=True)          # E5, able to count
PRESETS["sines_lines_e1b"] = dict(PRESETS["sines_lines"], n_points=20, short_fraction=0.0, mid_fraction=0.0,
                                  steps=8500, lr=1.5e-3)   # E1b: 10-point prompts, 20-point datasets
# ---- Command line: argparse from CONFIG; defaults < preset < flags < keyword overrides ------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):           # one line that says what is allowed, not a usage screen
        known = ", ".join(a.option_strings[0] for a in self._actions[1:] if a.option_strings)   # [0]: --help
        raise ValueError(message + ("; known options: " + known if "unrecognized" in message else ""))
def true_or_false(text):                # a bare --resume means true; argparse's error names this function
    return ("false", "true").index(text.lower()) == 1
def mismatch(old, new):
    """The keys that shape a run (data, schedule, network, processes; not RUNTIME's, which say how it is
    watched or where it is saved) in which two configs differ."""
    every = {**CONFIG, "world_size": 1}
    return [k for k in every if k not in RUNTIME and old.get(k, every[k]) != new.get(k, every[k])]
def resolve_config(argv=(), **overrides):
    """The run's config from flags, then keyword overrides (as flags); a ValueError says what is allowed."""
    p = _Parser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                allow_abbrev=False, argument_default=argparse.SUPPRESS)
    p.add_argument("--preset", choices=PRESETS, help="a preset (default: the prior's own, if it has one)")
    for key, v in CONFIG.items():       # the type of its default
        kind = dict(type=true_or_false, nargs="?", const=True) if type(v) is bool else dict(type=type(v))
        p.add_argument(f"--{key}", help=f"default {v!r}", **kind)
    given = vars(p.parse_args([*argv, *(f"--{k}={v}" for k, v in overrides.items() if v is not None)]))
    name = given.pop("preset", None) or given.get("prior", CONFIG["prior"])   # else the prior's own preset
    base = {**CONFIG, **PRESETS.get(name, {"prior": name})}
    cfg = {**base, **given, "preset": name, "world_size": int(os.environ.get("WORLD_SIZE", 1))}   # torchrun's
    for keys, ok, allowed in RULES:
        for key in keys.split():
            if not ok(cfg[key], cfg):
                raise ValueError(f"{key} must be {allowed.format(**cfg)}; got {cfg[key]!r}")
    for key in ["final_eval_datasets"] + ["eval_datasets"] * bool(cfg["eval_every"]):
        gap_plan(get_prior(cfg["prior"]), cfg[key], cfg["n_points"], name=key)   # now, not after training
    differ = [f"{k}{cfg[k]}" for k in sorted(mismatch(base, cfg))]           # the file names what differs
    default = os.path.join("checkpoints", "-".join([name] + differ) + ".pt")
    cfg["out"] = cfg["out"] or default
    if "out" not in given and not cfg["resume"] and os.path.exists(default):   # never over another run
        refuse_other(load_checkpoint(default), cfg, "pass --out to write over it or to choose another file")
    return cfg
def refuse_other(ckpt, cfg, advice):
    """A ValueError naming the first key that shapes a run in which the checkpoint's run differs from cfg."""
    old = ckpt.get("train_config", {})
    for k in mismatch(old, cfg)[:1]:
        raise ValueError(f"{cfg['out']} was trained with {k}={old.get(k, CONFIG.get(k, 1))!r}, "
                         f"not {cfg[k]!r}: {advice}")
# ---- Training ---------------------------------------------------------------------------------------------
def lr_at(step, cfg):
    """Linear warm-up, then cosine decay to 0."""
    warm = max(1, int(cfg["warmup"] * cfg["steps"]))
    cosine = 1 + math.cos(math.pi * (step - warm) / max(1, cfg["steps"] - warm))
    return cfg["lr"] * (step + 1) / warm if step < warm else cfg["lr"] * 0.5 * cosine
def stages(cfg):
    """The curriculum as [(first step, points, datasets)]: short_points, then mid_points, then n_points."""
    b, short, at = cfg["batch_size"], cfg["short_fraction"], lambda part: math.ceil(part * cfg["steps"])
    return [(0, cfg["short_points"], cfg["short_batch"] or b), (at(short), cfg["mid_points"], b),
            (at(short + cfg["mid_fraction"]), cfg["n_points"], b)]
def batch(cfg, prior, step, rank=0):
    """Step `step`'s datasets x, y (B, n), context size k and query end, drawn from a generator seeded by
    (seed, rank, step): a resumed run draws what it would have drawn, whatever the number of processes."""
    g = torch.Generator().manual_seed((cfg["seed"] << 40) + (rank << 24) + step)
    n, size = [(points, size) for start, points, size in stages(cfg) if start <= step][-1]
    x, y = prior.sample(size, n, generator=g)
    k = int(torch.randint(n, (), generator=g))
    return x, y, k, min(n, k + cfg["max_queries"]) if cfg["max_queries"] else n
def optimizers(model, cfg):
    """[AdamW]; with muon, Muon takes the blocks' weight matrices: its momentum, orthogonalised, moves every
    direction alike, and scaled to AdamW's step size it takes the same learning rate."""
    muon = [p for n, p in model.named_parameters() if cfg["muon"] and p.dim() == 2 and n.startswith("blocks")]
    rest = [p for p in model.parameters() if all(p is not m for m in muon)]
    adamw = torch.optim.AdamW(rest, lr=cfg["lr"], betas=(0.9, cfg["beta2"]), weight_decay=cfg["weight_decay"])
    return [adamw, Muon(muon, cfg["lr"], cfg["weight_decay"])] if muon else [adamw]   # Muon refuses []
def train_step(net, opts, cfg, prior, step, rank=0):
    """Optimizer step `step` on its batch: points :k the context, k:q the queries -> the loss (a tensor)."""
    model, (x, y, k, q) = getattr(net, "module", net), batch(cfg, prior, step, rank)   # DDP wraps the model
    x, y = (t.to(next(model.parameters()).device) for t in (x, y))
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda and torch.cuda.is_bf16_supported()):
        logits = net(x[:, :k], y[:, :k], x[:, k:q])
    loss = model.nll(logits.float(), y[:, k:q])
    model.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
    for opt in opts:                    # each has one group of parameters
        opt.param_groups[0]["lr"] = lr_at(step, cfg)
        opt.step()
    return loss.detach()                # not .item(), which would wait for the device every step
def train(cfg=None, **overrides):
    """Train the network a config describes (or the defaults with overrides). Returns (model, summary)."""
    cfg = resolve_config(**overrides) if cfg is None else {**cfg, **overrides}
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))   # torchrun's
    device = cfg["device"] if cfg["device"] != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    if world > 1 and device.startswith("cuda"):
        torch.cuda.set_device(device := f"cuda:{os.environ.get('LOCAL_RANK', 0)}")     # a GPU per process
    if world > 1:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    torch.set_num_threads(cfg["threads"] or torch.get_num_threads())     # 0: torch's default
    rank0, prior = rank == 0, get_prior(cfg["prior"])     # rank 0 alone prints, evaluates and saves
    say = print if rank0 else lambda *_: None
    say("config: " + " ".join(f"{k}={v}" for k, v in cfg.items()))
    torch.manual_seed(cfg["seed"])
    model = make_model(cfg["prior"], **{k: cfg[k] for k in SHAPE}).to(device)
    opts, start, history = optimizers(model, cfg), 0, []
    if cfg["resume"]:
        ckpt = load_checkpoint(cfg["out"], prior=cfg["prior"])
        refuse_other(ckpt, cfg, "a resumed run keeps the keys that shape its data and schedule")
        model.load_state_dict(ckpt["state_dict"])
        states = ckpt["optimizer"]                    # a dict: written before muon, by AdamW alone
        for opt, state in zip(opts, [states] if isinstance(states, dict) else states):
            opt.load_state_dict(state)
        start, history = ckpt["step"], ckpt["history"]
        say(f"resumed {cfg['out']} at step {start}")
    # with an empty context the attention's weights get no gradient: DDP must not wait for them
    net = DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    def save(step, **extra):
        if rank0:
            save_model(model, cfg["out"], optimizer=[opt.state_dict() for opt in opts], step=step,
                       history=history, train_config=cfg, **extra)
    evaluate = lambda n: posterior_gap(model, prior, n_datasets=n, n_points=cfg["n_points"], seed=12345)
    t0, losses, stop = time.time(), [], []    # Ctrl-C only asks: stop after a whole step
    signals = threading.current_thread() is threading.main_thread()   # the only one that may handle them
    ctrl_c = signal.signal(signal.SIGINT, lambda *_: stop.append(1)) if signals else None
    try:
        with tqdm(range(start, cfg["steps"]), initial=start, total=cfg["steps"], desc=cfg["prior"],
                  disable=not (rank0 and cfg["progress"]), dynamic_ncols=True, unit="step") as bar:
            for step in bar:
                losses.append(train_step(net, opts, cfg, prior, step, rank))
                done = step + 1
                if done % 50 == 0 or done == cfg["steps"]:      # the loop's only wait for the device
                    history.append((done, torch.stack(losses).mean().item()))   # the mean since the last
                    losses.clear()
                    bar.set_postfix(loss=f"{history[-1][1]:.3f}", lr=f"{lr_at(step, cfg):.1e}")
                if cfg["eval_every"] and done % cfg["eval_every"] == 0 and done < cfg["steps"] and rank0:
                    g = evaluate(cfg["eval_datasets"])
                    bar.write(f"step {done}: posterior gap {g['gap']:.4f} ± {g['se']:.4f} nats per query")
                if cfg["save_every"] and done % cfg["save_every"] == 0:
                    save(done)
                if stop:                # nothing trained is lost: the last whole step is saved
                    save(done)
                    say(f"\ninterrupted at step {done}; saved {cfg['out']} (continue with --resume)")
                    raise SystemExit(130)
    finally:
        if signals:
            signal.signal(signal.SIGINT, ctrl_c)
    seconds, loss = time.time() - t0, history[-1][1] if history else math.nan
    summary = dict(steps=cfg["steps"], seconds=seconds, steps_per_s=(cfg["steps"] - start) / seconds,
                   final_loss=loss, checkpoint=cfg["out"])
    if rank0:
        g = summary["gap"] = evaluate(cfg["final_eval_datasets"])
        bins = ", ".join(f"{k}: {m:.4f} ± {e:.4f}" for k, (m, e) in g["bins"].items())
        print(f"trained {cfg['preset']}: {cfg['steps']} steps in {seconds:.0f} s "
              f"({summary['steps_per_s']:.1f} steps/s), final training loss {loss:.3f}")
        print(f"posterior gap (NLL_network - NLL_exact, nats per query, ± 1 standard error, "
              f"{g['n_datasets']} datasets): {g['gap']:.4f} ± {g['se']:.4f}\n  of which the output head "
              f"{g['head']:.4f} ± {g['head_se']:.4f}; by context size: {bins}\ncheckpoint: {cfg['out']}")
    save(cfg["steps"], summary=summary)
    if world > 1:
        dist.barrier()                  # the others wait for rank 0's evaluation: gloo must not close early
        dist.destroy_process_group()
    return model, summary
def main(argv):
    try:
        train(resolve_config(argv))
    except ValueError as e:            # a mistake in the config, or a checkpoint that does not fit
        raise SystemExit(f"train.py: {e}")
if __name__ == "__main__":
    main(sys.argv[1:])
