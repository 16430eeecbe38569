"""Train a RoPE transformer with GrowLength: short sequences first, longer ones later.

    python train.py --schedule 128,256,512,1024                  # tiny model, Shakespeare, 4 min
    python train.py --schedule 1024                              # the fixed-length baseline
    torchrun --nproc_per_node=8 train.py --preset pythia-160m --tokenizer gpt2 --data DIR ...

Every step, in order: schedule (stage, batch, LR from progress) -> train -> log -> eval ->
checkpoint. Progress is the share of the budget used (wallclock or tokens, schedule.py); the
clock counts training only: eval, checkpoints and compile warm-up are outside it.
"""
import argparse
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

import data as datalib
import schedule as sched
from model import ATTN_BACKENDS, GPT, PRESET_LR, PRESETS, ROPE_SWITCHES, GPTConfig, make_config


class UserError(Exception):
    """Something the user can fix (a flag, a file); reported as one line, exit code 2."""


USER_ERRORS = (UserError, sched.ScheduleError, datalib.DataError)


@dataclass
class TrainConfig:
    schedule: str = "128,256,512,1024"
    ratios: Optional[str] = None
    budget: Optional[str] = None
    max_tokens: Optional[int] = None
    tokens_per_step: int = 8192
    micro_batch_tokens: Optional[int] = None
    preset: str = "tiny"
    data: str = "shakespeare"
    tokenizer: str = "byte"
    lr: Optional[float] = None
    min_lr_ratio: float = 0.1
    warmup: float = 0.01
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_lengths: Optional[str] = None
    eval_tokens: int = 32768
    eval_interval: float = 60.0
    log_interval: float = 10.0
    ckpt_interval: float = 300.0
    out: Optional[str] = None
    resume: Optional[str] = None
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    attn: Optional[str] = None
    seed: int = 1337
    sample_tokens: int = 300
    stop_at_step: Optional[int] = None
    rope_switch: str = "none"


DEFAULT_BUDGET = "4m"   # with evals and start-up, the default run fits in 5 minutes on 2 CPU cores
# Changing these on --resume would make a different run, not a continuation of this one.
FIXED_ON_RESUME = ("schedule", "ratios", "tokens_per_step", "preset", "data", "tokenizer", "rope_switch")
JUMP_K = 5   # steps averaged on each side of a stage switch for the loss jump (schedule.loss_jumps)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (not the usage block) and exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser(with_defaults=True) -> argparse.ArgumentParser:
    d = TrainConfig() if with_defaults else None
    dflt = (lambda name: getattr(d, name)) if with_defaults else (lambda name: argparse.SUPPRESS)
    p = OneLineParser(description=__doc__.split("\n\n")[0],
                                argument_default=None if with_defaults else argparse.SUPPRESS)
    a = p.add_argument
    a("--schedule", default=dflt("schedule"), help="stage lengths, strictly increasing (default %(default)s)")
    a("--ratios", default=dflt("ratios"), help="share of the budget per stage, e.g. 1,1,2,4 (default: equal)")
    a("--budget", default=dflt("budget"), help=f"training wallclock, e.g. 90s, 5m, 1h (default {DEFAULT_BUDGET} "
      "unless --max-tokens is given); eval and checkpoints do not count")
    a("--max-tokens", type=int, default=dflt("max_tokens"), help="token budget: the paper's equal-tokens runs")
    a("--tokens-per-step", type=int, default=dflt("tokens_per_step"),
      help="tokens per optimizer step, constant across stages; batch = this // seq_len (default %(default)s)")
    a("--micro-batch-tokens", type=int, default=dflt("micro_batch_tokens"),
      help="tokens per forward/backward (gradient accumulation above it); default: the whole step")
    a("--preset", default=dflt("preset"), choices=list(PRESETS), help="model size (default %(default)s)")
    a("--data", default=dflt("data"), help="'shakespeare', a prepared folder, or a text file/folder")
    a("--tokenizer", default=dflt("tokenizer"), choices=datalib.TOKENIZERS, help="(default %(default)s)")
    a("--lr", type=float, default=dflt("lr"), help="peak learning rate (default: the preset's)")
    a("--min-lr-ratio", type=float, default=dflt("min_lr_ratio"), help="cosine floor as a share of --lr")
    a("--warmup", type=float, default=dflt("warmup"), help="LR warmup as a share of the budget")
    a("--weight-decay", type=float, default=dflt("weight_decay"))
    a("--grad-clip", type=float, default=dflt("grad_clip"))
    a("--eval-lengths", default=dflt("eval_lengths"),
      help="context lengths to evaluate (default: each stage length and twice the last)")
    a("--eval-tokens", type=int, default=dflt("eval_tokens"), help="validation tokens per eval length")
    a("--eval-interval", type=float, default=dflt("eval_interval"), help="seconds of training between evals")
    a("--log-interval", type=float, default=dflt("log_interval"), help="seconds of training between log lines (0: every step)")
    a("--ckpt-interval", type=float, default=dflt("ckpt_interval"), help="seconds of training between checkpoints")
    a("--out", default=dflt("out"), help="run folder (default runs/<timestamp>)")
    a("--resume", default=dflt("resume"), help="continue the run in this folder")
    a("--device", default=dflt("device"), choices=["auto", "cpu", "cuda", "mps"])
    a("--dtype", default=dflt("dtype"), choices=["auto", "float32", "bfloat16"],
      help="autocast dtype (auto: bfloat16 on CUDA, float32 elsewhere)")
    a("--compile", action="store_true", default=dflt("compile"), help="torch.compile; every stage length compiles before the clock starts")
    a("--attn", default=dflt("attn"), choices=ATTN_BACKENDS, help="attention backend (default: triton on CUDA, sdpa elsewhere)")
    a("--seed", type=int, default=dflt("seed"))
    a("--sample-tokens", type=int, default=dflt("sample_tokens"), help="tokens of text to print at the end (0: none)")
    a("--stop-at-step", type=int, default=dflt("stop_at_step"),
      help="stop after this step as if interrupted: checkpoint and exit (to split a run or test resume)")
    a("--rope-switch", default=dflt("rope_switch"), choices=ROPE_SWITCHES,
      help="RoPE at every stage change: none (positions extrapolate, the paper), pi, ntk or yarn (default %(default)s)")
    return p


def parse_config(argv=None):
    """-> (config, names of the flags given explicitly); on --resume the saved config is the base."""
    args = build_parser().parse_args(argv)
    explicit = set(vars(build_parser(with_defaults=False).parse_args(argv)))
    return TrainConfig(**vars(args)), explicit


# ----------------------------------------------------------------------------- set-up helpers

def setup_distributed():
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; a plain `python train.py` is a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world


def pick_device(name: str, local_rank: int) -> str:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else \
            "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available")
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: MPS is not available")
    return name


def pick_dtype(name: str, device: str):
    if name == "auto":
        name = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
    return getattr(torch, name)


def parse_lengths(text: Optional[str], schedule):
    if text is None:
        return list(schedule) + [2 * schedule[-1]]
    try:
        lengths = sorted({int(x) for x in text.split(",")})
    except ValueError:
        raise UserError(f"--eval-lengths {text!r}: expected comma-separated lengths") from None
    if not lengths or lengths[0] <= 0:
        raise UserError(f"--eval-lengths {text!r}: lengths must be positive")
    return lengths


def micro_batch(batch: int, seq_len: int, micro_tokens: Optional[int]) -> int:
    """Largest divisor of `batch` whose tokens fit in micro_tokens: equal-size micro-batches,
    so each stage has one shape (one compile) and every sequence weighs the same."""
    cap = batch if micro_tokens is None else max(1, micro_tokens // seq_len)
    return max(m for m in range(1, batch + 1) if batch % m == 0 and m <= cap)


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: Path, state: dict):
    """All or nothing (data.atomic_write): a crash or a full disk mid-write keeps the old one."""
    with datalib.atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(folder: str) -> dict:
    path = Path(folder) / "ckpt.pt"
    if not path.is_file():
        raise UserError(f"{folder}: no checkpoint (ckpt.pt) in that folder")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, unpickling error: all the same to the user
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "growlength-1":
        raise UserError(f"{path}: not a growlength checkpoint")
    return ckpt


def merge_resumed(cfg: TrainConfig, explicit: set, ckpt: dict) -> TrainConfig:
    saved = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in {f.name for f in fields(TrainConfig)}})
    for name in sorted(explicit & set(FIXED_ON_RESUME)):
        if getattr(cfg, name) != getattr(saved, name):
            raise UserError(f"--resume: --{name.replace('_', '-')} {getattr(cfg, name)} differs from the "
                            f"checkpoint's {getattr(saved, name)}; resuming cannot change it")
    for name in explicit:
        setattr(saved, name, getattr(cfg, name))
    # Flags about this invocation, not the run: never inherited from the checkpoint.
    saved.resume, saved.out, saved.stop_at_step = cfg.resume, cfg.resume, cfg.stop_at_step
    return saved


class Metrics:
    """metrics.jsonl: one JSON record a line, appended and flushed (a crash loses at most one)."""

    def __init__(self, path: Optional[Path]):
        self.file = open(path, "a") if path else None

    def write(self, kind: str, **record):
        if self.file:
            self.file.write(json.dumps({"kind": kind, **record}) + "\n")
            self.file.flush()


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(model, data, lengths, eval_tokens, device, autocast):
    """Mean validation loss (nats/token) at each context length, on the same fixed windows every time."""
    model.eval()
    out = {}
    for T in lengths:
        total, count = 0.0, 0
        for x, y in data.eval_windows(T, eval_tokens, batch_size=max(1, 16384 // T), device=device):
            with autocast:
                _, loss = model(x, y)
            total, count = total + loss.item() * x.numel(), count + x.numel()
        out[str(T)] = round(total / count, 5)
    model.train()
    return out


# ----------------------------------------------------------------------------- main

def run(argv=None) -> int:
    cfg, explicit = parse_config(argv)
    rank, local_rank, world = setup_distributed()
    master = rank == 0
    ckpt = None
    if cfg.resume:
        ckpt = load_checkpoint(cfg.resume)
        cfg = merge_resumed(cfg, explicit, ckpt)
    if cfg.budget is None and cfg.max_tokens is None:
        cfg.budget = DEFAULT_BUDGET
    device = pick_device(cfg.device, local_rank)
    dtype = pick_dtype(cfg.dtype, device)
    cfg.attn = cfg.attn or ("triton" if device.startswith("cuda") else "sdpa")
    if cfg.attn == "triton" and not device.startswith("cuda") and os.environ.get("TRITON_INTERPRET") != "1":
        raise UserError("--attn triton needs a CUDA device (or TRITON_INTERPRET=1 to run the kernel slowly on CPU)")

    # --- the plan: stages, batch sizes, budget (all validated before anything is written)
    lengths = sched.parse_schedule(cfg.schedule)
    ratios = sched.parse_ratios(cfg.ratios, len(lengths))
    budget_s = sched.parse_duration(cfg.budget) if cfg.budget is not None else None
    plan = sched.Plan.make(lengths, ratios, cfg.tokens_per_step, budget_s, cfg.max_tokens)
    for st in plan.stages:
        if st.batch_size % world:
            raise UserError(f"stage length {st.seq_len}: batch {st.batch_size} does not split over {world} ranks")
    eval_lengths = parse_lengths(cfg.eval_lengths, lengths)

    out = Path(cfg.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    if not cfg.resume and (out / "ckpt.pt").exists():
        raise UserError(f"--out {out} already holds a run; use --resume {out} or another --out")

    # --- data (rank 0 prepares the corpus on first use; the others wait, then find it prepared)
    if master:
        datalib.resolve(cfg.data, cfg.tokenizer)
    if world > 1:
        dist.barrier()
    folder = datalib.resolve(cfg.data, cfg.tokenizer)
    data = datalib.TokenData(folder)
    if data.tokenizer != cfg.tokenizer:
        raise UserError(f"{folder} was prepared with the {data.tokenizer} tokenizer, not {cfg.tokenizer}")

    # --- model and optimizer
    torch.manual_seed(cfg.seed)        # same init on every rank (DDP also broadcasts rank 0's)
    vocab = 128 * math.ceil(data.vocab_size / 128)  # pad the head: 50257 -> 50304, as Pythia
    mcfg = make_config(cfg.preset, vocab_size=vocab, attn=cfg.attn, rope_switch=cfg.rope_switch)
    saved = GPTConfig(**ckpt["model_config"]) if ckpt is not None else None   # older ones: RoPE fields default
    if saved is not None:   # continue with the RoPE scaling the checkpoint's stage had reached
        mcfg.rope_orig_len, mcfg.rope_scale = saved.rope_orig_len, saved.rope_scale
    if saved is not None and saved.shape() != mcfg.shape():
        diff = [k for k in mcfg.shape() if saved.shape()[k] != mcfg.shape()[k]]
        raise UserError(f"--resume: checkpoint model differs in {', '.join(diff)}; cannot continue it with this model")
    model = GPT(mcfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]       # matrices decay; biases, norms don't
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    max_lr = cfg.lr or PRESET_LR[cfg.preset]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=max_lr, betas=(0.9, 0.95),
                            fused=device == "cpu" or device.startswith("cuda"))  # one kernel: ~10% a step on CPU
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)   # each rank draws its own windows
    elapsed, tokens, step = 0.0, 0, 0
    stage_stats = {}
    step_losses = []   # [seq_len, loss] per step, for the loss jump at each switch
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"--resume: checkpoint weights do not fit the model ({str(e).splitlines()[0]})") from None
        st = ckpt["state"]
        elapsed, tokens, step, stage_stats = st["elapsed_s"], st["tokens"], st["step"], st["stage_stats"]
        step_losses = st.get("step_losses", [])
        gen_states = ckpt["rng"]["data"]
        if len(gen_states) == world:        # same world size: continue every rank's stream exactly
            gen.set_state(gen_states[rank])
        else:
            gen.manual_seed(cfg.seed * 1000 + rank + 7919 * step)
        torch.set_rng_state(ckpt["rng"]["torch"])
    model.grow_rope(max(lengths + eval_lengths))
    train_model = torch.compile(model, dynamic=False) if cfg.compile else model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        train_model = DistributedDataParallel(train_model, device_ids=[local_rank] if device.startswith("cuda") else None)
    autocast = torch.autocast(device.split(":")[0], dtype=dtype) if dtype != torch.float32 else nullcontext()

    # --- say what will happen
    if master:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--out {out}: cannot create the folder ({e.strerror})") from None
    metrics = Metrics(out / "metrics.jsonl" if master else None)
    if master:
        print(f"device {device} ({world} rank{'s' if world > 1 else ''}) | dtype {str(dtype)[6:]} | attn {cfg.attn} | "
              f"{cfg.preset}: {model.num_params() / 1e6:.2f}M params | data {folder} "
              f"({data.meta['train_tokens']:,} train tokens, {data.tokenizer})")
        print("config " + json.dumps(asdict(cfg)))
        print(plan.table())
        if ckpt is None:
            metrics.write("config", **asdict(cfg), model=mcfg.shape(), params=model.num_params(),
                          resolved_device=device, world_size=world)
        else:
            print(f"resuming at step {step}: {elapsed:.1f}s trained, {tokens:,} tokens")

    # Compile / autotune every stage length now, outside the budget (modded-nanogpt does the same).
    if cfg.compile or device.startswith("cuda"):
        warm = torch.Generator().manual_seed(0)
        for st in plan.stages:
            mb = micro_batch(st.batch_size // world, st.seq_len, cfg.micro_batch_tokens)
            x = torch.randint(vocab, (mb, st.seq_len + 1), generator=warm).to(device)
            with autocast:
                _, loss = train_model(x[:, :-1], x[:, 1:])
            loss.backward()
        model.zero_grad(set_to_none=True)

    # SIGINT/SIGTERM: finish the step, checkpoint, exit 0. A second Ctrl-C kills as usual.
    stop_signal = []

    def on_signal(signum, _frame):
        stop_signal.append(signum)
        signal.signal(signum, signal.SIG_DFL)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)

    clock = sched.Clock(offset_s=elapsed)
    sync = (lambda: torch.cuda.synchronize()) if device.startswith("cuda") else (lambda: None)

    def checkpoint():
        if master:
            state = {"elapsed_s": clock.elapsed(), "tokens": tokens, "step": step, "stage_stats": stage_stats,
                     "step_losses": step_losses}
            save_checkpoint(out / "ckpt.pt", {
                "format": "growlength-1", "config": asdict(cfg), "model_config": mcfg.shape(),
                "model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
                "rng": {"data": all_gen_states, "torch": torch.get_rng_state()}})

    evals_at = {}   # step -> val losses: evaluated once per point in training, whatever the reasons

    def do_eval(reason):
        if master:
            fresh = step not in evals_at
            if fresh:
                evals_at[step] = evaluate(model, data, eval_lengths, cfg.eval_tokens, device, autocast)
            losses = evals_at[step]
            metrics.write("eval", step=step, elapsed_s=round(clock.elapsed(), 3), tokens=tokens, reason=reason, loss=losses)
            if fresh:   # a second reason at the same step gets its record, not a second line
                print(f"eval @ {clock.elapsed():7.1f}s step {step:5d} ({reason}): " +
                      "  ".join(f"T={k} {v:.4f}" for k, v in losses.items()))
            return losses

    def rank0(value: float) -> float:
        """Every rank takes rank 0's reading: one clock decides stages, evals and checkpoints."""
        if world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(t, src=0)
        return t.item()

    def any_rank(flag: bool) -> bool:
        if world == 1:
            return flag
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    stage_idx = None
    last_log = last_eval = last_ckpt = elapsed
    log_tokens, log_time, log_losses = tokens, elapsed, []
    all_gen_states = [gen.get_state()]
    if ckpt is None:
        do_eval("start")
    clock.start()
    while True:
        # 1. schedule: rank 0's clock decides for every rank, so stages never split.
        sync()
        progress = rank0(plan.progress(clock.elapsed(), tokens))
        stop = any_rank(bool(stop_signal) or (cfg.stop_at_step is not None and step >= cfg.stop_at_step))
        if progress >= 1.0 or stop:
            break
        i = plan.stage_index(progress)
        stage = plan.stages[i]
        if i != stage_idx:
            clock.pause()
            metrics.write("stage", step=step, elapsed_s=round(clock.elapsed(), 3), tokens=tokens,
                          stage=i + 1, seq_len=stage.seq_len, batch_size=stage.batch_size)
            if master:
                print(f"--- stage {i + 1}/{len(plan.stages)}: T={stage.seq_len}, batch {stage.batch_size} "
                      f"x {stage.seq_len} = {cfg.tokens_per_step} tokens/step")
            model.switch_rope(lengths[0], stage.seq_len)   # before the eval: it sees the new tables
            if stage_idx is not None:
                do_eval(f"stage {i + 1}")
                last_eval = clock.elapsed()
            stage_idx = i
            clock.start()
        lr = sched.lr_at(progress, max_lr, cfg.warmup, cfg.min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = lr

        # 2. train: one optimizer step of tokens_per_step tokens, split over ranks and micro-batches.
        t0 = clock.elapsed()
        B = stage.batch_size // world
        mb = micro_batch(B, stage.seq_len, cfg.micro_batch_tokens)
        n_micro = B // mb
        loss_sum = torch.zeros((), device=device)
        for m in range(n_micro):
            x, y = data.get_batch("train", mb, stage.seq_len, generator=gen, device=device)
            no_sync = train_model.no_sync() if world > 1 and m < n_micro - 1 else nullcontext()
            with no_sync, autocast:
                _, loss = train_model(x, y)
            (loss / n_micro).backward()
            loss_sum += loss.detach()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        loss_t = loss_sum / n_micro
        if world > 1:
            dist.all_reduce(loss_t)            # SUM, then divide: gloo has no AVG
            loss_t /= world
        loss_val = loss_t.item()
        if not math.isfinite(loss_val):
            if master:
                print(f"error: loss is {loss_val} at step {step + 1} (T={stage.seq_len}, lr {lr:.2e}); "
                      f"stopping. The last good checkpoint in {out} is kept.", file=sys.stderr)
            return 3
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens += cfg.tokens_per_step
        sync()
        now = rank0(clock.elapsed())
        s = stage_stats.setdefault(str(stage.seq_len), {"steps": 0, "tokens": 0, "seconds": 0.0})
        s["steps"], s["tokens"], s["seconds"] = s["steps"] + 1, s["tokens"] + cfg.tokens_per_step, s["seconds"] + now - t0
        log_losses.append(loss_val)
        step_losses.append([stage.seq_len, loss_val])

        # 3. log
        if master and now - last_log >= cfg.log_interval:
            tps = (tokens - log_tokens) / max(now - log_time, 1e-9)
            metrics.write("train", step=step, elapsed_s=round(now, 3), tokens=tokens, seq_len=stage.seq_len,
                          batch_size=stage.batch_size, loss=round(sum(log_losses) / len(log_losses), 6),
                          lr=lr, tokens_per_s=round(tps, 1))
            of = f"{budget_s:.0f}s" if budget_s else f"{cfg.max_tokens / 1e6:.2f}M tok"
            print(f"stage {i + 1}/{len(plan.stages)} T={stage.seq_len:5d} B={stage.batch_size:4d} | step {step:5d} | "
                  f"loss {sum(log_losses) / len(log_losses):.4f} | lr {lr:.2e} | {tps / 1e3:6.1f}k tok/s | "
                  f"{now:6.1f}s {tokens / 1e6:.2f}M tok / {of}")
            last_log, log_tokens, log_time, log_losses = now, tokens, now, []

        # 4. eval and 5. checkpoint, with the clock paused
        if now - last_eval >= cfg.eval_interval or now - last_ckpt >= cfg.ckpt_interval:
            clock.pause()
            if now - last_eval >= cfg.eval_interval:
                do_eval("interval")
                last_eval = now
            if now - last_ckpt >= cfg.ckpt_interval:
                all_gen_states = gather_generators(gen, world)
                checkpoint()
                last_ckpt = now
            clock.start()

    clock.pause()
    all_gen_states = gather_generators(gen, world)
    if stop:
        checkpoint()
        if master:
            why = f"signal {signal.Signals(stop_signal[0]).name}" if stop_signal else f"--stop-at-step {cfg.stop_at_step}"
            print(f"stopped ({why}) at step {step} after {clock.elapsed():.1f}s of training; checkpoint in {out}.\n"
                  f"resume with: python train.py --resume {out}")
        return 0
    final = do_eval("end")
    checkpoint()
    jumps = sched.loss_jumps([T for T, _ in step_losses], [loss for _, loss in step_losses], JUMP_K)
    for j in jumps:
        metrics.write("jump", **j)
    if master:
        print_summary(stage_stats, final, clock.elapsed(), tokens, step, out, jumps)
        if cfg.sample_tokens > 0:
            tok = datalib.get_tokenizer(cfg.tokenizer)
            torch.manual_seed(cfg.seed)
            prompt = torch.tensor([tok.encode("\n")], device=device)
            with autocast:
                ids = model.eval().generate(prompt, cfg.sample_tokens, temperature=0.8, top_k=200)
            print("--- sample ---\n" + tok.decode(ids[0].tolist()))
    return 0


def gather_generators(gen, world):
    """Every rank's data-RNG state, so a resumed run draws exactly the windows it would have."""
    if world == 1:
        return [gen.get_state()]
    states = [None] * world
    dist.all_gather_object(states, gen.get_state())
    return states


def print_summary(stage_stats, final, elapsed, tokens, step, out, jumps=()):
    print(f"done: {step} steps, {tokens:,} tokens, {elapsed:.1f}s of training. Per stage:")
    print("  seq_len   steps      tokens   train_s   tokens/s")
    for T, s in stage_stats.items():
        print(f"  {int(T):7d} {s['steps']:7d} {s['tokens']:11,} {s['seconds']:9.1f} {s['tokens'] / max(s['seconds'], 1e-9):10.0f}")
    for j in jumps:
        print(f"  loss jump {j['from']} -> {j['to']} at step {j['step']}: " +
              (f"{j['jump']:+.4f} (mean of {j['k']} steps after {j['after']:.4f}, before {j['before']:.4f})"
               if j["jump"] is not None else f"not measured (fewer than {j['k']} steps on a side)"))
    print("final val loss (nats/token): " + "  ".join(f"T={k} {v:.4f}" for k, v in final.items()))
    print(f"wrote {out / 'ckpt.pt'} and {out / 'metrics.jsonl'}")


def main(argv=None) -> int:
    try:
        code = run(argv)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
