"""--threads: how many threads torch's CPU kernels use, chosen by measuring, not by counting cores.

torch's default is one intra-op thread per core. That is fastest only on an idle machine: when
another process shares the cores (a browser on a laptop, a second run, a CI box), every op waits
for its slowest thread, and on this project's 2-core VM a 2-thread step took 1.3-7.7x a 1-thread
step (results/threads.md). So `auto` (the default) times a few real forward/backward passes at
each thread count and keeps the fastest; `--threads N` fixes it. The count changes only the
speed: the model computes the same losses at any count (model.LayerNorm, tests/test_threads.py).

On a GPU the kernels run on the device and `auto` leaves torch's default alone. An
`OMP_NUM_THREADS` set in the environment is a choice already made: `auto` keeps it.
"""
import argparse
import os
import time

import torch

from harness.device import warm_step

PROBES = 3      # timed passes per count: the fastest of them is the count's time


def threads_flag(text: str):
    """--threads: 'auto' or a count >= 1 (the argparse type of every entry point)."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of threads >= 1, not {text!r}")
    if n > usable_cores():      # torch would start them all (100,000 threads hang a laptop)
        raise argparse.ArgumentTypeError(f"{n} threads: this process may use {usable_cores()} core(s); give at most that")
    return n


def usable_cores() -> int:
    """The cores this process may run on (a container or `taskset` may allow fewer than exist)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:    # macOS has no affinity call
        return os.cpu_count() or 1


def candidates(cores: int) -> list:
    """1, 2, 4, ... up to the usable cores, and the cores themselves: every count on a laptop,
    a handful on a 64-core server (each count costs a few passes)."""
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return counts + [cores]


def fit(setting, probe, device: str, what: str = "", verbose: bool = True):
    """Set torch's intra-op threads for the work `probe()` stands for; -> a record for metrics.jsonl
    ({"threads": n, "ms": {count: ms per pass}}) or None where nothing was measured or set.
    `probe` runs one representative pass (a training micro-step, a few generated tokens)
    and must leave no trace: the caller gives it its own random numbers and zeroes its grads."""
    if setting != "auto":
        torch.set_num_threads(setting)
        return {"threads": setting, "how": "--threads"}
    if not str(device).startswith("cpu"):
        return None
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        return {"threads": torch.get_num_threads(), "how": "OMP_NUM_THREADS"}
    ms, best = {}, float("inf")
    probe()                              # untimed: lazy allocations, caches
    for n in candidates(usable_cores()):
        torch.set_num_threads(n)
        t = float("inf")
        for _ in range(PROBES):
            t0 = time.perf_counter()
            probe()
            t = min(t, time.perf_counter() - t0)
            if t > 2 * best:             # clearly slower (on a busy machine often 5-10x): spare the rest
                break
        ms[n], best = round(t * 1000, 1), min(best, t)
    chosen = min(ms, key=lambda n: (ms[n], n))     # a tie goes to fewer threads
    torch.set_num_threads(chosen)
    if verbose:
        times = ", ".join(f"{n}: {t:.0f} ms" for n, t in sorted(ms.items(), key=lambda kv: -kv[0]))
        print(f"threads{' ' + what if what else ''}: {chosen} ({times} per pass)", flush=True)
    return {"threads": chosen, "how": "auto", "ms": {str(n): t for n, t in ms.items()}}


def quiet_rng(probe):
    """`probe` run with the global random state saved and restored: probing draws no numbers
    the run would otherwise have drawn (a sample's text, anything seeded once)."""
    def run():
        with torch.random.fork_rng(devices=[]):
            probe()
    return run


class StageThreads:
    """train.py's --threads: fitted at the start of each stage length, outside the training clock
    (a longer sequence may want more threads, and the machine's load may have changed since the
    last stage); each fit is a `threads` record in metrics.jsonl. A fixed count is set at once."""

    def __init__(self, setting, device: str, master: bool, docs: bool = False):
        self.setting, self.device, self.master, self.docs = setting, device, master, docs
        self.fitted = set()
        if setting != "auto":
            torch.set_num_threads(setting)

    def __call__(self, model, autocast, stage, metrics, wall):
        key = stage.seq_len if self.setting == "auto" else "fixed"
        if key in self.fitted:
            return
        self.fitted.add(key)
        # a real micro-step of this stage: forward and backward on random tokens, grads zeroed after
        probe = quiet_rng(lambda: warm_step(model, model, autocast, self.device, self.docs, stage.micro_batch,
                                            stage.seq_len))
        with wall.part("warm-up"):
            record = fit(self.setting, probe, self.device, f"T={stage.seq_len}", self.master)
        if record is not None:
            metrics.write("threads", seq_len=stage.seq_len, **record)
