"""Train a RoPE transformer with GrowLength: short sequences first, longer ones later.

    python train.py --schedule 128,256,512,1024                  # tiny model, Shakespeare, 4 min
    python train.py --schedule 1024                              # the fixed-length baseline
    torchrun --nproc_per_node=8 train.py --preset pythia-160m --tokenizer gpt2 --data DIR ...

Every step, in order: schedule (stage, batch, LR from progress) -> train -> log -> eval ->
checkpoint. Progress is the share of the budget used (wallclock or tokens, schedule.py); the
clock counts training only: eval, checkpoints and compile warm-up are outside it.

The file reads top to bottom: configuration (flags -> TrainConfig), the run's changing state
(TrainState, which is what a checkpoint holds), distributed helpers, building a run,
evaluation and logging, then `train()` and `train_loop()`, the loop itself.
"""
import argparse
import json
import fcntl
import math
import os
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import cli

if __name__ == "__main__":
    cli.quit_on_signals()      # Ctrl-C while torch imports (seconds): one line, exit 130

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import data as datalib  # noqa: E402
import export  # noqa: E402
import schedule as sched  # noqa: E402
from cli import OneLineParser  # noqa: E402
from kernels import interpreting  # noqa: E402
from model import (ATTN_BACKENDS, GPT, PRESET_LR, PRESETS, ROPE_SWITCHES, GPTConfig,  # noqa: E402
                   flops_per_token, make_config, peak_flops)


class UserError(Exception):
    """Something the user can fix (a flag, a file); reported as one line, exit code 2."""


class RankError(UserError):
    """A user error on one rank that no collective can report for it: that rank prints it."""


USER_ERRORS = (UserError, sched.ScheduleError, datalib.DataError)


# ----------------------------------------------------------------------------- configuration

@dataclass
class TrainConfig:
    """Every flag of train.py; the defaults here are the only ones (the parser has none)."""
    schedule: str = "128,256,512,1024"
    ratios: Optional[str] = None
    budget: Optional[str] = None
    max_tokens: Optional[int] = None
    tokens_per_step: int = 8192
    micro_batch_tokens: object = "auto"        # "auto" or a number of tokens
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
    init_from: Optional[str] = None            # a local Hugging Face GPT-NeoX folder to start from
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
EVAL_BATCH_TOKENS = 16384   # tokens per evaluation forward, whatever --eval-tokens says
JUMP_K = 5   # steps averaged on each side of a stage switch for the loss jump (schedule.loss_jumps)
CKPT_FORMAT = "growlength-2"
# Exit codes: 2 a user error, 3 a non-finite loss, 4 out of memory; 130/143 Ctrl-C/SIGTERM
# before training started (cli.stop). Once training, a signal checkpoints and exits 0.
EXIT_USER, EXIT_NAN, EXIT_OOM = 2, 3, 4


def auto_or_tokens(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of tokens, not {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """Flags only: argparse fills in nothing (SUPPRESS), so the parsed namespace holds exactly
    the flags the user gave -- which --resume needs -- and TrainConfig supplies the rest."""
    d = TrainConfig()
    p = OneLineParser(description=__doc__.split("\n\n")[0], argument_default=argparse.SUPPRESS)
    a = p.add_argument
    a("--schedule", help=f"stage lengths, strictly increasing (default {d.schedule})")
    a("--ratios", help="share of the budget per stage, e.g. 1,1,2,4 (default: equal)")
    a("--budget", help=f"training wallclock, e.g. 90s, 5m, 1h (default {DEFAULT_BUDGET} "
      "unless --max-tokens is given); eval and checkpoints do not count")
    a("--max-tokens", type=int, help="token budget: the paper's equal-tokens runs")
    a("--tokens-per-step", type=int,
      help=f"tokens per optimizer step, constant across stages; batch = this // seq_len (default {d.tokens_per_step})")
    a("--micro-batch-tokens", type=auto_or_tokens,
      help="tokens per forward/backward (gradient accumulation above it); default auto: on a GPU the "
      "largest that fits, found per stage before the clock starts; elsewhere the whole step")
    a("--preset", choices=list(PRESETS), help=f"model size (default {d.preset})")
    a("--data", help=f"'shakespeare' or 'python-stdlib' (built in), a prepared folder, or a text/jsonl "
      f"file or folder, prepared on first use (default {d.data})")
    a("--tokenizer", choices=datalib.TOKENIZERS, help=f"(default {d.tokenizer})")
    a("--lr", type=float, help="peak learning rate (default: the preset's)")
    a("--min-lr-ratio", type=float, help=f"cosine floor as a share of --lr (default {d.min_lr_ratio})")
    a("--warmup", type=float, help=f"LR warmup as a share of the budget (default {d.warmup})")
    a("--weight-decay", type=float, help=f"(default {d.weight_decay})")
    a("--grad-clip", type=float, help=f"(default {d.grad_clip}; 0: off)")
    a("--eval-lengths", help="context lengths to evaluate (default: each stage length and twice the last)")
    a("--eval-tokens", type=int, help=f"validation tokens per eval length (default {d.eval_tokens})")
    a("--eval-interval", type=float, help=f"seconds of training between evals (default {d.eval_interval:g})")
    a("--log-interval", type=float, help=f"seconds of training between log lines (0: every step; default {d.log_interval:g})")
    a("--ckpt-interval", type=float, help=f"seconds of training between checkpoints (default {d.ckpt_interval:g})")
    a("--out", help="run folder (default runs/<timestamp>)")
    a("--resume", help="continue the run in this folder")
    a("--init-from", metavar="DIR", help="start from the weights of a local Hugging Face GPT-NeoX folder "
      "(config.json + safetensors/bin) of the --preset's shape; schedule, optimizer and clock start fresh")
    a("--device", choices=["auto", "cpu", "cuda", "mps"], help="(default auto: cuda, mps, cpu)")
    a("--dtype", choices=["auto", "float32", "bfloat16"], help="autocast dtype (auto: bfloat16 on CUDA, float32 elsewhere)")
    a("--compile", action="store_true", help="torch.compile; every stage length compiles before the clock starts")
    a("--attn", choices=ATTN_BACKENDS, help="attention backend (default: triton on CUDA, sdpa elsewhere)")
    a("--seed", type=int, help=f"(default {d.seed})")
    a("--sample-tokens", type=int, help=f"tokens of text to print at the end (0: none; default {d.sample_tokens})")
    a("--stop-at-step", type=int,
      help="stop after this step as if interrupted: checkpoint and exit (to split a run or test resume)")
    a("--rope-switch", choices=ROPE_SWITCHES,
      help=f"RoPE at every stage change: none (positions extrapolate, the paper), pi, ntk or yarn (default {d.rope_switch})")
    return p


def parse_config(argv=None):
    """-> (config, names of the flags given explicitly); on --resume the saved config is the base."""
    given = vars(build_parser().parse_args(argv))
    return TrainConfig(**given), set(given)


def check_config(cfg: TrainConfig):
    """Flags that argparse's types let through but that would silently mean something else
    (written so that NaN fails every check: comparisons with NaN are False)."""
    checks = [
        (cfg.lr is None or (math.isfinite(cfg.lr) and cfg.lr > 0), f"--lr {cfg.lr}: must be a positive number"),
        (0.0 <= cfg.min_lr_ratio <= 1.0, f"--min-lr-ratio {cfg.min_lr_ratio}: must be in [0, 1]"),
        (0.0 <= cfg.warmup < 1.0, f"--warmup {cfg.warmup}: must be in [0, 1), a share of the budget"),
        (0.0 <= cfg.weight_decay < math.inf, f"--weight-decay {cfg.weight_decay}: must be >= 0"),
        (0.0 <= cfg.grad_clip < math.inf, f"--grad-clip {cfg.grad_clip}: must be >= 0 (0: off)"),
        (0 <= cfg.seed < 2 ** 63, f"--seed {cfg.seed}: must be in 0 .. 2**63-1"),
        (str(cfg.data).strip() != "", "--data '': give 'shakespeare', a prepared folder, or a text file/folder"),
        (cfg.eval_tokens > 0, f"--eval-tokens {cfg.eval_tokens}: must be positive"),
        (cfg.sample_tokens >= 0, f"--sample-tokens {cfg.sample_tokens}: must be >= 0"),
    ] + [(0.0 <= getattr(cfg, f"{name}_interval") < math.inf, f"--{name}-interval: must be seconds >= 0")
         for name in ("eval", "log", "ckpt")]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def check_memory(plan: sched.Plan, eval_lengths, mcfg):
    """Absurd lengths or batch sizes fail here in one line, not in an allocation that takes
    the machine down: RoPE tables (cos and sin, per layer, up to the next power of two) and
    one micro-batch of token ids, against the machine's memory."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    longest = max([st.seq_len for st in plan.stages] + eval_lengths)
    tables = 2 * 4 * int(mcfg.head_dim * mcfg.rotary_pct) * mcfg.n_layer * 2 ** math.ceil(math.log2(longest))
    ids = max(st.micro_batch * (st.seq_len + 1) for st in plan.stages) * 8 * 2     # x and y, int64
    for what, size in (("the RoPE tables for length " + str(longest), tables), ("one micro-batch of token ids", ids)):
        if size > total // 4:
            raise UserError(f"{what} would take {size / 2 ** 30:.1f} GiB of this machine's "
                            f"{total / 2 ** 30:.0f} GiB: choose shorter lengths or fewer tokens per step")


def merge_resumed(cfg: TrainConfig, explicit: set, ckpt: dict) -> TrainConfig:
    """The checkpoint's config, with the flags given now on top (a longer budget extends a run)."""
    saved = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in {f.name for f in fields(TrainConfig)}})
    for name in sorted(explicit & set(FIXED_ON_RESUME)):
        if getattr(cfg, name) != getattr(saved, name):
            raise UserError(f"--resume: --{name.replace('_', '-')} {getattr(cfg, name)} differs from the "
                            f"checkpoint's {getattr(saved, name)}; resuming cannot change it")
    if "init_from" in explicit:
        raise UserError("--init-from starts a new run from other weights; it cannot be combined with --resume")
    for name in explicit:
        setattr(saved, name, getattr(cfg, name))
    # Flags about this invocation, not the run: never inherited from the checkpoint.
    saved.resume, saved.out, saved.stop_at_step = cfg.resume, cfg.resume, cfg.stop_at_step
    return saved


# ----------------------------------------------------------------------------- the run's state

@dataclass
class TrainState:
    """What changes as a run trains, and exactly what a checkpoint's `state` holds: restoring
    it (with the weights and the optimizer) continues the run as if never stopped."""
    step: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0     # training seconds: the clock's reading, eval and checkpoints excluded
    stage_stats: dict = field(default_factory=dict)   # "seq_len" -> {"steps", "tokens", "seconds"}
    step_losses: list = field(default_factory=list)   # [seq_len, loss] per step: the loss jump at each switch
    data_rng: list = field(default_factory=list)      # every rank's data-window generator state
    torch_rng: Optional[torch.Tensor] = None          # for anything else random (sampling at the end)

    def count_step(self, seq_len: int, tokens: int, seconds: float, loss: float):
        self.step += 1
        self.step_losses.append([seq_len, loss])
        self.tokens += tokens
        s = self.stage_stats.setdefault(str(seq_len), {"steps": 0, "tokens": 0, "seconds": 0.0})
        s["steps"], s["tokens"], s["seconds"] = s["steps"] + 1, s["tokens"] + tokens, s["seconds"] + seconds


def save_checkpoint(path: Path, cfg: TrainConfig, model, opt, state: TrainState, data_fingerprint: str):
    """All or nothing (data.atomic_write): a crash or a full disk mid-write keeps the old one."""
    ckpt = {"format": CKPT_FORMAT, "config": asdict(cfg), "model_config": model.cfg.shape(),
            "model": model.state_dict(), "optimizer": opt.state_dict(), "state": asdict(state),
            "data_fingerprint": data_fingerprint}
    with datalib.atomic_write(path) as f:
        torch.save(ckpt, f)


def load_checkpoint(folder: str) -> dict:
    path = Path(folder) / "ckpt.pt"
    if not path.is_file():
        raise UserError(f"{folder}: no checkpoint (ckpt.pt) in that folder")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, unpickling error: all the same to the user
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise UserError(f"{path}: not a growlength checkpoint (format {CKPT_FORMAT})")
    missing = [k for k in ("config", "model_config", "model", "optimizer", "state") if k not in ckpt]
    try:
        ckpt["state"] = TrainState(**ckpt["state"])
    except (KeyError, TypeError):
        missing.append("state")
    if missing or not isinstance(ckpt["config"], dict) or not isinstance(ckpt["model_config"], dict):
        raise UserError(f"{path}: not a growlength checkpoint (missing or broken: {', '.join(missing) or 'config'})")
    return ckpt


# ----------------------------------------------------------------------------- distributed helpers

@dataclass(frozen=True)
class Ranks:
    """Where this process sits in a torchrun job; a plain `python train.py` is a world of one."""
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Ranks:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    try:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    except dist.DistError as e:     # no other rank can speak for this one: every rank says it
        raise RankError(f"rank {os.environ.get('RANK', '?')}: cannot join the torchrun job "
                        f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return Ranks(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world)


def from_rank0(value: float, ranks: Ranks, device) -> float:
    """Every rank takes rank 0's reading: one clock decides stages, evals and checkpoints."""
    if ranks.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.item()


def any_rank(flag: bool, ranks: Ranks, device) -> bool:
    """True on every rank if it is true on any (a signal may reach only some ranks)."""
    if ranks.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_over_ranks(t: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    if ranks.world > 1:
        dist.all_reduce(t)            # SUM, then divide: gloo has no AVG
        t /= ranks.world
    return t


def agree(ranks: Ranks, fn, *args):
    """fn(*args) on this rank (None: nothing to do here), then a collective: if it failed on any
    rank, every rank stops with the first failure, so no rank waits forever for one that quit
    and the error is printed once (by rank 0, naming the rank it came from)."""
    result, error = None, None
    try:
        result = fn(*args) if fn is not None else None
    except USER_ERRORS as e:
        error = e
    if ranks.world == 1:
        if error is not None:
            raise error
        return result
    errors = [None] * ranks.world
    dist.all_gather_object(errors, None if error is None else str(error))
    failed = [(r, msg) for r, msg in enumerate(errors) if msg is not None]
    if failed:
        r, msg = failed[0]
        raise UserError(msg if r == 0 else f"rank {r}: {msg}")
    return result


def share_from_rank0(obj, ranks: Ranks):
    """Rank 0's value of a small picklable object (the run folder's name, say) on every rank."""
    if ranks.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_generators(gen: torch.Generator, ranks: Ranks) -> list:
    """Every rank's data-RNG state, so a resumed run draws exactly the windows it would have."""
    if ranks.world == 1:
        return [gen.get_state()]
    states = [None] * ranks.world
    dist.all_gather_object(states, gen.get_state())
    return states


# ----------------------------------------------------------------------------- building a run

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


def budget_of(cfg: TrainConfig) -> Optional[str]:
    """--budget, or the default one when neither budget flag was given. Resolved here and not
    stored in the config: a checkpoint must hold what the user asked for, so that resuming
    with --max-tokens is not still capped by a default wallclock."""
    return DEFAULT_BUDGET if cfg.budget is None and cfg.max_tokens is None else cfg.budget


def make_plan(cfg: TrainConfig, world: int):
    """The stage table and eval lengths; every schedule rule is checked here, before any file is written."""
    lengths = sched.parse_schedule(cfg.schedule)
    budget = budget_of(cfg)
    budget_s = sched.parse_duration(budget) if budget is not None else None
    plan = sched.Plan.make(lengths, sched.parse_ratios(cfg.ratios, len(lengths)), cfg.tokens_per_step,
                           budget_s, cfg.max_tokens, world,
                           None if cfg.micro_batch_tokens == "auto" else cfg.micro_batch_tokens)
    return plan, sched.parse_eval_lengths(cfg.eval_lengths, lengths)


def load_data(cfg: TrainConfig, ranks: Ranks) -> datalib.TokenData:
    """Rank 0 prepares the corpus on first use; the others wait for it (agree is a collective)."""
    agree(ranks, datalib.resolve if ranks.master else None, cfg.data, cfg.tokenizer)
    return agree(ranks, open_data, cfg)


def open_data(cfg: TrainConfig) -> datalib.TokenData:
    folder = datalib.resolve(cfg.data, cfg.tokenizer)
    data = datalib.TokenData(folder)
    if data.tokenizer != cfg.tokenizer:
        raise UserError(f"{folder} was prepared with the {data.tokenizer} tokenizer, not {cfg.tokenizer}")
    return data


def build_model(cfg: TrainConfig, attn: str, vocab_size: int, device: str, ckpt: Optional[dict]):
    """The model and its AdamW; from a checkpoint when resuming (after checking its shape)."""
    torch.manual_seed(cfg.seed)        # same init on every rank (DDP also broadcasts rank 0's)
    vocab = 128 * math.ceil(vocab_size / 128)  # pad the head: 50257 -> 50304, as Pythia
    mcfg = make_config(cfg.preset, vocab_size=vocab, attn=attn, rope_switch=cfg.rope_switch)
    if ckpt is not None:
        saved = GPTConfig(**{k: v for k, v in ckpt["model_config"].items() if k in mcfg.shape()})
        # Continue with the RoPE scaling the checkpoint's stage had reached (model.switch_rope).
        mcfg.rope_orig_len, mcfg.rope_scale = saved.rope_orig_len, saved.rope_scale
        diff = [k for k in mcfg.shape() if ckpt["model_config"].get(k) != mcfg.shape()[k]]
        if diff:
            raise UserError(f"--resume: checkpoint model differs in {', '.join(diff)}; cannot continue it with this model")
    model = GPT(mcfg)
    if cfg.init_from and ckpt is None:      # weights only: a resumed run has its own
        model.load_state_dict(export.init_state(cfg.init_from, mcfg.shape(), cfg.tokenizer))
    model = model.to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]       # matrices decay; biases, norms don't
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr or PRESET_LR[cfg.preset], betas=(0.9, 0.95),
                            fused=device == "cpu" or device.startswith("cuda"))  # one kernel: ~10% a step on CPU
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"--resume: checkpoint weights do not fit the model ({str(e).splitlines()[0]})") from None
    return model, opt


def start_state(cfg: TrainConfig, ckpt: Optional[dict], ranks: Ranks):
    """(TrainState, this rank's data generator): fresh, or exactly where the checkpoint left off."""
    seed = (cfg.seed * 1000 + ranks.rank) % 2 ** 64       # each rank draws its own windows
    gen = torch.Generator().manual_seed(seed)
    if ckpt is None:
        return TrainState(), gen
    state = ckpt["state"]
    if len(state.data_rng) == ranks.world:     # same world size: continue every rank's stream exactly
        gen.set_state(state.data_rng[ranks.rank])
    else:
        gen.manual_seed((seed + 7919 * state.step) % 2 ** 64)
    if state.torch_rng is not None:
        torch.set_rng_state(state.torch_rng)
    return state, gen


def wrap_for_training(model, cfg: TrainConfig, ranks: Ranks, device: str):
    """What the loop calls: compiled and/or DDP-wrapped. `model` itself stays plain, so it is
    what gets saved (no `_orig_mod.` or `module.` prefixes) and what eval and sampling run."""
    train_model = torch.compile(model, dynamic=False) if cfg.compile else model
    if ranks.world > 1:
        from torch.nn.parallel import DistributedDataParallel
        train_model = DistributedDataParallel(train_model, device_ids=[ranks.local_rank] if device.startswith("cuda") else None)
    return train_model


class RunFolder:
    """The run's folder, owned by one live run: an exclusive flock on its `.lock` file. The
    kernel drops the lock when the process dies, so a run killed with -9 leaves none behind."""

    def __init__(self, path: Path, created: bool, fresh: bool, lock):
        # created: this run made the folder; fresh: a new run, so any metrics.jsonl in it is ours
        self.path, self.created, self.fresh, self.lock = path, created, fresh, lock

    @staticmethod
    def claim(cfg: TrainConfig, ckpt_step: Optional[int]) -> "RunFolder":
        path, created = RunFolder.make(cfg.out)
        try:
            lock = open(path / ".lock", "a+")
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"--out {path} is in use by another run (pid {(path / '.lock').read_text().strip()})") from None
        except OSError as e:
            raise UserError(f"--out {path}: cannot use the folder ({e.strerror})") from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        # A run killed while writing a checkpoint (kill -9, a second Ctrl-C) leaves its
        # temporary file (data.atomic_write), as large as the model and optimizer: the folder
        # is ours now, so no live writer owns one.
        for stale in path.glob("*.tmp[0-9]*"):
            stale.unlink(missing_ok=True)
        folder = RunFolder(path, created, ckpt_step is None, lock)
        try:
            folder.check_history(ckpt_step)
        except BaseException:
            folder.release()
            raise
        return folder

    @staticmethod
    def make(out: Optional[str]):
        """(path, created): --out as given, or a new runs/<timestamp>[-n] nobody else has."""
        try:
            if out:
                path = Path(out)
                created = not path.exists()
                path.mkdir(parents=True, exist_ok=True)
                return path, created
            stamp = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
            for n in range(1, 1000):
                path = stamp if n == 1 else Path(f"{stamp}-{n}")
                try:
                    path.mkdir(parents=True)       # exclusive: two runs in one second get two folders
                    return path, True
                except FileExistsError:
                    continue
            raise UserError(f"{stamp}: too many runs started this second")
        except OSError as e:
            raise UserError(f"--out {out}: cannot create the folder ({e.strerror})") from None

    def check_history(self, ckpt_step: Optional[int]):
        """metrics.jsonl must tell the story of the checkpoint: a fresh run needs a fresh folder,
        and a resumed one forgets the records a crash left after its checkpoint."""
        metrics, ckpt = self.path / "metrics.jsonl", self.path / "ckpt.pt"
        if ckpt_step is None and ckpt.exists():
            raise UserError(f"--out {self.path} already holds a run; use --resume {self.path} or another --out")
        if ckpt_step is None and metrics.exists():
            raise UserError(f"--out {self.path} holds a metrics.jsonl but no checkpoint (an earlier run that "
                            f"never checkpointed?): remove it or choose another --out")
        if ckpt_step is not None and metrics.is_file():
            truncate_metrics(metrics, ckpt_step)

    def release(self):
        self.lock.close()

    def discard_if_unused(self):
        """A new run that failed before its first step leaves nothing behind (its folder too,
        if it made it), so the same command, mended, can run again in the same --out."""
        self.release()
        if self.fresh:
            for name in (".lock", "metrics.jsonl"):
                (self.path / name).unlink(missing_ok=True)
        if self.created:
            try:
                self.path.rmdir()
            except OSError:
                pass


def truncate_metrics(path: Path, step: int):
    """Keep the records up to the checkpoint's step (and any whole line without one); a
    half-written last line from a crash goes too. Rewritten atomically."""
    try:
        lines = path.read_text().splitlines(keepends=True)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read it ({e})") from None
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        # jump records are written at the end from the whole run's losses: a resumed run that
        # trains on writes them anew, so they go with the other records of the old ending.
        if isinstance(record, dict) and record.get("step", 0) <= step and record.get("kind") != "jump" \
                and line.endswith("\n"):
            kept.append(line)
    if len(kept) != len(lines):
        with datalib.atomic_write(path, "w") as f:
            f.writelines(kept)


@dataclass
class Run:
    """The fixed parts of a run, built once by `build()`; what changes lives in TrainState."""
    cfg: TrainConfig
    ranks: Ranks
    device: str
    dtype: torch.dtype
    autocast: object
    plan: sched.Plan
    eval_lengths: list
    data: datalib.TokenData
    model: GPT
    train_model: torch.nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    out: Path
    metrics: "Metrics"
    wall: "WallTime"
    peak_flops: Optional[float]     # the device's bf16 peak, for MFU; None where unknown

    def sync(self):
        """CUDA runs ahead of Python: wait for it before reading the clock."""
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def resolved_config(self) -> dict:
        """The config with the defaults this run chose filled in: what the logs record."""
        return {**asdict(self.cfg), "budget": budget_of(self.cfg), "attn": self.model.cfg.attn}

    def mfu(self, tokens_per_s: float, seq_len: int) -> Optional[float]:
        if self.peak_flops is None:
            return None
        return tokens_per_s * flops_per_token(self.model.cfg, seq_len) / (self.peak_flops * self.ranks.world)


def build(cfg: TrainConfig, ranks: Ranks, ckpt: Optional[dict], wall: "WallTime"):
    """Everything a run needs -> (Run, TrainState, RunFolder). Every check that can fail runs
    before the run folder is claimed, so a mistake leaves nothing on disk."""
    check_config(cfg)
    device = pick_device(cfg.device, ranks.local_rank)
    dtype = pick_dtype(cfg.dtype, device)
    # The default backend is chosen for this device, not saved: a GPU run can resume on a CPU.
    attn = cfg.attn or ("triton" if device.startswith("cuda") else "sdpa")
    if attn == "triton" and not device.startswith("cuda") and not interpreting():
        raise UserError("--attn triton needs a CUDA device (or TRITON_INTERPRET=1 to run the kernel slowly on CPU)")
    plan, eval_lengths = make_plan(cfg, ranks.world)
    check_memory(plan, eval_lengths, make_config(cfg.preset))
    data = load_data(cfg, ranks)
    check_lengths(data, plan, eval_lengths)
    if ckpt is not None and ckpt.get("data_fingerprint") not in (None, data.fingerprint):
        raise UserError(f"--resume {cfg.resume}: the data changed since the checkpoint (fingerprint "
                        f"{ckpt['data_fingerprint']} -> {data.fingerprint}); resuming would train on other tokens")
    model, opt = build_model(cfg, attn, data.vocab_size, device, ckpt)
    state, gen = start_state(cfg, ckpt, ranks)
    model.grow_rope(max([st.seq_len for st in plan.stages] + eval_lengths))
    folder = agree(ranks, RunFolder.claim if ranks.master else None, cfg, ckpt["state"].step if ckpt else None)
    out = Path(share_from_rank0(str(folder.path) if folder else None, ranks))
    autocast = torch.autocast(device.split(":")[0], dtype=dtype) if dtype != torch.float32 else nullcontext()
    try:
        run = Run(cfg, ranks, device, dtype, autocast, plan, eval_lengths, data, model,
                  wrap_for_training(model, cfg, ranks, device), opt, gen, out,
                  Metrics(out / "metrics.jsonl" if ranks.master else None), wall, peak_flops(device))
    except BaseException:
        if folder is not None:
            folder.discard_if_unused()
        raise
    return run, state, folder


def check_lengths(data: datalib.TokenData, plan: sched.Plan, eval_lengths):
    """A window is T+1 tokens: every stage must fit the training split, every eval length the validation split."""
    for split, longest, what in (("train", plan.stages[-1].seq_len, "stage length"),
                                 ("val", max(eval_lengths), "eval length")):
        n = len(data.splits[split])
        if n < longest + 1:
            raise UserError(f"{data.folder}: the {split} split has {n:,} tokens, fewer than one window "
                            f"at {what} {longest}; use a larger corpus or shorter lengths")


def announce(run: Run, state: TrainState):
    """The header before warm-up: device, model, data and the resolved config."""
    if run.ranks.master:
        cfg, model, data = run.cfg, run.model, run.data
        print(f"device {run.device} ({run.ranks.world} rank{'s' if run.ranks.world > 1 else ''}) | dtype {str(run.dtype)[6:]} | "
              f"attn {model.cfg.attn} | {cfg.preset}: {model.num_params() / 1e6:.2f}M params | data {data.folder} "
              f"({data.meta['train_tokens']:,} train tokens, {data.tokenizer})")
        print("config " + json.dumps(run.resolved_config()))
        if state.step:
            print(f"resuming at step {state.step}: {state.elapsed_s:.1f}s trained, {state.tokens:,} tokens")


def announce_plan(run: Run, resumed: bool):
    """The stage table (with the micro-batches warm-up settled on), and the config record."""
    if run.ranks.master:
        print(run.plan.table())
        if not resumed:
            run.metrics.write("config", **run.resolved_config(), model=run.model.cfg.shape(), params=run.model.num_params(),
                              resolved_device=run.device, world_size=run.ranks.world,
                              micro_batches={str(st.seq_len): st.micro_batch for st in run.plan.stages})


def oom_possible(device: str) -> bool:
    """Only CUDA reports running out of memory as an exception we can catch and retry;
    on CPU or MPS the first sign is the OS killing the process."""
    return device.startswith("cuda")


def warm_up(run: Run) -> sched.Plan:
    """Before the clock starts, at every stage length: with --micro-batch-tokens auto on a GPU,
    find the largest micro-batch that fits; compile and autotune that shape (modded-nanogpt
    warms every stage the same way), so neither costs training time. -> the plan to train."""
    probe = run.cfg.micro_batch_tokens == "auto" and oom_possible(run.device)
    if not (probe or run.cfg.compile or run.device.startswith("cuda")):
        return run.plan
    micro = []
    for st in run.plan.stages:
        t0 = time.perf_counter()
        m = fit_micro_batch(run, st) if probe else st.micro_batch
        if not probe and not try_step(run, m, st.seq_len, 0):
            raise UserError(f"stage T={st.seq_len}: a micro-batch of {m} x {st.seq_len} tokens does not fit in "
                            f"GPU memory; lower --micro-batch-tokens or leave it at auto")
        micro.append(m)
        if run.ranks.master:
            print(f"warm-up T={st.seq_len}: micro-batch {m} x {st.seq_len}, {time.perf_counter() - t0:.1f} s", flush=True)
    if run.ranks.world > 1:     # every rank runs the same shapes: the smallest that fits everywhere
        t = torch.tensor(micro, device=run.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        micro = t.tolist()
    return run.plan.with_micro_batches(micro)


def fit_micro_batch(run: Run, stage: sched.Stage) -> int:
    """The largest divisor of the per-rank batch whose training step fits in memory: the whole
    batch first, halved while it does not fit, then bisected between the last size that failed
    and the first that fit. Each try costs a compile, so few tries. While trying, a buffer the
    size of AdamW's state (two fp32 moments per parameter) stands in for the optimizer state
    the first real step allocates, with a 5% margin for the allocator."""
    per_rank = stage.batch_size // run.ranks.world
    reserve = (8 * run.model.num_params() if not run.opt.state else 0) + int(0.05 * device_memory(run.device))
    sizes = sched.divisors(per_rank)
    m, failed = per_rank, per_rank + 1
    while not try_step(run, m, stage.seq_len, reserve):
        if m == 1:
            raise UserError(f"stage T={stage.seq_len}: not even one sequence fits in GPU memory; "
                            f"use a smaller --preset or shorter --schedule lengths")
        m, failed = max(d for d in sizes if d <= m // 2), m
    between = [d for d in sizes if m < d < failed]
    while between:
        mid = between[len(between) // 2]
        if try_step(run, mid, stage.seq_len, reserve):
            m, between = mid, [d for d in between if d > mid]
        else:
            between = [d for d in between if d < mid]
    return m        # compiled and autotuned already: its try was a real forward and backward


def device_memory(device: str) -> int:
    return torch.cuda.get_device_properties(torch.device(device)).total_memory if device.startswith("cuda") else 0


def try_step(run: Run, m: int, T: int, reserve_bytes: int) -> bool:
    reserve, fits = None, True
    try:
        reserve = torch.empty(reserve_bytes, dtype=torch.uint8, device=run.device)
        warm_step(run, m, T)
    except torch.OutOfMemoryError:
        fits = False
    del reserve
    run.model.zero_grad(set_to_none=True)
    if run.device.startswith("cuda"):
        torch.cuda.empty_cache()     # give back what the failed try took before the next one
    return fits


def warm_step(run: Run, m: int, T: int):
    """Forward and backward on random tokens at (m, T): compiles, autotunes and allocates as
    a real step would. Runs the model without DDP, so no rank waits on another while probing."""
    model = run.train_model.module if run.ranks.world > 1 else run.train_model
    x = torch.randint(run.model.cfg.vocab_size, (m, T + 1), device=run.device)
    with run.autocast:
        _, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    run.model.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------- one step, logging, eval

def train_step(run: Run, stage: sched.Stage) -> float:
    """One optimizer step of tokens_per_step tokens, split over ranks and micro-batches;
    returns the mean loss over all of them (every rank gets the same number)."""
    n_micro = stage.batch_size // run.ranks.world // stage.micro_batch
    loss_sum = torch.zeros((), device=run.device)
    for m in range(n_micro):
        x, y = run.data.get_batch("train", stage.micro_batch, stage.seq_len, generator=run.gen, device=run.device)
        # DDP averages gradients across ranks on every backward; only the last micro-batch needs it.
        no_sync = run.train_model.no_sync() if run.ranks.world > 1 and m < n_micro - 1 else nullcontext()
        with no_sync, run.autocast:
            _, loss = run.train_model(x, y)
        (loss / n_micro).backward()       # accumulate the mean, as if one batch
        loss_sum += loss.detach()
    if run.cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    loss = mean_over_ranks(loss_sum / n_micro, run.ranks)
    # A NaN step is taken too: the loop stops on it and saves nothing after it.
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return loss.item()        # read after the optimizer step is queued, so the GPU never waits on Python


def set_lr(opt, progress: float, cfg: TrainConfig) -> float:
    lr = sched.lr_at(progress, cfg.lr or PRESET_LR[cfg.preset], cfg.warmup, cfg.min_lr_ratio)
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


class Metrics:
    """metrics.jsonl: one JSON record a line, appended and flushed. A line is written whole or
    not at all: if the disk fills mid-line, the file is cut back to where it was."""

    def __init__(self, path: Optional[Path]):
        self.path = path
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else None
        except OSError as e:
            raise datalib.write_failed(path, e) from None

    def write(self, kind: str, **record):
        if self.fd is None:
            return
        line = (json.dumps({"kind": kind, **record}) + "\n").encode()
        size = os.fstat(self.fd).st_size
        try:
            written = os.write(self.fd, line)
            if written != len(line):
                raise OSError(28, "No space left on device")   # a short write: the disk is full
        except OSError as e:
            os.ftruncate(self.fd, size)
            raise datalib.write_failed(self.path, e) from None

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class WallTime:
    """Where this invocation's wall time went, from the checkpoint load on, for the closing line
    (the budget counts training only; "other" is building the run, preparing data, sampling)."""

    def __init__(self, trained_before: float):
        self.start, self.trained_before = time.perf_counter(), trained_before   # a resumed run's earlier training
        self.parts = {"warm-up": 0.0, "evaluation": 0.0, "checkpointing": 0.0}

    @contextmanager
    def part(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] += time.perf_counter() - t0

    def line(self, elapsed_s: float) -> str:
        total, training_s = time.perf_counter() - self.start, elapsed_s - self.trained_before
        other = total - training_s - sum(self.parts.values())
        return f"wall time {total:.1f}s: training {training_s:.1f}s, " + \
            ", ".join(f"{k} {v:.1f}s" for k, v in self.parts.items()) + f", other {other:.1f}s"


class Interval:
    """Due once every `seconds` of training time (log lines, evals, checkpoints)."""

    def __init__(self, seconds: float, now: float):
        self.seconds, self.last = seconds, now

    def due(self, now: float) -> bool:
        return now - self.last >= self.seconds

    def reset(self, now: float):
        self.last = now


class LogWindow:
    """The losses and tokens since the last log line, which reports their mean and rate."""

    def __init__(self, state: TrainState):
        self.tokens, self.time, self.losses = state.tokens, state.elapsed_s, []

    def line(self, run: Run, state: TrainState, stage_idx: int, lr: float):
        stage, n = run.plan.stages[stage_idx], len(run.plan.stages)
        now, loss = state.elapsed_s, sum(self.losses) / len(self.losses)
        tps = (state.tokens - self.tokens) / max(now - self.time, 1e-9)
        mfu = run.mfu(tps, stage.seq_len)
        run.metrics.write("train", step=state.step, elapsed_s=round(now, 3), tokens=state.tokens,
                          seq_len=stage.seq_len, batch_size=stage.batch_size, loss=round(loss, 6),
                          lr=lr, tokens_per_s=round(tps, 1), **({"mfu": round(mfu, 4)} if mfu is not None else {}))
        budget = run.plan.budget_s
        of = f"{budget:.0f}s" if budget else f"{run.plan.max_tokens / 1e6:.2f}M tok"
        print(f"stage {stage_idx + 1}/{n} T={stage.seq_len:5d} B={stage.batch_size:4d} | step {state.step:5d} | "
              f"loss {loss:.4f} | lr {lr:.2e} | {tps / 1e3:6.1f}k tok/s" + (f" | mfu {mfu:.1%}" if mfu is not None else "") +
              f" | {now:6.1f}s {state.tokens / 1e6:.2f}M tok / {of}")
        self.tokens, self.time, self.losses = state.tokens, now, []


@torch.no_grad()
def evaluate(model, data, lengths, eval_tokens, device, autocast):
    """Mean validation loss (nats/token) at each context length, on the same fixed windows every time."""
    model.eval()
    out = {}
    for T in lengths:
        total, count = 0.0, 0
        for x, y in data.eval_windows(T, eval_tokens, batch_size=max(1, EVAL_BATCH_TOKENS // T), device=device):
            with autocast:
                _, loss = model(x, y)
            total, count = total + loss.item() * x.numel(), count + x.numel()
        out[str(T)] = round(total / count, 5)
    model.train()
    return out


class Evaluator:
    """Evaluates on rank 0 and records why. A step asked for twice (a stage change that is also
    an interval, say) is evaluated once: each reason gets its record, one printed line."""

    def __init__(self, run: Run):
        self.run, self.step, self.losses = run, None, None

    def __call__(self, state: TrainState, reason: str) -> Optional[dict]:
        run = self.run
        if not run.ranks.master:
            return None
        fresh = state.step != self.step
        if fresh:
            self.step = state.step
            with run.wall.part("evaluation"):
                self.losses = evaluate(run.model, run.data, run.eval_lengths, run.cfg.eval_tokens,
                                       run.device, run.autocast)
        run.metrics.write("eval", step=state.step, elapsed_s=round(state.elapsed_s, 3), tokens=state.tokens,
                          reason=reason, loss=self.losses)
        if fresh:
            print(f"eval @ {state.elapsed_s:7.1f}s step {state.step:5d} ({reason}): " +
                  "  ".join(f"T={k} {v:.4f}" for k, v in self.losses.items()))
        return self.losses


def checkpoint(run: Run, state: TrainState):
    """Gather every rank's data RNG (a collective: all ranks call this), rank 0 writes."""
    with run.wall.part("checkpointing"):
        state.data_rng = gather_generators(run.gen, run.ranks)
        state.torch_rng = torch.get_rng_state()
        if run.ranks.master:
            save_checkpoint(run.out / "ckpt.pt", run.cfg, run.model, run.opt, state, run.data.fingerprint)


class StopRequest:
    """SIGINT/SIGTERM ask the loop to stop after the current step (checkpoint, exit 0);
    a second signal kills as usual. --stop-at-step asks the same at a given step."""

    def __init__(self, at_step: Optional[int]):
        self.at_step, self.signum = at_step, None
        self.previous = {s: signal.signal(s, self.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(self, signum, _frame):
        self.signum = signum
        signal.signal(signum, signal.SIG_DFL)

    def __call__(self, step: int) -> bool:
        return self.signum is not None or (self.at_step is not None and step >= self.at_step)

    def reason(self, step: int) -> str:
        if self.signum:
            return f"signal {signal.Signals(self.signum).name}"
        if self.at_step is not None and step >= self.at_step:
            return f"--stop-at-step {self.at_step}"
        return "a signal on another rank"

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


# ----------------------------------------------------------------------------- the loop

def train(argv=None) -> int:
    cfg, explicit = parse_config(argv)
    ranks = setup_distributed()
    # agree: a rank that cannot read the checkpoint (another node's disk) stops all of them
    ckpt = agree(ranks, load_checkpoint, cfg.resume) if cfg.resume else None
    if ckpt is not None:
        cfg = merge_resumed(cfg, explicit, ckpt)
    run, state, folder = build(cfg, ranks, ckpt, WallTime(ckpt["state"].elapsed_s if ckpt else 0.0))
    stop, code = None, None
    try:
        announce(run, state)
        with run.wall.part("warm-up"):
            run.plan = warm_up(run)
        announce_plan(run, resumed=ckpt is not None)
        evaluate_now = Evaluator(run)
        if ckpt is None:
            evaluate_now(state, "start")
        stop = StopRequest(cfg.stop_at_step)   # from here on, Ctrl-C stops after a step, with a checkpoint
        code = train_loop(run, state, evaluate_now, stop)
        return code
    finally:
        if stop is not None:
            stop.restore()
        run.metrics.close()
        if folder is not None and code != 0 and state.step == 0:
            folder.discard_if_unused()      # failed before any step (an exception, OOM, NaN, a signal)
        elif folder is not None:
            folder.release()


def train_loop(run: Run, state: TrainState, evaluate_now: Evaluator, stop: StopRequest) -> int:
    cfg, plan, ranks = run.cfg, run.plan, run.ranks
    clock = sched.Clock(offset_s=state.elapsed_s)
    log_every, eval_every, ckpt_every = (Interval(s, state.elapsed_s) for s in
                                         (cfg.log_interval, cfg.eval_interval, cfg.ckpt_interval))
    window, stopped = LogWindow(state), False
    # Resumed: the stage of the last step, so a stage that began before the checkpoint is not
    # begun (recorded, evaluated at) a second time.
    stage_idx = [st.seq_len for st in plan.stages].index(state.step_losses[-1][0]) if state.step_losses else None
    clock.start()
    while True:
        # 1. schedule: rank 0's clock decides for every rank, so stages never split.
        run.sync()
        progress = from_rank0(plan.progress(clock.elapsed(), state.tokens), ranks, run.device)
        stopped = any_rank(stop(state.step), ranks, run.device)   # a signal may reach one rank only
        if progress >= 1.0 or stopped:
            break
        i = plan.stage_index(progress)
        if i != stage_idx:      # a new stage: announce it, and evaluate where the last one ended
            clock.pause()
            state.elapsed_s = clock.elapsed()
            begin_stage(run, state, i)
            run.model.switch_rope(plan.stages[0].seq_len, plan.stages[i].seq_len)  # before the eval sees it
            if stage_idx is not None:
                evaluate_now(state, f"stage {i + 1}")
                eval_every.reset(state.elapsed_s)
            stage_idx = i
            clock.start()
        stage = plan.stages[i]
        lr = set_lr(run.opt, progress, cfg)

        # 2. train: one optimizer step; the clock keeps running through it.
        t0 = clock.elapsed()
        try:
            loss = train_step(run, stage)
        except torch.OutOfMemoryError:
            return report_out_of_memory(run, state, i)
        if not math.isfinite(loss):
            return report_non_finite(run, state, loss, stage, lr)
        run.sync()
        now = from_rank0(clock.elapsed(), ranks, run.device)
        state.count_step(stage.seq_len, cfg.tokens_per_step, now - t0, loss)
        state.elapsed_s = now
        window.losses.append(loss)

        # 3. log
        if ranks.master and log_every.due(now):
            window.line(run, state, i, lr)
            log_every.reset(now)

        # 4. eval and 5. checkpoint, with the clock paused: neither is training time.
        if eval_every.due(now) or ckpt_every.due(now):
            clock.pause()
            if eval_every.due(now):
                evaluate_now(state, "interval")
                eval_every.reset(now)
            if ckpt_every.due(now):
                checkpoint(run, state)
                ckpt_every.reset(now)
            clock.start()

    clock.pause()
    state.elapsed_s = clock.elapsed()
    return finish(run, state, evaluate_now, stop if stopped else None)


def begin_stage(run: Run, state: TrainState, i: int):
    """The stage record, and the line that says what the batch is now."""
    stage, n = run.plan.stages[i], len(run.plan.stages)
    run.metrics.write("stage", step=state.step, elapsed_s=round(state.elapsed_s, 3), tokens=state.tokens,
                      stage=i + 1, seq_len=stage.seq_len, batch_size=stage.batch_size)
    if run.ranks.master:
        print(f"--- stage {i + 1}/{n}: T={stage.seq_len}, batch {stage.batch_size} "
              f"x {stage.seq_len} = {run.cfg.tokens_per_step} tokens/step")


def last_checkpoint_note(run: Run) -> str:
    return f"the last checkpoint in {run.out} is intact" if (run.out / "ckpt.pt").exists() \
        else "no checkpoint was written yet"


def report_non_finite(run: Run, state: TrainState, loss: float, stage: sched.Stage, lr: float) -> int:
    if run.ranks.master:     # the loss is averaged over ranks: every rank sees the same NaN
        print(f"error: loss is {loss} at step {state.step + 1} (T={stage.seq_len}, lr {lr:.2e}); "
              f"stopping; {last_checkpoint_note(run)}", file=sys.stderr)
    return EXIT_NAN


def report_out_of_memory(run: Run, state: TrainState, i: int) -> int:
    """Printed by the rank that ran out (another process may have taken memory on its GPU)."""
    stage, who = run.plan.stages[i], f"rank {run.ranks.rank}: " if run.ranks.world > 1 else ""
    tokens = stage.micro_batch * stage.seq_len
    fix = (f"lower --micro-batch-tokens (e.g. {max(stage.seq_len, tokens // 2)})" if stage.micro_batch > 1
           else "use a smaller --preset or shorter --schedule lengths")
    print(f"error: {who}out of GPU memory at step {state.step + 1} (stage {i + 1}, T={stage.seq_len}, micro-batch "
          f"{stage.micro_batch} x {stage.seq_len} = {tokens} tokens); {fix}, or free the GPU; "
          f"{last_checkpoint_note(run)}", file=sys.stderr)
    return EXIT_OOM


def finish(run: Run, state: TrainState, evaluate_now: Evaluator, stop: Optional[StopRequest]) -> int:
    """Stopped early (`stop`: on any rank): checkpoint and say how to resume. Done: final eval,
    checkpoint, summary, sample."""
    if stop is not None:
        checkpoint(run, state)
        if run.ranks.master:
            launcher = "python" if run.ranks.world == 1 else f"torchrun --nproc_per_node={run.ranks.world}"
            print(f"stopped ({stop.reason(state.step)}) at step {state.step} after {state.elapsed_s:.1f}s of training; "
                  f"checkpoint in {run.out}.\nresume with: {launcher} train.py --resume {run.out}")
        return 0
    final = evaluate_now(state, "end")
    checkpoint(run, state)
    jumps = sched.loss_jumps([T for T, _ in state.step_losses], [loss for _, loss in state.step_losses], JUMP_K)
    for j in jumps:
        run.metrics.write("jump", **j)
    if run.ranks.master:
        print_summary(run, state, final, jumps)
        if run.cfg.sample_tokens > 0:
            # The run is saved: from here a signal stops the sampling (as KeyboardInterrupt), nothing else.
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, signal.default_int_handler)
            print_sample(run)
    return 0


def print_summary(run: Run, state: TrainState, final: dict, jumps: list):
    print(f"done: {state.step} steps, {state.tokens:,} tokens, {state.elapsed_s:.1f}s of training. Per stage:")
    mfu_head = "     mfu" if run.peak_flops else ""
    print("  seq_len   steps      tokens   train_s   tokens/s" + mfu_head)
    for T, s in state.stage_stats.items():
        tps = s["tokens"] / max(s["seconds"], 1e-9)
        mfu = run.mfu(tps, int(T))
        print(f"  {int(T):7d} {s['steps']:7d} {s['tokens']:11,} {s['seconds']:9.1f} {tps:10.0f}" +
              (f" {mfu:7.1%}" if mfu is not None else ""))
    for j in jumps:
        print(f"  loss jump {j['from']} -> {j['to']} at step {j['step']}: " +
              (f"{j['jump']:+.4f} (mean of {j['k']} steps after {j['after']:.4f}, before {j['before']:.4f})"
               if j["jump"] is not None else f"not measured (fewer than {j['k']} steps on a side)"))
    print("final val loss (nats/token): " + "  ".join(f"T={k} {v:.4f}" for k, v in final.items()))
    print(run.wall.line(state.elapsed_s))
    print(f"wrote {run.out / 'ckpt.pt'} and {run.out / 'metrics.jsonl'}")


def print_sample(run: Run):
    tok = datalib.get_tokenizer(run.cfg.tokenizer)
    torch.manual_seed(run.cfg.seed)
    prompt = torch.tensor([tok.encode("\n")], device=run.device)
    try:
        with run.autocast:
            ids = run.model.eval().generate(prompt, run.cfg.sample_tokens, temperature=0.8, top_k=200)
    except KeyboardInterrupt:
        print("--- sample interrupted ---")
        return
    except MemoryError as e:       # the run is saved: only the sample is lost
        print(f"error: no sample: {e}; lower --sample-tokens", file=sys.stderr)
        return
    print("--- sample ---\n" + tok.decode(ids[0].tolist()))


def main(argv=None) -> int:
    """train(), with every way it can fail ending in one line and an exit code."""
    master = os.environ.get("RANK", "0") == "0"
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    cli.stop_on_signals()      # until training starts: a signal is one line, exit 130/143, temp files removed
    try:
        code = train(argv)
    except USER_ERRORS as e:
        # Checks give the same answer on every rank, and `agree` names a single failing rank:
        # rank 0 speaks for all.
        if master or isinstance(e, RankError):
            print(f"error: {e}", file=sys.stderr)
        code = EXIT_USER
    except torch.OutOfMemoryError:
        print("error: out of GPU memory outside a training step (loading the model, or an evaluation, which "
              f"runs batches of up to {EVAL_BATCH_TOKENS:,} tokens); free the GPU or use a smaller --preset", file=sys.stderr)
        code = EXIT_OOM
    except dist.DistError:
        code = 1        # another rank failed and said why; this one stops quietly
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
