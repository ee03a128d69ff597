"""Train a transformer on endless tasks sampled from a prior, then measure its gap to the exact posterior.

    python train.py --prior steps            # a prior's preset (default: sines_lines), on the CPU or CUDA
    python train.py --steps 2000             # any CONFIG value is a flag (--help; a preset overrides its
    python train.py --steps 2000 --resume    #   defaults); --resume continues that run where it stopped
    torchrun --nproc_per_node=2 train.py     # DistributedDataParallel (gloo on CPU, NCCL on CUDA)

Fresh datasets every step leave nothing to overfit: the only target is the posterior predictive.
"""
import argparse, math, os, signal, sys, threading, time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from posterior_icl import gap_plan, get_prior, load_checkpoint, make_model, posterior_gap, save_model

# ---- Config: plain values, each a command-line flag -----------------------------------------------------
CONFIG = dict(
    prior="sines_lines", steps=6500, batch_size=32,   # datasets per step (per process under torchrun)
    n_points=100,          # points per dataset; the context size k is uniform in 0 … n_points-1
    short_fraction=0.0,    # curriculum: this fraction of the steps on datasets of short_points points, the
    short_points=20,       #   next mid_fraction on mid_points, the rest on n_points: short contexts teach the
    mid_fraction=0.0, mid_points=50,   # basics cheaply (the sines_lines preset: 60%, 25%, 15%)
    max_queries=0,         # 0: the other n_points-k points are queries (the paper); else at most this many
    lr=1.5e-3, beta2=0.95,  # AdamW's β₂: 0.95 (nanoGPT's) trained our networks better than torch's 0.999
    muon=False,            # Muon for the blocks' weight matrices: fewer steps to the posterior, dearer ones
    warmup=0.05,           # fraction of the steps with a linear warm-up, then cosine to 0
    weight_decay=0.0, grad_clip=1.0, d_model=96, n_layers=4, head_size=32, n_buckets=1000, seed=0,
    decoder_mult=1,        # the decoder's hidden layer: this many times d_model (the paper: 4)
    pre_norm=False,        # post-norm, as in the paper: it trained the small networks better
    count_feature=False,   # E5: give every token log(1 + context size), so the network can count
    x_freq=0.0,            # w > 0 also embeds sin(wπx), cos(wπx): the sines' own frequency, 3, in E1 and E2
    device="auto", threads=0, progress=True,   # auto: CUDA if present, else CPU; threads 0: torch's default
    eval_every=0, eval_datasets=128,   # steps between evaluations of the gap (0: at the end only), datasets
    final_eval_datasets=256,  # every one at every context size where the exact posterior is cheap
    save_every=500,        # steps between checkpoints
    out="", resume=False,  # checkpoint path (default checkpoints/<preset>[-<what differs>].pt); continue it
)
# What a key is allowed to be, as one table: (keys, test, what is allowed); the parser checks the types.
RULES = [
    ("steps batch_size n_points short_points mid_points d_model n_layers head_size decoder_mult "
     "eval_datasets final_eval_datasets", lambda v: v >= 1, "an integer >= 1"),
    ("max_queries threads eval_every save_every", lambda v: v >= 0, "an integer >= 0"),
    ("n_buckets", lambda v: v >= 2, "an integer >= 2"),
    ("seed", lambda v: 0 <= v < 2**24, "an integer in [0, 2^24)"),   # see batch()
    ("weight_decay grad_clip x_freq", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    ("lr", lambda v: 0 < v < math.inf, "a finite number > 0"),
    ("short_fraction mid_fraction", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("warmup beta2", lambda v: 0 <= v < 1, "a number in [0, 1)"),
]
# Keys that say how a run is watched or where it is saved, not what it learns.
RUNTIME = "device threads eval_every eval_datasets final_eval_datasets save_every out resume progress".split()
SHAPE = "d_model n_layers head_size decoder_mult pre_norm count_feature x_freq n_buckets seed".split()
LOG_EVERY = 50             # steps per logged loss: the training loop's only wait for the device

# Presets: sized for each prior's figures and for a 2-core CPU. A preset sets the prior too.
PRESETS = {
    "sines_lines": dict(prior="sines_lines", x_freq=3.0, steps=10000, short_fraction=0.6,
                        mid_fraction=0.25),                                  # E1, E1a (80-point prompts)
    "sines_phase": dict(prior="sines_phase", n_points=30, steps=4000, d_model=64, lr=1e-3, x_freq=3.0,
                        beta2=0.999, decoder_mult=4),      # E2; with beta2 0.95 it stayed at the prior
    "steps": dict(prior="steps", n_points=20, steps=6000, decoder_mult=4),       # E3 (10-point prompts)
    "steps_updown": dict(prior="steps_updown", n_points=30, steps=6000),         # E4 (20-point prompts)
    "coins": dict(prior="coins", steps=2000, d_model=64, n_layers=2, batch_size=64),                      # E5
    "paper_size": dict(prior="sines_lines", batch_size=64, d_model=512, n_layers=8, steps=20000, lr=1e-4,
                       warmup=0.1, decoder_mult=4),                             # the paper's own size
}
PRESETS["sines_lines_long"] = dict(PRESETS["sines_lines"], steps=25000)         # the same, longer
PRESETS["coins_counting"] = dict(PRESETS["coins"], count_feature=True)          # E5, able to count
PRESETS["sines_lines_e1b"] = dict(PRESETS["sines_lines"], n_points=20, short_fraction=0.0, mid_fraction=0.0,
                                  steps=8500, muon=True)   # E1b: 10-point prompts, 20-point datasets

# ---- Command line: argparse from CONFIG; defaults < preset < flags < keyword overrides ------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):           # one line that says what is allowed, not a usage screen
        if message.startswith("unrecognized"):
            known = [a.option_strings[0] for a in self._actions[1:] if a.option_strings]   # [0]: --help
            message += "; known options: " + ", ".join(known)
        raise ValueError(message)

def _bool(text):                        # a bare --resume means true; --pre_norm false says it
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1", "yes")

def parser():
    p = _Parser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                allow_abbrev=False, argument_default=argparse.SUPPRESS)
    p.add_argument("--preset", choices=PRESETS, help="a preset (default: the prior's own, if it has one)")
    for key, default in CONFIG.items():
        kind = dict(type=_bool, nargs="?", const=True) if type(default) is bool else dict(type=type(default))
        p.add_argument(f"--{key}", help=f"default {default!r}", **kind)
    return p

def mismatch(old, new):
    """The keys that shape a run (data, schedule, network, processes) in which two configs differ."""
    every = {**CONFIG, "world_size": 1}
    return [k for k in every if k not in RUNTIME and old.get(k, every[k]) != new.get(k, every[k])]

def resolve_config(argv=(), **overrides):
    """The run's config from flags, then keyword overrides (parsed as flags too), checked: a ValueError with
    one line that says what is allowed."""
    flags = [f"--{k}={v}" for k, v in overrides.items() if v is not None]       # None: not given
    given = vars(parser().parse_args([*argv, *flags]))
    name = given.pop("preset", None) or given.get("prior", CONFIG["prior"])   # else the prior's own preset
    base = {**CONFIG, **PRESETS.get(name, {"prior": name})}
    cfg = {**base, **given, "preset": name, "world_size": int(os.environ.get("WORLD_SIZE", 1))}   # torchrun's
    prior = get_prior(cfg["prior"])                     # an unknown prior lists the known ones
    for keys, ok, allowed in RULES:
        for key in keys.split():
            if not ok(cfg[key]):
                raise ValueError(f"{key} must be {allowed}; got {cfg[key]!r}")
    for s in ("short", "mid"):
        if cfg[f"{s}_fraction"] > 0 and cfg[f"{s}_points"] > cfg["n_points"]:
            raise ValueError(f"{s}_points ({cfg[f'{s}_points']}) must be <= n_points ({cfg['n_points']}) "
                             f"while {s}_fraction > 0; or pass --{s}_fraction 0")
    if cfg["short_fraction"] + cfg["mid_fraction"] > 1:
        raise ValueError(f"short_fraction + mid_fraction must be <= 1; got {cfg['short_fraction']} + "
                         f"{cfg['mid_fraction']}")
    cuda = cfg["device"].startswith("cuda") and torch.cuda.is_available()
    if not (cfg["device"] in ("auto", "cpu") or cuda):
        raise ValueError(f"device must be auto, cpu or cuda[:N] where torch sees CUDA; got {cfg['device']!r}")
    for key in ["final_eval_datasets"] + ["eval_datasets"] * bool(cfg["eval_every"]):
        gap_plan(prior, cfg[key], cfg["n_points"], name=key)          # refused now, not after the training
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
    if step < warm:
        return cfg["lr"] * (step + 1) / warm
    return cfg["lr"] * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, cfg["steps"] - warm)))

def stages(cfg):
    """The curriculum as [(first step, points per dataset)]: short_points, then mid_points, then n_points."""
    short, mid = cfg["short_fraction"], cfg["short_fraction"] + cfg["mid_fraction"]    # of the steps
    short, mid = math.ceil(short * cfg["steps"]), math.ceil(mid * cfg["steps"])       # their first steps
    return [(0, cfg["short_points"]), (short, cfg["mid_points"]), (mid, cfg["n_points"])]

def batch(cfg, prior, step, rank=0):
    """Step `step`'s datasets x, y (B, n), context size k and query end, drawn from a generator seeded by
    (seed, rank, step): a resumed run draws what it would have drawn, whatever the number of processes."""
    g = torch.Generator().manual_seed((cfg["seed"] << 40) + (rank << 24) + step)
    n = [points for start, points in stages(cfg) if start <= step][-1]
    x, y = prior.sample(cfg["batch_size"], n, generator=g)
    k = int(torch.randint(n, (), generator=g))
    return x, y, k, min(n, k + cfg["max_queries"]) if cfg["max_queries"] else n

def optimizers(model, cfg):
    """[AdamW]; with muon, torch's Muon takes the blocks' weight matrices: its momentum, orthogonalised, moves
    every direction alike, and scaled to AdamW's step size it takes the same learning rate."""
    muon = [p for n, p in model.named_parameters() if cfg["muon"] and p.dim() == 2 and n.startswith("blocks")]
    rest = [p for p in model.parameters() if all(p is not m for m in muon)]
    adamw = torch.optim.AdamW(rest, lr=cfg["lr"], betas=(0.9, cfg["beta2"]), weight_decay=cfg["weight_decay"])
    if not muon:
        return [adamw]
    return [adamw, torch.optim.Muon(muon, weight_decay=cfg["weight_decay"], adjust_lr_fn="match_rms_adamw")]

def train_step(net, opts, cfg, prior, step, rank=0, bf16=False):
    """Optimizer step `step` on its batch: points :k the context, k:q the queries -> the loss (a tensor)."""
    model, (x, y, k, q) = getattr(net, "module", net), batch(cfg, prior, step, rank)   # DDP wraps the model
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    for group in (group for opt in opts for group in opt.param_groups):
        group["lr"] = lr_at(step, cfg)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        logits = net(x[:, :k], y[:, :k], x[:, k:q])
    loss = model.nll(logits.float(), y[:, k:q])
    model.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
    for opt in opts:
        opt.step()
    return loss.detach()                # not .item(), which would wait for the device every step

def train(cfg=None, **overrides):
    """Train the network a config describes (or the defaults with overrides). Returns (model, summary)."""
    cfg = resolve_config(**overrides) if cfg is None else {**cfg, **overrides}
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))   # torchrun's
    device = cfg["device"] if cfg["device"] != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    if world > 1 and device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"          # a GPU per process
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if cfg["threads"]:                  # 0: torch's default
        torch.set_num_threads(cfg["threads"])
    rank0, prior = rank == 0, get_prior(cfg["prior"])     # rank 0 alone prints, evaluates and saves
    say = print if rank0 else lambda *_: None
    say("config: " + " ".join(f"{k}={v}" for k, v in cfg.items()))
    torch.manual_seed(cfg["seed"])
    model = make_model(cfg["prior"], **{k: cfg[k] for k in SHAPE}).to(device)
    opts = optimizers(model, cfg)
    start, history = 0, []
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
    bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    def save(step, **extra):
        if rank0:
            save_model(model, cfg["out"], optimizer=[opt.state_dict() for opt in opts], step=step,
                       history=history, train_config=cfg, **extra)
    evaluate = lambda n: posterior_gap(model, prior, n_datasets=n, n_points=cfg["n_points"], seed=12345)
    t0, done, losses, stop = time.time(), start, [], []    # Ctrl-C only asks: stop after a whole step
    signals = threading.current_thread() is threading.main_thread()   # the only one that may handle them
    ctrl_c = signal.signal(signal.SIGINT, lambda *_: stop.append(1)) if signals else None
    try:
        with tqdm(range(start, cfg["steps"]), initial=start, total=cfg["steps"], desc=cfg["prior"],
                  disable=not (rank0 and cfg["progress"]), dynamic_ncols=True, unit="step") as bar:
            for step in bar:
                losses.append(train_step(net, opts, cfg, prior, step, rank, bf16))
                done = step + 1
                if done % LOG_EVERY == 0 or done == cfg["steps"]:
                    history.append((done, torch.stack(losses).mean().item()))   # the mean since the last
                    losses.clear()
                    bar.set_postfix(loss=f"{history[-1][1]:.3f}", lr=f"{lr_at(step, cfg):.1e}")
                if cfg["eval_every"] and done % cfg["eval_every"] == 0 and done < cfg["steps"] and rank0:
                    g = evaluate(cfg["eval_datasets"])
                    bar.write(f"step {done}: posterior gap {g['gap']:.4f} ± {g['se']:.4f} nats per query")
                if cfg["save_every"] and done % cfg["save_every"] == 0:
                    save(done)
                if stop:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:          # nothing trained is lost: save the last completed step
        save(done)
        say(f"\ninterrupted at step {done}; saved {cfg['out']} (continue with --resume)")
        raise SystemExit(130)
    finally:
        if signals:
            signal.signal(signal.SIGINT, ctrl_c)
    seconds = time.time() - t0
    speed, loss = (cfg["steps"] - start) / seconds, history[-1][1] if history else math.nan
    summary = dict(steps=cfg["steps"], seconds=seconds, steps_per_s=speed, final_loss=loss,
                   checkpoint=cfg["out"])
    if rank0:
        g = summary["gap"] = evaluate(cfg["final_eval_datasets"])
        bins = ", ".join(f"{k}: {m:.4f} ± {e:.4f}" for k, (m, e) in g["bins"].items())
        print(f"trained {cfg['preset']}: {cfg['steps']} steps in {seconds:.0f} s ({speed:.1f} "
              f"steps/s), final training loss {loss:.3f}\nposterior gap (NLL_network - NLL_exact, "
              f"nats per query, ± 1 standard error, {g['n_datasets']} datasets): {g['gap']:.4f} ± "
              f"{g['se']:.4f}\n  of which the output head {g['head']:.4f} ± {g['head_se']:.4f}; by context "
              f"size: {bins}\ncheckpoint: {cfg['out']}")
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
