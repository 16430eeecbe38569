"""train.py's flags -> TrainConfig, the checks argparse cannot make, and merging on --resume."""
import argparse
import functools
import math
from dataclasses import asdict, dataclass, fields
from typing import Optional

import schedule as sched
from harness.cli import OneLineParser, UserError, auto_or_tokens, compact
from harness.threads import threads_flag
from harness.tokenizer import TOKENIZERS, tokenizer_flag
from model import ATTN_BACKENDS, PRESET_LR, PRESETS, ROPE_SWITCHES

DEFAULT_BUDGET = "4m"   # with evals and start-up, the default run fits in 5 minutes on 2 CPU cores
# Changing these on --resume would make another run. Not --data: its fingerprint decides
# (checkpoint.check_data), so a corpus that moved can be named anew.
FIXED_ON_RESUME = ("schedule", "ratios", "tokens_per_step", "preset", "tokenizer", "rope_switch", "doc_mask")
EXTENDING = ("budget: a resumed run with another --budget or --max-tokens keeps its plan (stages and LR stay where "
             "its first budget put them); past that budget's end it trains on at the last stage's length with the "
             "LR at its floor (--min-lr-ratio); a smaller budget stops it earlier")


@dataclass
class TrainConfig:
    """Every flag of train.py; the defaults here are the only ones (the parser has none)."""
    schedule: str = "128,256,512,1024"
    ratios: Optional[str] = None
    budget: Optional[str] = None
    max_tokens: Optional[int] = None
    tokens_per_step: int = 2048     # 4x the steps of 8192 in the same 2-core CPU time: lower loss (results/tune.md)
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
    threads: object = "auto"                   # "auto" or a count: CPU threads (harness/threads.py)
    doc_mask: bool = False                     # off: every published result attends across documents
    eval_doc_mask: str = "auto"                # on | off | auto: as the run trains (doc_mask)

    def peak_lr(self) -> float:
        return self.lr or PRESET_LR[self.preset]

    def eval_masked(self) -> bool:
        return {"auto": self.doc_mask, "on": True, "off": False}[self.eval_doc_mask]

    def resolved(self, attn: str) -> dict:
        """The config with the defaults a run chose filled in: what the logs record."""
        return {**asdict(self), "budget": self.budget_or_default(), "attn": attn}

    def budget_or_default(self) -> Optional[str]:
        """--budget, or the default one when neither budget flag was given. Resolved here and not
        stored in the config: a checkpoint must hold what the user asked for, so that resuming
        with --max-tokens is not still capped by a default wallclock."""
        return DEFAULT_BUDGET if self.budget is None and self.max_tokens is None else self.budget


def build_parser(description: str) -> argparse.ArgumentParser:
    """Flags only: argparse fills in nothing (SUPPRESS), so the parsed namespace holds exactly
    the flags the user gave -- which --resume needs -- and TrainConfig supplies the rest."""
    d = TrainConfig()
    p = OneLineParser(description=description, argument_default=argparse.SUPPRESS)
    a = p.add_argument
    a("--schedule", type=compact, help=f"stage lengths, strictly increasing (default {d.schedule})")
    a("--ratios", type=compact, help="share of the budget per stage, e.g. 1,1,2,4 (default: equal)")
    a("--budget", help=f"training wallclock, e.g. 90s, 5m, 1h (default {DEFAULT_BUDGET} "
      "unless --max-tokens is given); eval and checkpoints do not count. Extending a run's " + EXTENDING)
    a("--max-tokens", type=int, help="token budget: the paper's equal-tokens runs (on --resume: see --budget)")
    a("--tokens-per-step", type=int,
      help=f"tokens per optimizer step, constant across stages; batch = this // seq_len (default {d.tokens_per_step})")
    a("--micro-batch-tokens", type=auto_or_tokens,
      help="tokens per forward/backward (gradient accumulation above it); default auto: on a GPU the "
      "largest that fits, found per stage before the clock starts; elsewhere the whole step")
    a("--preset", choices=list(PRESETS), help=f"model size (default {d.preset})")
    a("--data", help=f"'shakespeare' or 'python-stdlib' (built in), a prepared folder, or a text/jsonl "
      f"file or folder, prepared on first use (default {d.data})")
    a("--tokenizer", type=tokenizer_flag, help=f"byte, gpt2, or a Hugging Face tokenizer.json or its folder "
      f"(default {d.tokenizer}; with --init-from, the folder's tokenizer.json if it has one)")
    a("--lr", type=float, help="peak learning rate (default: the preset's)")
    a("--min-lr-ratio", type=float, help=f"cosine floor as a share of --lr (default {d.min_lr_ratio})")
    a("--warmup", type=float, help=f"LR warmup as a share of the budget (default {d.warmup})")
    a("--weight-decay", type=float, help=f"(default {d.weight_decay})")
    a("--grad-clip", type=float, help=f"(default {d.grad_clip}; 0: off)")
    a("--eval-lengths", type=compact, help="context lengths to evaluate (default: each stage length and twice the last)")
    a("--eval-tokens", type=int, help=f"validation tokens per eval length (default {d.eval_tokens})")
    a("--eval-interval", type=float, help=f"seconds of training between evals (default {d.eval_interval:g})")
    a("--log-interval", type=float, help=f"seconds of training between log lines (0: every step; default {d.log_interval:g})")
    a("--ckpt-interval", type=float, help=f"seconds of training between checkpoints (default {d.ckpt_interval:g})")
    a("--out", help="run folder (default runs/<timestamp>); with --resume, a new folder to continue "
      "the run in (its checkpoint and metrics are copied there first; the resumed folder is left as it is)")
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
      help=f"RoPE at every stage change: none (positions extrapolate, the paper), pi, ntk or yarn (default "
      f"{d.rope_switch}); with --init-from it scales from the folder's trained length (max_position_embeddings), "
      "so it is inactive while every stage is within that length (said in one line at start)")
    a("--eval-doc-mask", choices=["auto", "on", "off"], help="validation with --doc-mask's mask or not (auto: as trained)")
    a("--doc-mask", action="store_true", help="attend within each document only; positions unchanged (model.attention)")
    a("--threads", type=threads_flag, help="CPU threads: auto (default) times a few steps at 1, 2, 4 .. cores threads as "
      "each stage starts (outside the clock) and keeps the fastest (on a busy machine, fewer); N fixes it; OMP_NUM_THREADS is kept")
    return p


def parse_config(argv=None, description: str = "Train with GrowLength."):
    """-> (config, names of the flags given explicitly); on --resume the saved config is the base."""
    given = vars(build_parser(description).parse_args(argv))
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
        (cfg.out is None or cfg.out.strip() != "", "--out '': give a folder (or leave --out out: runs/<timestamp>)"),
        (cfg.stop_at_step is None or cfg.stop_at_step >= 0, f"--stop-at-step {cfg.stop_at_step}: must be >= 0"),
        (cfg.eval_tokens > 0, f"--eval-tokens {cfg.eval_tokens}: must be positive"),
        (cfg.sample_tokens >= 0, f"--sample-tokens {cfg.sample_tokens}: must be >= 0"),
    ] + [(0.0 <= getattr(cfg, f"{name}_interval") < math.inf, f"--{name}-interval: must be seconds >= 0")
         for name in ("eval", "log", "ckpt")]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def config_from(saved_config: dict) -> TrainConfig:
    """A checkpoint's config (a field this version lacks is dropped; one it lacks, defaulted)."""
    return TrainConfig(**{k: v for k, v in saved_config.items() if k in {f.name for f in fields(TrainConfig)}})


def merge_resumed(cfg: TrainConfig, explicit: set, saved_config: dict) -> TrainConfig:
    """The checkpoint's config, with the flags given now on top (a budget extends a run: EXTENDING)."""
    saved = config_from(saved_config)
    for name in sorted(explicit & set(FIXED_ON_RESUME)):
        # A tokenizer.json may move: its identity is checked against the data's instead (prepare.open_data).
        moved = name == "tokenizer" and {cfg.tokenizer, saved.tokenizer}.isdisjoint(TOKENIZERS)
        if getattr(cfg, name) != getattr(saved, name) and not moved:
            raise UserError(f"--resume: --{name.replace('_', '-')} {getattr(cfg, name)} differs from the "
                            f"checkpoint's {getattr(saved, name)}; resuming cannot change it")
    if "init_from" in explicit:
        raise UserError("--init-from starts a new run from other weights; it cannot be combined with --resume")
    for name in explicit:
        setattr(saved, name, getattr(cfg, name))
    # Flags about this invocation, not the run: never inherited (another --out: RunFolder.claim copies the run).
    saved.resume, saved.stop_at_step, saved.out = cfg.resume, cfg.stop_at_step, cfg.out if "out" in explicit else cfg.resume
    return saved


def make_plans(cfg: TrainConfig, world: int, ckpt: Optional[dict] = None):
    """-> (plan, end, eval lengths): `plan`, the stages and LR for the budget the run was planned
    with (its checkpoint's; one from before that was kept: its config's); `end`, for this
    invocation's budget, says when to stop (EXTENDING). Every schedule rule is checked here."""
    planned = ckpt and (ckpt["state"].planned or budget_of(config_from(ckpt["config"])))
    lengths, micro = sched.parse_schedule(cfg.schedule), cfg.micro_batch_tokens
    plan_for = functools.partial(sched.Plan.make, lengths, sched.parse_ratios(cfg.ratios, len(lengths)),
                                 cfg.tokens_per_step, world=world, micro_batch_tokens=None if micro == "auto" else micro)
    end = plan_for(*budget_of(cfg))
    return plan_for(*planned) if planned else end, end, sched.parse_eval_lengths(cfg.eval_lengths, lengths)


def budget_of(cfg: TrainConfig) -> list:
    """[training seconds or None, tokens or None]: the budget a config asks for."""
    return [None if cfg.budget_or_default() is None else sched.parse_duration(cfg.budget_or_default()), cfg.max_tokens]
