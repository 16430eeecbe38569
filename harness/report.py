"""What a run prints: the header, the stage table, one line per log interval, evals, the
closing summary with the wall-time split, and the sample. Plus the small timers the loop uses."""
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from harness.tokenizer import get_tokenizer


def announce(device: str, world: int, dtype, model, data, config: dict, step: int, elapsed_s: float, tokens: int):
    """The header before warm-up: device, model, data and the resolved config."""
    print(f"device {device} ({world} rank{'s' if world > 1 else ''}) | dtype {str(dtype)[6:]} | "
          f"attn {model.cfg.attn} | {config['preset']}: {model.num_params() / 1e6:.2f}M params | data {data.folder} "
          f"({data.meta['train_tokens']:,} train tokens, {data.tokenizer})")
    print("config " + json.dumps(config))
    if step:
        print(f"resuming at step {step}: {elapsed_s:.1f}s trained, {tokens:,} tokens")


def stage_line(i: int, n: int, stage, tokens_per_step: int):
    print(f"--- stage {i + 1}/{n}: T={stage.seq_len}, batch {stage.batch_size} "
          f"x {stage.seq_len} = {tokens_per_step} tokens/step")


def log_line(record: dict, i: int, n: int, budget: str):
    mfu = record.get("mfu")
    print(f"stage {i + 1}/{n} T={record['seq_len']:5d} B={record['batch_size']:4d} | step {record['step']:5d} | "
          f"loss {record['loss']:.4f} | lr {record['lr']:.2e} | {record['tokens_per_s'] / 1e3:6.1f}k tok/s" +
          (f" | mfu {mfu:.1%}" if mfu is not None else "") +
          f" | {record['elapsed_s']:6.1f}s {record['tokens'] / 1e6:.2f}M tok / {budget}")


def eval_line(step: int, elapsed_s: float, reason: str, losses: dict):
    print(f"eval @ {elapsed_s:7.1f}s step {step:5d} ({reason}): " +
          "  ".join(f"T={k} {v:.4f}" for k, v in losses.items()))


def world_changed(saved_world: int, world: int, show: bool):
    if show:
        print(f"warning: the checkpoint was written by {saved_world} rank(s), this run has {world}: the data "
              f"windows are drawn afresh, so the run continues, but not exactly as it would have", file=sys.stderr)


def checkpoint_note(out: Path) -> str:
    return f"the last checkpoint in {out} is intact" if (out / "ckpt.pt").exists() else "no checkpoint was written yet"


def failure(message: str, code: int, show: bool = True) -> int:
    """A run that cannot go on: one 'error:' line (from the rank that knows), and its exit code."""
    if show:
        print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def stopped(reason: str, step: int, elapsed_s: float, out: Path, world: int):
    launcher = "python" if world == 1 else f"torchrun --nproc_per_node={world}"
    print(f"stopped ({reason}) at step {step} after {elapsed_s:.1f}s of training; "
          f"checkpoint in {out}.\nresume with: {launcher} train.py --resume {out}")


def summary(step: int, tokens: int, elapsed_s: float, stage_stats: dict, final: dict, jumps: list,
            mfu, wall_line: str, out: Path):
    """mfu(tokens_per_s, seq_len) -> a share; None where the device's peak is unknown."""
    print(f"done: {step} steps, {tokens:,} tokens, {elapsed_s:.1f}s of training. Per stage:")
    show_mfu = mfu is not None
    print("  seq_len   steps      tokens   train_s   tokens/s" + ("     mfu" if show_mfu else ""))
    for T, s in stage_stats.items():
        tps = s["tokens"] / max(s["seconds"], 1e-9)
        print(f"  {int(T):7d} {s['steps']:7d} {s['tokens']:11,} {s['seconds']:9.1f} {tps:10.0f}" +
              (f" {mfu(tps, int(T)):7.1%}" if show_mfu else ""))
    for j in jumps:
        print(f"  loss jump {j['from']} -> {j['to']} at step {j['step']}: " +
              (f"{j['jump']:+.4f} (mean of {j['k']} steps after {j['after']:.4f}, before {j['before']:.4f})"
               if j["jump"] is not None else f"not measured (fewer than {j['k']} steps on a side)"))
    print("final val loss (nats/token): " + "  ".join(f"T={k} {v:.4f}" for k, v in final.items()))
    print(wall_line)
    print(f"wrote {out / 'ckpt.pt'} and {out / 'metrics.jsonl'}")


def sample(model, tokenizer: str, n_tokens: int, seed: int, device: str, autocast):
    """A few hundred tokens of text from the trained model, as the run's last word."""
    torch.manual_seed(seed)
    tok = get_tokenizer(tokenizer)
    prompt = torch.tensor([tok.encode("\n") or list(tok.separator)], device=device)   # a newline, or a document start
    try:
        with autocast:
            ids = model.eval().generate(prompt, n_tokens, temperature=0.8, top_k=200, vocab_size=tok.vocab_size)
    except KeyboardInterrupt:
        print("--- sample interrupted ---")
        return
    except MemoryError as e:       # the run is saved: only the sample is lost
        print(f"error: no sample: {e}; lower --sample-tokens", file=sys.stderr)
        return
    print("--- sample ---\n" + tok.decode(ids[0].tolist()))


class Evaluator:
    """Evaluates on rank 0 and records why. A step asked for twice (a stage change that is also
    an interval, say) is evaluated once: each reason gets its record, one printed line.
    evaluate() -> {"T": val loss} is train.evaluate with the run's model and data bound."""

    def __init__(self, evaluate, metrics, wall: "WallTime", master: bool):
        self.evaluate, self.metrics, self.wall, self.master = evaluate, metrics, wall, master
        self.step, self.losses = None, None

    def __call__(self, state, reason: str):
        if not self.master:
            return None
        fresh = state.step != self.step
        if fresh:
            self.step = state.step
            with self.wall.part("evaluation"):
                self.losses = self.evaluate()
        self.metrics.write("eval", step=state.step, elapsed_s=round(state.elapsed_s, 3), tokens=state.tokens,
                           reason=reason, loss=self.losses)
        if fresh:
            eval_line(state.step, state.elapsed_s, reason, self.losses)
        return self.losses


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

    def __init__(self, tokens: int, elapsed_s: float):
        self.tokens, self.time, self.losses = tokens, elapsed_s, []

    def add(self, loss: float):
        self.losses.append(loss)

    def close(self, tokens: int, now: float):
        """-> (mean loss, tokens per second) since the last close; starts the next window."""
        loss = sum(self.losses) / len(self.losses)
        tps = (tokens - self.tokens) / max(now - self.time, 1e-9)
        self.tokens, self.time, self.losses = tokens, now, []
        return loss, tps
