"""Train a transformer on endless tasks sampled from a prior, then measure its gap to the exact posterior.

    python train.py                                  # sines_lines, laptop preset, CPU (8.5 min on 2 cores)
    python train.py --prior steps                    # each prior has a preset sized for its figures
    python train.py --preset sines_lines_long        # the longer CPU preset (24 min; gap 0.011 instead of 0.017)
    python train.py --steps 2000 --lr 3e-4           # any config value below can be overridden
    python train.py --resume                         # continue checkpoints/<preset>.pt where it stopped
    torchrun --nproc_per_node=2 train.py ...         # DistributedDataParallel (gloo on CPU, NCCL on CUDA)

Every step draws a fresh batch from the prior: no dataset is ever seen twice, so there is nothing to
overfit and the only target is the posterior predictive itself.
"""
import math
import os
import sys
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
from tqdm import tqdm

from posterior_icl import get_prior, load_checkpoint, make_model, posterior_gap, save_model, Transformer

# -----------------------------------------------------------------------------------------------
# Config: plain values, overridable from the command line as --key value
# -----------------------------------------------------------------------------------------------
CONFIG = dict(
    prior="sines_lines",
    steps=6500,            # optimizer steps
    batch_size=32,         # datasets per step (per process under torchrun)
    n_points=100,          # points per dataset; the context size k is uniform in 0 … n_points-1
    short_fraction=0.75,   # curriculum: the first 75% of the steps use datasets of short_points points, 4× cheaper
    short_points=20,       #   (the basics are learnt on short contexts; the last 25% learns the long ones)
    max_queries=0,         # 0: the other n_points-k points are queries (the paper); else at most this many
    lr=1.5e-3,
    warmup=0.05,           # fraction of the steps with a linear warm-up, then cosine to 0
    weight_decay=0.0,
    grad_clip=1.0,
    d_model=96,
    n_layers=4,
    head_size=32,
    pre_norm=False,        # post-norm, as in the paper: it beat pre-norm here (README §8, "What made a small network converge faster")
    count_feature=False,   # E5: give every token log(1 + context size), so the network can count
    x_freq=0.0,            # w > 0 also embeds sin(wπx), cos(wπx): the sines' own frequency, 3, in E1 and E2
    n_buckets=1000,
    seed=0,
    device="auto",         # auto: CUDA when present, else CPU
    threads=0,             # torch threads on the CPU; 0: torch's default
    eval_every=0,          # steps between evaluations of the gap (0: only at the end)
    eval_datasets=128,     # datasets for the periodic posterior gap
    final_eval_datasets=512,
    save_every=500,        # steps between checkpoints
    out="",                # checkpoint path; default checkpoints/<preset>.pt
    resume=False,
    progress=True,
)

# Presets: sized for each prior's figures and for a 2-core CPU. A preset sets the prior too.
PRESETS = {
    "sines_lines": dict(prior="sines_lines", x_freq=3.0),                       # E1, E1a (80-point prompts)
    "sines_lines_long": dict(prior="sines_lines", x_freq=3.0, steps=18000),     # the same, longer: E1 closer
    "sines_phase": dict(prior="sines_phase", n_points=30, steps=4000, short_fraction=0, d_model=64, lr=1e-3,
                        x_freq=3.0),                                           # E2 (20 points): phase features
    "steps": dict(prior="steps", n_points=20, steps=6000, short_fraction=0),                 # E3 (10 points)
    "steps_updown": dict(prior="steps_updown", n_points=30, steps=6000, short_fraction=0),   # E4 (20-point box)
    "coins": dict(prior="coins", n_points=100, steps=2000, short_fraction=0, d_model=64, n_layers=2,
                  batch_size=64),                                               # E5: contexts of up to 64 ones
    "coins_counting": dict(prior="coins", n_points=100, steps=2000, short_fraction=0, d_model=64, n_layers=2,
                           batch_size=64, count_feature=True),                  # E5: the same, able to count
    "paper_size": dict(prior="sines_lines", n_points=100, batch_size=64, d_model=512, n_layers=8, short_fraction=0,
                       steps=20000, lr=1e-4, warmup=0.1),                       # the paper's own size
}


def lr_at(step, cfg):
    """Linear warm-up, then cosine decay to 0."""
    warm = max(1, int(cfg["warmup"] * cfg["steps"]))
    if step < warm:
        return cfg["lr"] * (step + 1) / warm
    progress = (step - warm) / max(1, cfg["steps"] - warm)
    return cfg["lr"] * 0.5 * (1 + math.cos(math.pi * progress))


# -----------------------------------------------------------------------------------------------
# Command line: --key value for every config key, checked against the defaults' types and ranges
# -----------------------------------------------------------------------------------------------
POSITIVE = {"steps", "batch_size", "n_points", "short_points", "d_model", "n_layers", "head_size", "n_buckets", "final_eval_datasets",
            "eval_datasets"}
NON_NEGATIVE = {"max_queries", "weight_decay", "grad_clip", "threads", "eval_every", "save_every", "x_freq"}


def resolve_config(argv=(), **overrides):
    """Defaults < preset (--preset, or the prior's own) < command line < overrides. Raises ValueError."""
    args, i = {}, 0
    argv = list(argv)
    while i < len(argv):
        a = argv[i]
        if not a.startswith("--") or a == "--":
            raise ValueError(f"expected --key value, got {a!r}")
        key = a[2:].replace("-", "_")
        if key == "preset" or key in CONFIG:
            default = CONFIG.get(key, "")
            if isinstance(default, bool) and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
                args[key], i = "true", i + 1           # a bare flag: --resume, --pre_norm
                continue
            if i + 1 == len(argv):
                raise ValueError(f"--{key} needs a value")
            args[key], i = argv[i + 1], i + 2
        else:
            raise ValueError(f"unknown config key {key!r}; known keys: preset, {', '.join(CONFIG)}")
    preset_name = args.pop("preset", overrides.pop("preset", None))
    if preset_name is None:                             # no preset named: the prior's own, if it has one
        preset_name = get_prior(args.get("prior", overrides.get("prior", CONFIG["prior"]))).name
        preset = PRESETS.get(preset_name, {})           # a prior of your own: the defaults, with your prior
    elif preset_name in PRESETS:
        preset = PRESETS[preset_name]
    else:
        raise ValueError(f"unknown preset {preset_name!r}; known presets: {', '.join(PRESETS)}")
    cfg = {**CONFIG, **preset, "preset": preset_name}
    for key, text in args.items():
        cfg[key] = _parse(key, text)
    for key, value in overrides.items():
        if key not in CONFIG:
            raise ValueError(f"unknown config key {key!r}; known keys: preset, {', '.join(CONFIG)}")
        cfg[key] = value
    get_prior(cfg["prior"])                             # unknown prior names list the known ones
    for key in POSITIVE:
        if not (isinstance(cfg[key], int) and cfg[key] >= 1):
            raise ValueError(f"{key} must be a positive integer; got {cfg[key]!r}")
    for key in NON_NEGATIVE:
        if not (cfg[key] >= 0 and math.isfinite(cfg[key])):
            raise ValueError(f"{key} must be a finite number >= 0; got {cfg[key]!r}")
    if not 0 <= cfg["short_fraction"] <= 1:
        raise ValueError(f"short_fraction must be in [0, 1]; got {cfg['short_fraction']}")
    if not cfg["lr"] > 0 or not 0 <= cfg["warmup"] < 1:
        raise ValueError(f"lr must be > 0 and warmup in [0, 1); got lr={cfg['lr']}, warmup={cfg['warmup']}")
    if cfg["d_model"] % cfg["head_size"]:
        raise ValueError(f"d_model ({cfg['d_model']}) must be a multiple of head_size ({cfg['head_size']})")
    if cfg["device"] not in ("auto", "cpu") and not cfg["device"].startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N]; got {cfg['device']!r}")
    cfg["out"] = cfg["out"] or os.path.join("checkpoints", f"{cfg['preset']}.pt")
    return cfg


def _parse(key, text):
    kind = type(CONFIG[key])
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        return kind(text) if kind is not float else float(text)
    except ValueError:
        raise ValueError(f"--{key} must be {kind.__name__}; got {text!r}") from None


# -----------------------------------------------------------------------------------------------
# Training
# -----------------------------------------------------------------------------------------------
ARCHITECTURE = ("d_model", "n_layers", "head_size", "pre_norm", "count_feature", "x_freq")


def architecture(cfg):
    """The config keys that shape the network: what a checkpoint's model.config records."""
    return {k: cfg[k] for k in ARCHITECTURE}


def build_model(cfg):
    """The fresh network a resolved config describes (its prior's bucket borders, seeded)."""
    return make_model(cfg["prior"], n_buckets=cfg["n_buckets"], seed=cfg["seed"], **architecture(cfg))


def train(cfg=None, **overrides):
    """Train a network for cfg (a resolved config, or overrides of the defaults). Returns (model, summary)."""
    cfg = resolve_config(**overrides) if cfg is None else {**cfg, **overrides}
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = cfg["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world > 1:
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    main_process = rank == 0
    prior = get_prior(cfg["prior"])

    torch.manual_seed(cfg["seed"])
    model = build_model(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    data = torch.Generator().manual_seed(cfg["seed"] * 1000 + rank)    # each rank its own endless stream
    start, history = 0, []
    if cfg["resume"]:
        ckpt = load_checkpoint(cfg["out"], prior=cfg["prior"])
        if ckpt["config"] != model.config:
            raise ValueError(f"--resume: {cfg['out']!r} has architecture {ckpt['config']}, this run {model.config}")
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        data.set_state(ckpt["data_rng"][rank] if rank < len(ckpt["data_rng"]) else ckpt["data_rng"][0])
        start, history = ckpt["step"], list(ckpt["history"])
        if main_process:
            print(f"resumed {cfg['out']} at step {start}")
    net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model

    cuda = device.startswith("cuda")
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if cuda else nullcontext
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp_dtype == torch.float16)

    def checkpoint(step, data_state=None, **extra):
        """Everything needed to continue exactly: weights, optimizer, step, every rank's data stream."""
        states = [data.get_state() if data_state is None else data_state]
        if world > 1:                                   # rank 0 saves every rank's data stream
            states = [None] * world
            dist.all_gather_object(states, data.get_state() if data_state is None else data_state)
        if main_process:
            save_model(model, cfg["out"], optimizer=opt.state_dict(), step=step, data_rng=states,
                       history=history, train_config=cfg, **extra)

    def evaluate(n):
        model.eval()
        gap = posterior_gap(model, prior, n_datasets=n, n_points=cfg["n_points"], seed=12345)
        model.train()
        return gap

    bar = tqdm(range(start, cfg["steps"]), initial=start, total=cfg["steps"], disable=not (main_process and cfg["progress"]),
               desc=cfg["prior"], dynamic_ncols=True)
    t0, step, loss_sum, loss_n = time.time(), start, 0.0, 0
    done, data_state = start, data.get_state()
    try:
        for step in bar:
            data_state = data.get_state()               # to redo this step exactly if it is interrupted
            lr = lr_at(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            n = cfg["short_points"] if step < cfg["short_fraction"] * cfg["steps"] else cfg["n_points"]
            x, y = prior.sample(cfg["batch_size"], n, generator=data)
            k = int(torch.randint(n, (), generator=data))
            q_end = n if not cfg["max_queries"] else min(n, k + cfg["max_queries"])
            x, y = x.to(device), y.to(device)
            with autocast():
                logits = net(x[:, :k], y[:, :k], x[:, k:q_end])
            loss = model.nll(logits.float(), y[:, k:q_end])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            scaler.step(opt)
            scaler.update()
            done = step + 1
            loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
            if (step + 1) % 50 == 0 or step + 1 == cfg["steps"]:
                history.append((step + 1, loss_sum / loss_n))
                loss_sum, loss_n = 0.0, 0
                bar.set_postfix(loss=f"{history[-1][1]:.3f}", lr=f"{lr:.1e}",
                                steps_s=f"{(step + 1 - start) / (time.time() - t0):.1f}")
            if cfg["eval_every"] and (step + 1) % cfg["eval_every"] == 0 and step + 1 < cfg["steps"] and main_process:
                g = evaluate(cfg["eval_datasets"])
                bar.write(f"step {step + 1}: posterior gap {g['gap']:.4f} nats/query ({cfg['eval_datasets']} datasets)")
            if cfg["save_every"] and (step + 1) % cfg["save_every"] == 0:
                checkpoint(step + 1)
        step = cfg["steps"]
    except KeyboardInterrupt:
        bar.close()
        # nothing trained is lost: save the last completed step, with the data stream as it was then
        checkpoint(done, data_state if done == step else None)
        step = done
        if main_process:
            print(f"\ninterrupted at step {step}; saved {cfg['out']} (continue with --resume)")
        raise SystemExit(130)
    bar.close()
    seconds = time.time() - t0
    summary = dict(steps=cfg["steps"], seconds=seconds, steps_per_s=(cfg["steps"] - start) / max(seconds, 1e-9),
                   final_loss=history[-1][1] if history else float("nan"), checkpoint=cfg["out"])
    if main_process:
        summary["gap"] = evaluate(cfg["final_eval_datasets"])
    checkpoint(cfg["steps"], summary=_plain(summary))
    if world > 1:
        dist.destroy_process_group()
    return model, summary


def _plain(d):
    """Only plain values in a checkpoint (weights_only loading): dict keys become strings."""
    if isinstance(d, dict):
        return {str(k): _plain(v) for k, v in d.items()}
    return d


def report(cfg, summary):
    g = summary["gap"]
    sizes = sorted(g["per_context"])
    show = sorted({sizes[0], 1, 5, 10, 20, 40, 80, sizes[-1]} & set(sizes))
    print(f"trained {cfg['prior']} ({cfg['preset']} preset): {summary['steps']} steps in {summary['seconds']:.0f} s "
          f"({summary['steps_per_s']:.1f} steps/s), final training loss {summary['final_loss']:.3f}")
    print(f"posterior gap (NLL_network - NLL_exact, nats per query, {cfg['final_eval_datasets']} datasets, "
          f"context sizes 0…{sizes[-1]}): {g['gap']:.4f}")
    print("  by context size: " + ", ".join(f"k={k}: {g['per_context'][k]:.4f}" for k in show))
    if g["head"]:
        print(f"  of which the {cfg['n_buckets']}-bucket output head alone costs {g['head']:.4f} "
              "(exact posterior put on the network's buckets)")
    print(f"checkpoint: {summary['checkpoint']}")


def main(argv):
    try:
        cfg = resolve_config(argv)
    except ValueError as e:
        raise SystemExit(f"train.py: {e}")
    if int(os.environ.get("RANK", 0)) == 0:
        print("config: " + " ".join(f"{k}={v}" for k, v in cfg.items()))
    try:
        _, summary = train(cfg)
    except ValueError as e:                              # e.g. --resume with another prior's checkpoint
        raise SystemExit(f"train.py: {e}")
    if int(os.environ.get("RANK", 0)) == 0:
        report(cfg, summary)


if __name__ == "__main__":
    main(sys.argv[1:])
