"""The GrowLength schedule: which sequence length to train at, and with what LR, at any moment.

Pure Python (no torch, no I/O) so every rule is a unit test. The paper's Algorithm 1 loops
over data loaders of growing length; here a single number, `progress` in [0, 1], decides the
stage, so one schedule serves a wallclock budget (the paper's "same training time", Fig. 1)
and a token budget (the paper's "same tokens", Fig. 2) alike:

    progress = max(elapsed_s / budget_s, tokens / max_tokens)      # whichever runs out first
    stage    = first stage whose cumulative share of the budget exceeds progress
    batch    = tokens_per_step // seq_len                           # constant tokens per step
    micro    = largest divisor of batch / ranks that fits            # gradient accumulation
"""
import math
import re
import time
from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Sequence


class ScheduleError(ValueError):
    """A user-supplied schedule, ratio or budget that cannot be used; the message is one line."""


def parse_schedule(text: str) -> List[int]:
    """'128,256,512,1024' -> [128, 256, 512, 1024]: strictly increasing positive ints."""
    parts = [p.strip() for p in str(text).split(",")]
    if not text or not str(text).strip() or any(p == "" for p in parts):
        raise ScheduleError(f"--schedule {text!r}: expected comma-separated lengths like 128,256,512,1024")
    try:
        lengths = [int(p) for p in parts]
    except ValueError:
        raise ScheduleError(f"--schedule {text!r}: lengths must be whole numbers") from None
    if any(n <= 0 for n in lengths):
        raise ScheduleError(f"--schedule {text!r}: lengths must be positive")
    if any(b <= a for a, b in zip(lengths, lengths[1:])):
        raise ScheduleError(f"--schedule {text!r}: lengths must be strictly increasing")
    return lengths


def parse_ratios(text: Optional[str], n_stages: int) -> List[float]:
    """'1,1,2,4' -> shares of the budget per stage, normalised to sum to 1. None -> equal shares."""
    if text is None or str(text).strip() == "":
        return [1.0 / n_stages] * n_stages
    try:
        ratios = [float(p) for p in str(text).split(",")]
    except ValueError:
        raise ScheduleError(f"--ratios {text!r}: expected comma-separated numbers like 1,1,2,4") from None
    if len(ratios) != n_stages:
        raise ScheduleError(f"--ratios {text!r}: {len(ratios)} ratios for {n_stages} schedule stages")
    if any(not math.isfinite(r) or r <= 0 for r in ratios):
        raise ScheduleError(f"--ratios {text!r}: every ratio must be a positive number")
    total = sum(ratios)
    if not math.isfinite(total):
        raise ScheduleError(f"--ratios {text!r}: the ratios must add up to a finite number")
    return [r / total for r in ratios]


def parse_eval_lengths(text: Optional[str], schedule: Sequence[int]) -> List[int]:
    """'128,1024' -> [128, 1024] (sorted, unique). None -> every stage length and twice the
    last, so each eval shows how the model does beyond what it has trained on."""
    if text is None:
        return list(schedule) + [2 * schedule[-1]]
    try:
        lengths = sorted({int(x) for x in str(text).split(",")})
    except ValueError:
        raise ScheduleError(f"--eval-lengths {text!r}: expected comma-separated lengths") from None
    if not lengths or lengths[0] <= 0:
        raise ScheduleError(f"--eval-lengths {text!r}: lengths must be positive")
    return lengths


def micro_batch(batch: int, seq_len: int, micro_tokens: Optional[int]) -> int:
    """Largest divisor of `batch` whose tokens fit in micro_tokens (None: the whole batch).
    A divisor, so every micro-batch of a stage has one shape (one compile) and every
    sequence weighs the same in the accumulated gradient."""
    cap = batch if micro_tokens is None else max(1, micro_tokens // seq_len)
    return max(d for d in divisors(batch) if d <= cap)


def divisors(n: int) -> List[int]:
    """Every divisor of n, ascending; O(sqrt n), so a huge batch never stalls the stage table."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in reversed(small) if d * d != n]


_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """'90s' | '5m' | '1.5h' | '300' (seconds) -> seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h)?\s*", str(text))
    if not match:
        raise ScheduleError(f"--budget {text!r}: expected a duration like 90s, 5m or 1h")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or ""]
    if seconds <= 0:
        raise ScheduleError(f"--budget {text!r}: the budget must be positive")
    return seconds


@dataclass(frozen=True)
class Stage:
    seq_len: int
    batch_size: int       # sequences per optimizer step, all ranks (tokens_per_step // seq_len)
    start: float          # progress at which the stage begins
    end: float            # progress at which the next one begins
    micro_batch: int      # sequences per forward/backward on one rank (divides batch_size / world)


@dataclass(frozen=True)
class Plan:
    """A schedule bound to a budget. Build with `Plan.make`, which validates everything."""
    stages: Sequence[Stage]
    tokens_per_step: int
    budget_s: Optional[float] = None
    max_tokens: Optional[int] = None

    world: int = 1

    @staticmethod
    def make(schedule: Sequence[int], ratios: Sequence[float], tokens_per_step: int,
             budget_s: Optional[float] = None, max_tokens: Optional[int] = None,
             world: int = 1, micro_batch_tokens: Optional[int] = None) -> "Plan":
        if budget_s is None and max_tokens is None:
            raise ScheduleError("give a budget: --budget (wallclock) or --max-tokens")
        if max_tokens is not None and max_tokens <= 0:
            raise ScheduleError(f"--max-tokens {max_tokens}: must be positive")
        if tokens_per_step <= 0:
            raise ScheduleError(f"--tokens-per-step {tokens_per_step}: must be positive")
        if micro_batch_tokens is not None and micro_batch_tokens <= 0:
            raise ScheduleError(f"--micro-batch-tokens {micro_batch_tokens}: must be positive")
        stages, start = [], 0.0
        for i, (seq_len, share) in enumerate(zip(schedule, ratios)):
            if tokens_per_step % seq_len:
                raise ScheduleError(f"stage length {seq_len} does not divide --tokens-per-step "
                                    f"{tokens_per_step}; pick a multiple of every stage length")
            batch = tokens_per_step // seq_len
            if batch % world:   # every rank takes an equal share of every step
                raise ScheduleError(f"stage length {seq_len}: batch {batch} does not split over {world} ranks")
            # The last stage ends at exactly 1.0 so float rounding never leaves a gap.
            end = 1.0 if i == len(schedule) - 1 else start + share
            micro = micro_batch(batch // world, seq_len, micro_batch_tokens)
            stages.append(Stage(seq_len, batch, start, end, micro))
            start = end
        return Plan(tuple(stages), tokens_per_step, budget_s, max_tokens, world)

    def with_micro_batches(self, micro: Sequence[int]) -> "Plan":
        """The same plan with other micro-batch sizes (e.g. found by trying what fits on a GPU)."""
        for st, m in zip(self.stages, micro):
            if m < 1 or (st.batch_size // self.world) % m:
                raise ScheduleError(f"micro-batch {m} does not divide stage {st.seq_len}'s "
                                    f"per-rank batch {st.batch_size // self.world}")
        return replace(self, stages=tuple(replace(st, micro_batch=m) for st, m in zip(self.stages, micro)))

    def progress(self, elapsed_s: float, tokens: int) -> float:
        """Fraction of the budget used, in [0, 1]. With both budgets, whichever runs out first."""
        fractions = []
        if self.budget_s is not None:
            fractions.append(elapsed_s / self.budget_s)
        if self.max_tokens is not None:
            fractions.append(tokens / self.max_tokens)
        return min(1.0, max(0.0, max(fractions)))

    def done(self, elapsed_s: float, tokens: int) -> bool:
        return self.progress(elapsed_s, tokens) >= 1.0

    def stage_index(self, progress: float) -> int:
        for i, stage in enumerate(self.stages):
            if progress < stage.end:
                return i
        return len(self.stages) - 1

    def stage_at(self, progress: float) -> Stage:
        return self.stages[self.stage_index(progress)]

    def budget_point(self, progress: float) -> str:
        """A point of the budget in the budget's own unit: '60.0s' or '0.25M tok'."""
        return f"{progress * self.budget_s:.1f}s" if self.budget_s else f"{progress * self.max_tokens / 1e6:.2f}M tok"

    def table(self) -> str:
        """The stage table printed before training starts."""
        # micro: sequences per forward/backward on each rank; accumulation makes up the rest.
        rows = ["stage  seq_len  batch  micro  tokens/step        from          to"]
        for i, s in enumerate(self.stages):
            rows.append(f"{i + 1:5d}  {s.seq_len:7d}  {s.batch_size:5d}  {s.micro_batch:5d}  "
                        f"{self.tokens_per_step:11d}  {self.budget_point(s.start):>10}  {self.budget_point(s.end):>10}")
        return "\n".join(rows)


def lr_at(progress: float, max_lr: float, warmup: float = 0.01, min_ratio: float = 0.1) -> float:
    """Linear warmup over the first `warmup` of progress, then cosine down to min_ratio * max_lr
    (Pythia: 1% warmup, cosine to 10%). Keyed on progress, so it follows whichever budget rules."""
    if warmup > 0 and progress < warmup:
        return max_lr * max(progress / warmup, 0.01)   # floor: the very first step still moves
    decay = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    cosine = 0.5 * (1.0 + math.cos(math.pi * decay))
    return max_lr * (min_ratio + (1.0 - min_ratio) * cosine)


class Clock:
    """Training wallclock that can be paused (eval, checkpoints, compiles are not training time).

    `time_fn` is injectable so tests can drive it; `offset_s` restores the elapsed time of a
    resumed run. The caller synchronizes the device before reading it: CUDA work is async.
    """

    def __init__(self, time_fn: Callable[[], float] = time.perf_counter, offset_s: float = 0.0):
        self._time = time_fn
        self._banked = offset_s        # training seconds accumulated while running before
        self._since: Optional[float] = None

    def start(self) -> None:
        if self._since is None:
            self._since = self._time()

    def pause(self) -> None:
        if self._since is not None:
            self._banked += self._time() - self._since
            self._since = None

    def elapsed(self) -> float:
        live = self._time() - self._since if self._since is not None else 0.0
        return self._banked + live


def loss_jumps(seq_lens: Sequence[int], losses: Sequence[float], k: int = 5) -> List[dict]:
    """The training-loss jump at every stage switch of a per-step record (step i trained at
    seq_lens[i] with loss losses[i]):

        jump = mean(first k losses of the new stage) - mean(last k losses of the previous one)

    Positive: the switch cost loss. k steps on each side average out step-to-step noise while
    staying close to the switch. A side with fewer than k steps gives jump None (not measured).
    Steps are numbered from 1, as train.py counts them; `step` is the new stage's first.
    """
    if len(seq_lens) != len(losses):
        raise ValueError(f"{len(seq_lens)} seq_lens for {len(losses)} losses")
    starts = [0] + [i for i in range(1, len(seq_lens)) if seq_lens[i] != seq_lens[i - 1]] + [len(seq_lens)]
    jumps = []
    for prev, start, end in zip(starts, starts[1:], starts[2:]):
        before, after = losses[max(prev, start - k):start], losses[start:min(end, start + k)]
        measured = len(before) == k and len(after) == k
        mean_before, mean_after = sum(before) / len(before), sum(after) / len(after)
        jumps.append({"step": start + 1, "from": seq_lens[start - 1], "to": seq_lens[start], "k": k,
                      "before": mean_before if measured else None, "after": mean_after if measured else None,
                      "jump": mean_after - mean_before if measured else None})
    return jumps
