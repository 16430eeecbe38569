"""The paper's experiments as commands; each writes its runs, a results table and figures.

    python experiments.py wallclock     # Fig. 1: fixed 128, fixed 1024, GrowLength, same time, 2 seeds
    python experiments.py tokens        # Fig. 2: the same three at the same token budget
    python experiments.py sizes         # Fig. 3: a second model size, with and without GrowLength
    python experiments.py ratios        # Fig. 5: {128,256,512,1024} vs {128,512,1024} vs {128,1024}, ratios
    python experiments.py extension     # Fig. 4: val loss at 64 .. 4096 (4x the longest stage), per run
    python experiments.py switch        # RoPE at the stage switch: none / pi / ntk / yarn, loss jump, 2 seeds
    python experiments.py extend-context  # a 128-token checkpoint extended to 1024: directly or grown, +/- NTK
    python experiments.py long          # GPU: 1024..16384 vs fixed 16384, same time (--scale cpu: toy sizes)
    python experiments.py docmask       # GrowLength and fixed 1024, each with and without --doc-mask, equal tokens
    python experiments.py all

Runs go to runs/exp/<experiment>/<name>-s<seed>/. A run is reused only if the config it
recorded (the first line of its metrics.jsonl) equals the one asked for now; an interrupted
one (Ctrl-C) is resumed; one run with other settings is kept, and the new settings go to the
next free folder (<name>-s<seed>-2, -3, ...); one that failed is started afresh there too.
A run is finished when its checkpoint is at its final eval's step (a run killed while writing
its last checkpoint is resumed, not kept). One experiments.py at a time uses an experiment's
folder: it holds runs/exp/<experiment>/.lock for the whole command, and a second one is refused
in one line naming it; a run folder a live train.py holds is never touched.
The table and figures go beside the runs (runs/exp/<experiment>/results.md and figures/);
--publish writes them to results/<experiment>.md and results/<experiment>/ instead, the files
the README shows, and only where none are yet (--force-publish replaces them). On a GPU, pass
the model and data through, e.g.
    --extra "--preset pythia-160m --tokenizer gpt2 --data DIR" --budget 1h
train.py runs in your working folder, so a relative --data is your file (recorded as an absolute
path). A single flag may follow --extra as its own word: --extra --compile, or --extra=--compile.
"""
import harness.boot  # noqa: F401  (first: Ctrl-C while torch imports is one line)

import contextlib
import ctypes
import fcntl
import functools
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch

import export
import plot
import prepare
import schedule as sched
import train
from harness import cli, threads
from harness.checkpoint import load_checkpoint, model_from_checkpoint
from harness.cli import USER_ERRORS, OneLineParser, UserError
from harness.config import TrainConfig, parse_config
from harness.files import atomic_write
from model import PRESETS, ROPE_SWITCHES

ROOT = Path(__file__).resolve().parent
PUBLISHED = ROOT / "results"     # the committed tables and figures: written only with --publish
GROW = "128,256,512,1024"
# name -> train.py flags; the baselines are just one-stage schedules.
ARMS = {
    "fixed128": ["--schedule", "128"],
    "fixed1024": ["--schedule", "1024"],
    "grow": ["--schedule", GROW],
}
RATIO_ARMS = {   # the 4-stage equal-ratio arm is the wallclock experiment's "grow" run, reused
    "grow-3stage": ["--schedule", "128,512,1024"],
    "grow-2stage": ["--schedule", "128,1024"],
    "grow-ratios-1124": ["--schedule", GROW, "--ratios", "1,1,2,4"],
    "grow-ratios-4211": ["--schedule", GROW, "--ratios", "4,2,1,1"],
}
# --tokens-per-step 8192: the setting the published results/*.md were measured with (train.py's
# CPU default before results/tune.md made it smaller); pinned so those tables stay true.
COMMON = ["--eval-lengths", "128,1024", "--eval-interval", "15", "--log-interval", "5", "--sample-tokens", "0",
          "--tokens-per-step", "8192"]
# Flags the experiments set themselves; --extra setting one would silently change what an arm means.
RESERVED = {"out": "", "resume": "", "stop_at_step": "", "seed": " (use --seeds)", "schedule": "",
            "ratios": "", "budget": " (use experiments.py --budget)", "max_tokens": " (use experiments.py --max-tokens)"}


class ExperimentError(UserError):
    """A flag, or a run, that stops the experiment; one line, exit code 2."""


class Stopped(Exception):
    """Ctrl-C or SIGTERM while a run trained: it has checkpointed, the same command resumes it."""

    def __init__(self, signum: int, folder: Path):
        kept = (f"{folder} has checkpointed: the same command resumes it" if (folder / "ckpt.pt").is_file() else
                f"{folder} had no checkpoint yet: the same command starts it again")
        super().__init__(f"stopped by {signal.Signals(signum).name}; {kept}")
        self.exit_code = 128 + signum


# ----------------------------------------------------------------------------- which folder an arm uses

IGNORED = ("out", "resume", "stop_at_step", "threads")   # about one invocation of train.py, not the run
FILLED_BY_TRAIN = ("budget", "attn")          # not given: train.py chooses, and records its choice
# Flags added after runs were published: a run recorded before one existed ran as its default does
# (attention across documents), so it is that run, and is reused rather than run again.
LATER_FLAGS = {"doc_mask": False, "eval_doc_mask": "auto"}


def recorded_config(folder: Path):
    """The config a run recorded as the first line of its metrics.jsonl, or None if it has none."""
    try:
        with open(folder / "metrics.jsonl", errors="replace") as f:
            first = json.loads(f.readline())
    except (OSError, ValueError):
        return None
    names = {f.name for f in fields(TrainConfig)} - set(IGNORED)
    if not isinstance(first, dict) or first.get("kind") != "config":
        return None
    first = {**LATER_FLAGS, **first}
    return first if names <= set(first) else None


def config_difference(want: TrainConfig, got: dict) -> list:
    """The settings in which a recorded config differs from the one asked for, as flags."""
    diff = []
    for f in fields(TrainConfig):
        if f.name in IGNORED:
            continue
        new, old = getattr(want, f.name), got[f.name]
        if new == old or (new is None and f.name in FILLED_BY_TRAIN):
            continue
        diff.append(f"--{f.name.replace('_', '-')} {old} (now {new})")
    return diff


def checkpoint_step(folder: Path):
    """The step of the run's checkpoint (ckpt.pt), or None if it has none that can be read."""
    try:
        return int(load_checkpoint(str(folder))["state"]["step"])
    except (*USER_ERRORS, KeyError, TypeError, ValueError):
        return None


def end_step(folder: Path):
    """The step of the run's last final (`end`) eval in metrics.jsonl, or None."""
    recs, _ = plot.read_metrics(folder / "metrics.jsonl")
    ends = [r.get("step") for r in recs if r["kind"] == "eval" and r.get("reason") == "end"]
    return ends[-1] if ends else None


def finished(folder: Path, step=None) -> bool:
    """The checkpoint says whether a run is done, not metrics.jsonl: train.py writes the final
    eval, then the final checkpoint, so a run killed between the two has an `end` record while
    its checkpoint is from an earlier step. Such a run is resumed, never evaluated as it is.
    step: the checkpoint's, if already read."""
    step = checkpoint_step(folder) if step is None else step
    return step is not None and step == end_step(folder)


def train_holding(folder: Path):
    """The pid of a live train.py that holds this run folder (harness.runfolder.RunFolder's
    flock on its .lock), or None. Probing takes the lock for an instant when it is free."""
    try:
        fd = os.open(folder / ".lock", os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 32).decode(errors="replace").strip() or "unknown"
    finally:
        os.close(fd)     # releases the lock if the probe took it
    return None


def in_use(folder: Path, pid) -> ExperimentError:
    return ExperimentError(f"{folder} is in use by a live train.py (pid {pid}): "
                           "wait for it or stop it, then run this command again")


def inspect(folder: Path, want: TrainConfig):
    """-> ("finished" | "resumable" | "other", why) for an existing run folder."""
    if (folder / "failed.json").exists():
        return "other", "failed earlier (see its failed.json)"
    got = recorded_config(folder)
    if got is None:
        return "other", "holds no recorded config"
    diff = config_difference(want, got)
    if diff:
        return "other", "was run with " + ", ".join(diff)
    pid = train_holding(folder)
    if pid is not None:   # a run in progress is neither finished nor free to resume (nor failed)
        raise in_use(folder, pid)
    step = checkpoint_step(folder)
    if finished(folder, step):
        return "finished", "finished earlier with the same config"
    if step is not None:
        return "resumable", "interrupted earlier with the same config"
    if (folder / "ckpt.pt").exists():
        return "other", "holds a checkpoint that cannot be read"
    return "other", "stopped before its first checkpoint"


# Experiment folders this process holds: folder -> its open .lock (flock'd). The kernel drops
# the locks when the process dies, so a killed experiments.py leaves none behind.
HELD = {}


def claim(folder: Path):
    """Hold an experiment folder (runs/exp/<experiment>) until the command ends: two
    experiments.py choosing, running and marking the same runs would take each other's for
    failed or foreign. The second is refused rather than made to wait: a wait of hours, in
    silence, would look like a hang; once the first is done, the same command reuses its runs."""
    if folder in HELD:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".lock", "a+")
    except OSError as e:
        raise ExperimentError(f"{folder}: cannot use the folder ({e.strerror})") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        pid = lock.read().strip() or "unknown"
        lock.close()
        raise ExperimentError(f"{folder} is in use by another experiments.py (pid {pid}): "
                              "wait for it to finish, or give another --runs") from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    HELD[folder] = lock


def release_all():
    for lock in HELD.values():
        lock.close()
    HELD.clear()


def choose_folder(base: Path, want: TrainConfig):
    """-> (folder, state): the first of base, base-2, base-3 ... that holds this very config
    (state "finished" or "resumable"), else the first free one (state "new")."""
    claim(base.parent)
    n = 1
    while True:
        folder = base if n == 1 else base.with_name(f"{base.name}-{n}")
        if not folder.exists():
            return folder, "new"
        state, why = inspect(folder, want)
        if state != "other":
            return folder, state
        print(f"  {folder.name} {why}: not used", flush=True)
        n += 1


# ----------------------------------------------------------------------------- running one arm

def run_train(cmd: list):
    """Run train.py; -> (exit code, its stderr, the signal that stopped us or None).

    Ctrl-C reaches train.py by itself (same process group) and SIGTERM is passed on: either
    way it finishes its step and checkpoints, and we wait for that rather than kill it.
    It runs in the caller's working folder, as the paths in --extra were meant."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=functools.partial(end_with, os.getpid()))
    got = []

    def on_signal(signum, _frame):
        got.append(signum)
        if signum == signal.SIGTERM:
            proc.terminate()
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _, err = proc.communicate()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return proc.returncode, err, (got[0] if got else None)


PR_SET_PDEATHSIG = 1        # <linux/prctl.h>


def end_with(parent: int):
    """Popen's preexec_fn: the arm's train.py gets SIGTERM (it checkpoints and exits) when experiments.py
    dies, however it dies -- kill -9 too, which would leave it training on as an orphan -- as prepare.py's
    tokenizer workers do (PR_SET_PDEATHSIG; Linux only)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:      # it died before we asked to be told
        os._exit(1)


def add_wall(out: Path, seconds: float):
    """wall.json: the wall seconds of every invocation of the arm's train.py, summed (a resumed arm ran
    in several), those of an invocation killed outright aside."""
    try:
        before = json.loads((out / "wall.json").read_text())["wall_s"]
    except (OSError, ValueError, KeyError, TypeError):
        before = 0.0
    if out.is_dir():
        with atomic_write(out / "wall.json", "w") as f:
            json.dump({"wall_s": round(before + seconds, 1)}, f)


def run_arm(exp, name, seed, flags, args) -> Path:
    """The folder of one finished run of train.py with these flags: reused, resumed or run."""
    argv = [*COMMON, *flags, "--seed", str(seed), *args.extra]
    want, _ = parse_config(argv)
    print(f"[{exp}] {name}-s{seed}", flush=True)
    out, state = choose_folder(args.runs / exp / f"{name}-s{seed}", want)
    if state == "finished":
        print(f"  {out.name}: finished earlier with the same config, kept")
        return out
    cmd = [sys.executable, str(ROOT / "train.py"),   # by its path: it runs where the user is (run_train)
           *(["--resume", str(out)] if state == "resumable" else [*argv, "--out", str(out)])]
    print(f"  {out.name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.time()
    code, err, sig = run_train(cmd)
    if sig is not None:
        add_wall(out, time.time() - t0)
        raise Stopped(sig, out)
    if code:
        pid = train_holding(out)
        if pid is not None:   # another train.py took the folder meanwhile: its run, not a failed one
            raise in_use(out, pid)
        reason = (err.strip().splitlines() or [f"exit code {code}"])[-1].removeprefix("error: ")
        if out.is_dir():   # never resumed: the next run of this command starts it afresh beside it
            with atomic_write(out / "failed.json", "w") as f:
                json.dump({"exit_code": code, "command": cmd, "stderr": err[-4000:]}, f)
        raise ExperimentError(f"[{exp}] {out.name} failed: {reason}")
    add_wall(out, time.time() - t0)
    if not finished(out):
        raise ExperimentError(f"[{exp}] {out.name} stopped before its end; the same command resumes it")
    return out


def find_finished(exp, name, seed, flags, args):
    """The folder of a finished run with these flags, or None; never runs anything."""
    want, _ = parse_config([*COMMON, *flags, "--seed", str(seed), *args.extra])
    out, state = choose_folder(args.runs / exp / f"{name}-s{seed}", want)
    return out if state == "finished" else None


# ----------------------------------------------------------------------------- tables and figures

def summary(out: Path) -> dict:
    recs, _ = plot.read_metrics(out / "metrics.jsonl")
    evals = [r for r in recs if r["kind"] == "eval"]
    wall = json.loads((out / "wall.json").read_text())["wall_s"] if (out / "wall.json").exists() else None
    return {"run": out.name, "train_s": evals[-1]["elapsed_s"], "tokens": evals[-1].get("tokens", 0),
            "val": evals[-1]["loss"], "evals": evals, "wall_s": wall}


def time_to_reach(evals, target, length="1024"):
    """First training time at which val loss at `length` <= target (linear between evals)."""
    pts = [(e["elapsed_s"], e["loss"][length]) for e in evals if length in e["loss"]]
    for (t0, l0), (t1, l1) in zip(pts, pts[1:]):
        if l1 <= target:
            return t0 + (t1 - t0) * (l0 - target) / (l0 - l1) if l0 > target else t0
    return None


def spread(values):
    """Mean ± half-range of the values measured; None (not measured) is left out, "n/a" if all are."""
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{sum(values) / len(values):.4f} ± {(max(values) - min(values)) / 2:.4f}" if len(values) > 1 \
        else f"{values[0]:.4f}"


def results_place(exp, args):
    """-> (table file, figures folder): beside the runs, or the committed results/ with --publish."""
    if args.publish:
        return PUBLISHED / f"{exp}.md", PUBLISHED / exp
    claim(args.runs / exp)
    return args.runs / exp / "results.md", args.runs / exp / "figures"


def write_text(exp, text, args):
    path, _ = results_place(exp, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        f.write(text)
    print(text)
    print(f"wrote {path}")


def write_table(exp, rows, args, extra_lines=()):
    lengths = sorted({k for r in rows for k in r["val"]}, key=int)
    lines = ["| run | train s | wall s | tokens | " + " | ".join(f"val@{k}" for k in lengths) + " |",
             "|---|---|---|---|" + "---|" * len(lengths)]
    for r in rows:
        lines.append(f"| {r['run']} | {r['train_s']:.0f} | {r['wall_s'] or '-'} | {r['tokens']:,} | " +
                     " | ".join(f"{r['val'].get(k, float('nan')):.4f}" for k in lengths) + " |")
    write_text(exp, "\n".join([*lines, "", *extra_lines]) + "\n", args)


def figures(exp, outs, args):
    _, folder = results_place(exp, args)
    runs = [plot.load_run(o) for o in outs]
    plot.make_out(folder)
    plot.draw(runs, folder, None)
    print(f"wrote figures to {folder}/")


# ----------------------------------------------------------------------------- the experiments

def exp_wallclock(args):
    outs = {(name, s): run_arm("wallclock", name, s, flags + ["--budget", args.budget], args)
            for s in args.seeds for name, flags in ARMS.items()}
    rows = {k: summary(v) for k, v in outs.items()}
    lines = []
    for name in ARMS:
        vals = [rows[(name, s)]["val"]["1024"] for s in args.seeds]
        lines.append(f"- {name}: val@1024 over seeds {args.seeds}: {spread(vals)} (mean ± half-range)")
    for s in args.seeds:
        target = rows[("fixed1024", s)]["val"]["1024"]
        t = time_to_reach(rows[("grow", s)]["evals"], target)
        budget = rows[("fixed1024", s)]["train_s"]
        lines.append(f"- seed {s}: GrowLength reaches fixed1024's final val@1024 ({target:.4f}) at "
                     + (f"{t:.0f}s = {t / budget:.0%} of the budget" if t else "no point within the budget"))
    write_table("wallclock", list(rows.values()), args, lines)
    figures("wallclock", [outs[(n, args.seeds[0])] for n in ARMS], args)
    return list(outs.values())


def exp_tokens(args):
    outs = [run_arm("tokens", name, args.seeds[0], flags + ["--max-tokens", str(args.max_tokens)], args)
            for name, flags in ARMS.items()]
    write_table("tokens", [summary(o) for o in outs], args, [f"- all runs: {args.max_tokens:,} tokens; compare train s."])
    figures("tokens", outs, args)
    return outs


def exp_sizes(args):
    outs = []
    for preset in args.sizes:
        for name in ("fixed1024", "grow"):
            flags = ARMS[name] + ["--budget", args.budget]
            # the default preset's runs are the wallclock experiment's: reuse, do not rerun
            outs.append(run_arm("wallclock", name, args.seeds[0], flags, args) if preset == "tiny" else
                        run_arm("sizes", f"{preset}-{name}", args.seeds[0], flags + ["--preset", preset], args))
    write_table("sizes", [summary(o) for o in outs], args)
    figures("sizes", outs, args)
    return outs


def exp_ratios(args):
    outs = [run_arm("wallclock", "grow", args.seeds[0], ARMS["grow"] + ["--budget", args.budget], args)]
    outs += [run_arm("ratios", name, args.seeds[0], flags + ["--budget", args.budget], args)
             for name, flags in RATIO_ARMS.items()]
    write_table("ratios", [summary(o) for o in outs], args)
    figures("ratios", outs, args)
    return outs


def trained(out: Path):
    """-> (model, data) of a finished run, as sample.py and train.py open them: sdpa on CPU, with
    the RoPE scaling its checkpoint's model config reached, on the data it was trained on."""
    ckpt = load_checkpoint(str(out))
    saved = ckpt["config"]
    model = model_from_checkpoint(ckpt, str(out))
    x = torch.randint(model.cfg.vocab_size, (16, 1024), generator=torch.Generator().manual_seed(0))
    threads.fit("auto", torch.no_grad()(lambda: model(x)), "cpu", verbose=False)   # for the evals (--threads)
    return model, prepare.open_data(saved["data"], saved["tokenizer"])


@torch.no_grad()
def extend(out: Path, eval_tokens: int, max_context: int) -> dict:
    """Val loss of a finished run at 64 .. max_context (direct extrapolation past training lengths)."""
    model, data = trained(out)
    lengths = [2 ** i for i in range(6, 20) if 2 ** i <= max_context]
    losses = train.evaluate(model, data, lengths, eval_tokens, "cpu", torch.autocast("cpu", enabled=False))
    with atomic_write(out / "extension.json", "w") as f:
        json.dump(losses, f)
    return losses


def exp_extension(args):
    """The wallclock runs with the settings asked for now (never runs them: that is `wallclock`)."""
    found = [find_finished("wallclock", name, s, flags + ["--budget", args.budget], args)
             for s in args.seeds for name, flags in ARMS.items()]
    outs = [o for o in found if o is not None]
    if not outs:
        raise ExperimentError("no finished wallclock runs with these settings; "
                              "run `python experiments.py wallclock` with them first")
    results = {}
    for out in outs:
        results[out.name] = extend(out, args.eval_tokens, args.max_context)
        print(out.name, results[out.name], flush=True)
    lengths = sorted({k for losses in results.values() for k in losses}, key=int)
    lines = ["| run | " + " | ".join(lengths) + " |", "|---|" + "---|" * len(lengths)]
    lines += [f"| {name} | " + " | ".join(f"{losses.get(k, float('nan')):.4f}" for k in lengths) + " |"
              for name, losses in results.items()]
    write_text("extension", "\n".join(lines) + "\n", args)
    first_seed = [o for o in found[:len(ARMS)] if o is not None]
    figures("extension", first_seed or outs, args)


def switch_flags(method, args):
    """The 4-stage schedule with one RoPE method, at a token budget (the VM is shared: equal tokens
    keep the losses comparable whatever the load), every step logged for the jump metric. Evals
    during training only at 1024; the final checkpoint is evaluated at SWITCH_EVAL afterwards."""
    return ["--schedule", GROW, "--rope-switch", method, "--max-tokens", str(args.max_tokens),
            "--log-interval", "0", "--eval-lengths", "1024", "--eval-tokens", "16384", "--eval-interval", "1e9"]


SWITCH_EVAL = (128, 1024, 4096)   # the first stage's length, the last one's, and 4x past it


@torch.no_grad()
def final_val(out: Path, eval_tokens: int) -> dict:
    """Val loss of a finished run's checkpoint at SWITCH_EVAL, kept in switch_val.json and reused only
    for the same eval_tokens. The checkpoint's model config carries the RoPE scaling, so the model
    sees the positions it was trained with."""
    path = out / "switch_val.json"
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):     # not evaluated yet, or cut short
        kept = None
    if isinstance(kept, dict) and kept.get("eval_tokens") == eval_tokens and isinstance(kept.get("loss"), dict):
        return kept["loss"]
    model, data = trained(out)
    losses = train.evaluate(model, data, SWITCH_EVAL, eval_tokens, "cpu", torch.autocast("cpu", enabled=False))
    with atomic_write(path, "w") as f:
        f.write(json.dumps({"eval_tokens": eval_tokens, "loss": losses}))
    return losses


def switch_row(out: Path, args) -> dict:
    recs, _ = plot.read_metrics(out / "metrics.jsonl")
    jumps = {f"{j['from']}->{j['to']}": j["jump"] for j in recs if j["kind"] == "jump"}
    return {**summary(out), "jumps": jumps, "val": final_val(out, args.switch_eval_tokens)}


def jump_text(v):
    return "n/a" if v is None else f"{v:+.4f}"    # None: a side of the switch had fewer than k steps


def switch_table(rows: dict, cfg: dict, args) -> str:
    """rows: (method, seed) -> switch_row; cfg: the config the runs recorded (they differ only in method, seed)."""
    switches = list(dict.fromkeys(k for r in rows.values() for k in r["jumps"]))
    lengths = [str(T) for T in SWITCH_EVAL]
    cols = [f"jump {s}" for s in switches] + [f"val@{T}" for T in lengths] + ["train s"]
    lines = ["| run | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for (m, s), r in rows.items():
        vals = [jump_text(r["jumps"].get(k)) for k in switches] + [f"{r['val'][T]:.4f}" for T in lengths]
        lines.append(f"| {m}-s{s} | " + " | ".join(vals) + f" | {r['train_s']:.0f} |")
    lines += ["", f"Over seeds {args.seeds}, mean ± half-range (n/a left out):", "",
              "| method | " + " | ".join(cols[:-1]) + " |", "|---|" + "---|" * (len(cols) - 1)]
    for m in ROPE_SWITCHES:
        per = [rows[(m, s)] for s in args.seeds]
        vals = [spread([r["jumps"].get(k) for r in per]) for k in switches] + \
               [spread([r["val"][T] for r in per]) for T in lengths]
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    k = train.JUMP_K
    lines += ["", f"- {cfg['max_tokens']:,} training tokens per run, schedule {cfg['schedule']} (equal ratios), "
              f"preset {cfg['preset']}, data {cfg['data']} ({cfg['tokenizer']} tokenizer), "
              f"{cfg['tokens_per_step']:,} tokens/step; jump = mean train loss of the first {k} steps of a stage "
              f"minus the last {k} of the previous one (schedule.loss_jumps; n/a: a side had fewer than {k} "
              f"steps); val@T: the final checkpoint on {args.switch_eval_tokens:,} validation tokens per length."]
    return "\n".join(lines) + "\n"


def exp_switch(args):
    # model.ROPE_SWITCHES: none (the paper's direct extrapolation), pi, ntk, yarn
    outs = {(m, s): run_arm("switch", m, s, switch_flags(m, args), args) for s in args.seeds for m in ROPE_SWITCHES}
    rows = {k: switch_row(v, args) for k, v in outs.items()}
    first = [outs[(m, args.seeds[0])] for m in ROPE_SWITCHES]
    write_text("switch", switch_table(rows, recorded_config(first[0]), args), args)
    figures("switch", first, args)
    _, fig_dir = results_place("switch", args)
    plot.plot_switches([plot.load_run(o) for o in first], fig_dir / "loss_around_switches.png")
    return list(outs.values())


# `extend-context` (issue 19): the paper's motivation (Sec. 2.2) as an experiment: one finished short-context
# model, extended to 1024 by continued training, directly or through a GrowLength schedule, at equal tokens.
EXTEND_BASE = "128"           # the context the base model is trained at
EXTEND_ARMS = {"direct": "1024", "grow": "256,512,1024"}
# none, and the switch section 7 of results/README.md found best: NTK alone removed the loss jump at both
# switches and ended lower at the trained length (val@1024 2.098 vs 2.148, beyond the seed spread).
# Its cost there, a worse loss past the last stage, is what the 2048 and 4096 columns measure here.
EXTEND_SWITCHES = ("none", "ntk")
EXTEND_EVAL = "128,256,512,1024"   # every stage's length, and 128: where each arm starts (the base's loss)
EXTEND_RESERVED = {"init_from": " (its runs start from the base run)", "rope_switch": " (its runs are none and ntk)"}


def same_weights(folder: Path, state: dict) -> bool:
    """Whether a Hugging Face folder holds exactly these weights (a checkpoint's model, our names)."""
    try:
        _, got = export.load_hf(folder)
    except export.ExportError:
        return False
    return got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


def exported(run: Path) -> Path:
    """A finished run as a Hugging Face folder beside it (<run>-hf), for --init-from. Kept when it holds
    the run's checkpoint; one without config.json (written last) is an interrupted export, written again;
    one holding other weights is kept, and the export goes to the next free name (-hf-2, ...)."""
    state = load_checkpoint(str(run))["model"]
    n = 1
    while True:
        folder = run.with_name(f"{run.name}-hf" + (f"-{n}" if n > 1 else ""))
        if not (folder / "config.json").is_file():
            break
        if same_weights(folder, state):
            print(f"  {folder.name}: exported earlier from this checkpoint, kept")
            return folder
        print(f"  {folder.name} holds other weights: not used", flush=True)
        n += 1
    if folder.is_dir():
        shutil.rmtree(folder)
    export.export(run, folder)
    print(f"  {folder.name}: exported {run.name}", flush=True)
    return folder


def stage_ends(out: Path) -> list:
    """Each stage of a finished run at its end: its length, steps, the mean training loss of its last
    train.JUMP_K steps (from the checkpoint's per-step losses) and the validation loss at its length from
    the eval that closes it: the one at the next stage's start (train.py runs it after the RoPE switch),
    or the final one."""
    steps = load_checkpoint(str(out))["state"]["step_losses"]
    stages = []
    for T, loss in steps:
        if not stages or stages[-1]["T"] != T:
            stages.append({"T": T, "losses": []})
        stages[-1]["losses"].append(loss)
    recs, _ = plot.read_metrics(out / "metrics.jsonl")
    closing = {r.get("reason"): r["loss"] for r in recs if r["kind"] == "eval"}
    k = train.JUMP_K
    return [{"stage": i + 1, "T": st["T"], "steps": len(st["losses"]),
             "train": sum(st["losses"][-k:]) / len(st["losses"][-k:]),
             "val": closing.get("end" if i == len(stages) - 1 else f"stage {i + 2}", {}).get(str(st["T"]))}
            for i, st in enumerate(stages)]


def loss_text(v):
    return "-" if v is None else f"{v:.4f}"     # None: not evaluated there


def extend_lines(base: dict, arms: dict, ends: dict, cfg: dict, args) -> list:
    """What the extend-context table says, computed from it. base, arms (by arm name): summary rows whose
    "val" is the loss at 64 .. --max-context; ends: run folder name -> stage_ends; cfg: an arm's config."""
    lines = ["Each stage at its end:", "",
             f"| run | stage | T | steps | train loss, last {train.JUMP_K} steps | val@T at its end |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {s['stage']} | {s['T']} | {s['steps']} | {s['train']:.4f} | {loss_text(s['val'])} |"
              for name, stages in ends.items() for s in stages]
    lengths = sorted(base["val"], key=int)
    lines += ["", f"- {base['run']}: --schedule {EXTEND_BASE}, {base['tokens']:,} tokens. Every other run starts "
              f"from its final weights (exported beside it, then --init-from) and trains on, --max-tokens "
              f"{cfg['max_tokens']:,} (in whole steps: the tokens column): --schedule {EXTEND_ARMS['direct']} "
              f"(direct) or {EXTEND_ARMS['grow']} (grow, equal ratios), --rope-switch {' or '.join(EXTEND_SWITCHES)}; "
              f"{cfg['tokens_per_step']:,} tokens/step, preset {cfg['preset']}, data {cfg['data']} "
              f"({cfg['tokenizer']} tokenizer), seed {cfg['seed']}.",
              f"- Where the runs start: val@{EXTEND_BASE} at each run's first eval: " +
              ", ".join(f"{r['run']} {loss_text(r['evals'][0]['loss'].get(EXTEND_BASE))}" for r in arms.values()) +
              f"; the base's last: {loss_text(base['evals'][-1]['loss'].get(EXTEND_BASE))}."]
    for m in EXTEND_SWITCHES:
        direct, grow = arms[f"direct-{m}"], arms[f"grow-{m}"]
        lower = [T for T in lengths if grow["val"][T] < direct["val"][T]]
        lines.append(f"- {m}: grow minus direct " + ", ".join(f"{grow['val'][T] - direct['val'][T]:+.4f} at {T}"
                                                             for T in lengths) +
                     f"; grow lower at {len(lower)} of {len(lengths)} lengths; training time "
                     f"{grow['train_s']:.0f} s (grow) vs {direct['train_s']:.0f} s (direct).")
    final, top = EXTEND_ARMS["direct"], lengths[-1]
    if int(top) > int(final):
        lines.append(f"- From {final} to {top}: " + ", ".join(f"{r['run']} {r['val'][top] - r['val'][final]:+.4f}"
                                                            for r in [base, *arms.values()]) + ".")
    lines.append(f"- Table: each run's final checkpoint at {lengths[0]} .. {top} on {args.eval_tokens:,} validation "
                 f"tokens per length. Stage ends: the train loss is the mean of the stage's last {train.JUMP_K} steps "
                 f"(all, if fewer), at its own length and RoPE; val@T is the eval closing the stage "
                 f"({cfg['eval_tokens']:,} tokens), which for a stage before the last runs after the switch: with "
                 "ntk, already at the next stage's RoPE scaling.")
    return lines


def exp_extend_context(args):
    seed, exp = args.seeds[0], "extend-context"
    base = run_arm(exp, "base", seed, ["--schedule", EXTEND_BASE, "--max-tokens", str(args.base_tokens)], args)
    start = exported(base)
    outs = {f"{kind}-{m}": run_arm(exp, f"{kind}-{m}", seed, ["--schedule", lengths, "--rope-switch", m, "--init-from",
                                                              str(start), "--max-tokens", str(args.extend_tokens),
                                                              "--eval-lengths", EXTEND_EVAL], args)
            for kind, lengths in EXTEND_ARMS.items() for m in EXTEND_SWITCHES}
    runs = [base, *outs.values()]
    rows = {o: {**summary(o), "val": extend(o, args.eval_tokens, args.max_context)} for o in runs}
    lines = extend_lines(rows[base], {name: rows[o] for name, o in outs.items()},
                         {o.name: stage_ends(o) for o in runs}, recorded_config(outs["direct-none"]), args)
    write_table(exp, list(rows.values()), args, lines)
    figures(exp, list(outs.values()), args)
    _, fig_dir = results_place(exp, args)
    plot.plot_val_context([plot.load_run(o) for o in runs], fig_dir / "val_vs_context.png")   # with the base
    return runs


# `long` (issue 12): GrowLength where attention is a large share of the step, against the fixed longest
# length at equal training time. `gpu` is the intended run; `cpu` the same code at toy sizes (tested).
LONG = {
    "gpu": {"schedule": "1024,2048,4096,8192,16384",
            "flags": ["--preset", "pythia-70m", "--tokenizer", "gpt2", "--tokens-per-step", "65536"]},
    "cpu": {"schedule": "32,64,128,256", "flags": ["--preset", "tiny", "--tokens-per-step", "2048"]},
}


def stage_throughput(out: Path) -> dict:
    """Training tokens/s per stage length, from the checkpoint's per-stage counters."""
    stats = load_checkpoint(str(out))["state"]["stage_stats"]
    return {T: s["tokens"] / max(s["seconds"], 1e-9) for T, s in stats.items()}


def exp_long(args):
    spec = LONG[args.scale]
    lengths = spec["schedule"].split(",")
    common = spec["flags"] + ["--budget", args.budget, "--eval-lengths", spec["schedule"]]
    arms = {"grow": ["--schedule", spec["schedule"]], f"fixed{lengths[-1]}": ["--schedule", lengths[-1]]}
    outs = {name: run_arm(f"long-{args.scale}", name, args.seeds[0], flags + common, args)
            for name, flags in arms.items()}
    rows = {name: summary(out) for name, out in outs.items()}
    fixed, grow = rows[f"fixed{lengths[-1]}"], rows["grow"]
    lines = [f"- {name}: tokens/s by stage " + ", ".join(f"T={T} {v:,.0f}" for T, v in stage_throughput(o).items())
             for name, o in outs.items()]
    target = fixed["val"][lengths[-1]]
    t = time_to_reach(grow["evals"], target, length=lengths[-1])
    lines.append(f"- GrowLength reaches the fixed run's final val@{lengths[-1]} ({target:.4f}) at " +
                 (f"{t:.0f}s = {t / fixed['train_s']:.0%} of its training time" if t else "no eval within the budget"))
    write_table(f"long-{args.scale}", list(rows.values()), args, lines)
    figures(f"long-{args.scale}", list(outs.values()), args)
    return list(outs.values())



# `docmask` (issue 29): does GrowLength's gain survive attention masked at document boundaries? With the
# mask, a long window over short documents is mostly short attention already, which is what GrowLength
# buys by scheduling. A corpus of documents shorter than the longest window: the standard library, by file.
DOCMASK_DATA = ["--data", "python-stdlib", "--tokenizer", "byte"]
DOCMASK_ARMS = {"grow": ["--schedule", GROW], "fixed1024": ["--schedule", "1024"]}
DOCMASK_EVAL = (64, 128, 256, 512, 1024, 2048)
# The GPU run, where the kernel's block skipping turns the mask into saved time (unmeasured so far).
DOCMASK_GPU = ("python experiments.py docmask --max-tokens 200000000 --seeds 1,2 --extra \"--preset pythia-70m "
               "--tokenizer gpt2 --tokens-per-step 65536\"")


def docmask_flags(name, masked, args):
    # 2048 tokens/step, the CPU default (results/tune.md); evals during training at 1024 only, rarely
    return [*DOCMASK_ARMS[name], *DOCMASK_DATA, "--max-tokens", str(args.max_tokens), "--tokens-per-step", "2048",
            "--eval-lengths", "1024", "--eval-interval", "120", *(["--doc-mask"] if masked else [])]


@torch.no_grad()
def both_ways(out: Path, eval_tokens: int) -> dict:
    """A finished run's checkpoint at DOCMASK_EVAL, scored without and with the document mask ->
    {"unmasked": {T: loss}, "masked": {...}}; kept in docmask_val.json for the same eval_tokens."""
    path = out / "docmask_val.json"
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = None
    if isinstance(kept, dict) and kept.get("eval_tokens") == eval_tokens:
        return kept["loss"]
    model, data = trained(out)
    off = torch.autocast("cpu", enabled=False)
    losses = {way: train.evaluate(model, data, DOCMASK_EVAL, eval_tokens, "cpu", off, masked=way == "masked")
              for way in ("unmasked", "masked")}
    with atomic_write(path, "w") as f:
        f.write(json.dumps({"eval_tokens": eval_tokens, "loss": losses}))
    return losses


def doc_lengths_text(folder: Path, lengths=(128, 256, 512, 1024)) -> list:
    """The corpus's document lengths (tokens, separator included), and what share of the causal
    query-key pairs of a window the mask keeps, measured on 256 random train windows per length."""
    import numpy as np
    import data as datalib
    tokens = datalib.TokenData(folder)
    starts = np.asarray(tokens.docs["train"])
    n = np.diff(np.append(starts, len(tokens.splits["train"])))
    q = np.percentile(n, [10, 25, 50, 75, 90])
    lines = [f"- Documents (train split, {len(n):,} of them, {tokens.tokenizer} tokens incl. the separator): "
             f"mean {n.mean():,.0f}, percentiles 10/25/50/75/90: " + " / ".join(f"{v:,.0f}" for v in q) +
             f", max {n.max():,}; shorter than 1024: {(n < 1024).mean():.0%} of the documents, holding "
             f"{n[n < 1024].sum() / n.sum():.1%} of the tokens."]
    gen, kept = torch.Generator().manual_seed(0), []
    for T in lengths:
        *_, d = tokens.get_batch("train", 256, T, gen, docs=True)
        kept.append(f"T={T} {((torch.arange(T) - d + 1).sum() / (256 * T * (T + 1) / 2)).item():.0%}")
    lines.append("- Causal query-key pairs the mask keeps (the attention work left, were masked blocks skipped), "
                 "mean over 256 random windows: " + ", ".join(kept) + ".")
    return lines


def docmask_lines(rows: dict, seeds: list, cfg: dict) -> list:
    """What the docmask table says. rows: (arm, masked, seed) -> {"val": both_ways, "tps", "train_s"}."""
    def mean(vals):
        return sum(vals) / len(vals)
    ways = ("unmasked", "masked")
    lines = ["| arm | trained | tokens/s | train s | " + " | ".join(f"{w[:1]}@{T}" for w in ways for T in DOCMASK_EVAL) + " |",
             "|---|---|---|---|" + "---|" * (2 * len(DOCMASK_EVAL))]
    for (arm, masked, seed), r in rows.items():
        lines.append(f"| {arm}-s{seed} | {'masked' if masked else 'unmasked'} | {r['tps']:,.0f} | {r['train_s']:.0f} | " +
                     " | ".join(f"{r['val'][w][str(T)]:.4f}" for w in ways for T in DOCMASK_EVAL) + " |")
    lines += ["", "u@T / m@T: validation loss (nats/byte) at context T scored without / with the document mask.", "",
              f"GrowLength's advantage, fixed1024 minus grow (positive: GrowLength lower), mean over seeds {seeds} "
              "(± half-range):", "", "| trained | scored | " + " | ".join(f"@{T}" for T in DOCMASK_EVAL) + " |",
              "|---|---|" + "---|" * len(DOCMASK_EVAL)]
    gap = {}
    for masked in (False, True):
        for w in ways:
            cells = []
            for T in DOCMASK_EVAL:
                d = [rows[("fixed1024", masked, s)]["val"][w][str(T)] - rows[("grow", masked, s)]["val"][w][str(T)]
                     for s in seeds]
                gap[(masked, w, T)] = mean(d)
                cells.append(spread(d))
            lines.append(f"| {'masked' if masked else 'unmasked'} | {w} | " + " | ".join(cells) + " |")
    speed = {(a, m): mean([rows[(a, m, s)]["tps"] for s in seeds]) for a in DOCMASK_ARMS for m in (False, True)}
    before, after = gap[(False, "unmasked", 1024)], gap[(True, "masked", 1024)]
    change = "grows" if after > before * 1.1 else "shrinks" if after < before * 0.9 else "stays about the same"
    lines += ["", f"- At 1024, each as trained: GrowLength's advantage is {before:+.4f} unmasked and {after:+.4f} "
              f"masked: it {change} under masking ({after - before:+.4f}, {after / before:.0%} of the unmasked gap)."
              if before else "",
              "- Tokens/s, mean over seeds (train tokens / train s): " + ", ".join(
                  f"{a} {'masked' if m else 'unmasked'} {v:,.0f}" for (a, m), v in speed.items()) +
              f"; GrowLength / fixed1024: {speed[('grow', False)] / speed[('fixed1024', False)]:.2f}x unmasked, "
              f"{speed[('grow', True)] / speed[('fixed1024', True)]:.2f}x masked, under whatever load each run met "
              "(compare runs made under one load only). On CPU the mask is a dense boolean SDPA mask: no work is "
              "skipped, so masking costs time here instead of saving it.",
              f"- {cfg['max_tokens']:,} tokens per run, preset {cfg['preset']}, {cfg['tokens_per_step']:,} tokens/step, "
              f"data {cfg['data']} ({cfg['tokenizer']} tokenizer), attn {cfg['attn']}; final checkpoints evaluated "
              "on the same fixed validation windows both ways."]
    return [line for line in lines if line]


def docmask_figure(rows: dict, seeds: list, path: Path):
    """Validation loss by context, scored without and with the mask, one line per arm (mean over seeds)."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, way in zip(axes, ("unmasked", "masked")):
        for i, (arm, masked) in enumerate((a, m) for a in DOCMASK_ARMS for m in (False, True)):
            ys = [sum(rows[(arm, masked, s)]["val"][way][str(T)] for s in seeds) / len(seeds) for T in DOCMASK_EVAL]
            ax.plot(DOCMASK_EVAL, ys, "o-" if masked else "s--", color=f"C{i}", ms=3,
                    label=f"{arm}, trained {'masked' if masked else 'unmasked'}")
        ax.set_xscale("log", base=2)
        ax.set(title=f"scored {way}", xlabel="evaluation context (tokens)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("val loss (nats/byte)")
    axes[1].legend(fontsize=8)
    fig.suptitle("Document masking and GrowLength: python-stdlib by file, byte tokens, equal tokens", fontsize=10)
    fig.tight_layout()
    plot.save(fig, path)


def exp_docmask(args):
    outs = {(arm, masked, s): run_arm("docmask", f"{arm}-{'masked' if masked else 'plain'}", s,
                                      docmask_flags(arm, masked, args), args)
            for s in args.seeds for arm in DOCMASK_ARMS for masked in (False, True)}
    rows = {}
    for key, out in outs.items():
        r = summary(out)
        rows[key] = {"val": both_ways(out, args.eval_tokens), "train_s": r["train_s"], "tps": r["tokens"] / r["train_s"]}
    cfg = recorded_config(next(iter(outs.values())))
    lines = [*docmask_lines(rows, args.seeds, cfg), *doc_lengths_text(prepare.resolve(cfg["data"], cfg["tokenizer"])),
             f"- Load average when this table was written, not during the runs (1/5/15 min): "
             f"{' / '.join(f'{v:.2f}' for v in os.getloadavg())}.",
             f"- GPU (unmeasured): `{DOCMASK_GPU}`."]
    write_text("docmask", "\n".join(lines) + "\n", args)
    _, fig_dir = results_place("docmask", args)
    plot.make_out(fig_dir)
    docmask_figure(rows, args.seeds, fig_dir / "val_vs_context.png")
    return list(outs.values())


# To add an experiment: a function that calls run_arm for each of its runs, then write_table
# and figures; then a line here.
EXPERIMENTS = {"wallclock": exp_wallclock, "tokens": exp_tokens, "sizes": exp_sizes, "ratios": exp_ratios,
               "extension": exp_extension, "switch": exp_switch, "extend-context": exp_extend_context,
               "long": exp_long, "docmask": exp_docmask}


# ----------------------------------------------------------------------------- command line

def parse_seeds(text: str) -> list:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise ExperimentError(f"--seeds {text!r}: give comma-separated integers, e.g. 1,2") from None
    if any(not 0 <= s < 2 ** 63 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ExperimentError(f"--seeds {text}: each seed once, each in 0 .. 2^63-1")
    return seeds


def parse_extra(text: str, reserved_flags: dict) -> list:
    """--extra's train.py flags, checked now by train.py's own parser, not at the first run;
    reserved_flags (config field -> why): those the experiments asked for set themselves."""
    try:
        extra = shlex.split(text)
    except ValueError as e:   # e.g. "No closing quotation"
        raise ExperimentError(f"--extra {text!r}: {e}") from None
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):   # train's parser prints its one line, then exits
            _, given = parse_config([*COMMON, *extra])
    except SystemExit:
        why = said.getvalue().strip().removeprefix("error: ").removesuffix(" (see --help)")
        raise ExperimentError(f"--extra {text!r}: {why}") from None
    reserved = sorted(given & set(reserved_flags))
    if reserved:
        name = reserved[0]
        raise ExperimentError(f"--extra: --{name.replace('_', '-')} is set by the experiments{reserved_flags[name]}")
    return absolute_paths(extra)


def absolute_paths(extra: list) -> list:
    """--data and --init-from as absolute paths: the config a run records then names the file
    meant, whichever folder this command (or a later one, looking for its runs) starts in."""
    cfg, given = parse_config([*COMMON, *extra])
    for name in ("data", "init_from"):
        value = getattr(cfg, name)
        if name not in given or (name == "data" and value in prepare.BUILTIN_CORPORA) or os.path.isabs(value):
            continue
        flag, path = f"--{name.replace('_', '-')}", os.path.abspath(value)
        spelled = [i for i, t in enumerate(extra) if t == flag or t.startswith(flag + "=")]
        if spelled:
            i = spelled[-1]   # the last one is the one argparse keeps
            extra = extra[:i] + [flag, path] + extra[i + (1 if "=" in extra[i] else 2):]
        else:                 # an abbreviation (--dat x): a later flag overrides it
            extra = [*extra, flag, path]
    return extra


def joined_extra(argv: list) -> list:
    """`--extra --compile` as `--extra=--compile`: argparse takes a word starting with -- for
    the next flag, not for --extra's value, unless it holds a space ('--lr 3e-3')."""
    out = []
    for token in argv:
        if out and out[-1] == "--extra":
            out[-1] = f"--extra={token}"
        else:
            out.append(token)
    return out


def asked(args) -> list:
    """The experiments this command runs: `all` is every one but `long` (for a GPU: run it by name)."""
    return [n for n in EXPERIMENTS if n != "long"] if args.experiment == "all" else [args.experiment]


def publish_targets(args) -> list:
    """The files and folders --publish would write (results_place), for the experiments asked for."""
    names = [f"long-{args.scale}" if n == "long" else n for n in asked(args)]
    return [path for n in names for path in (PUBLISHED / f"{n}.md", PUBLISHED / n)]


def check_args(args):
    """Every flag, before the first run starts (a run takes minutes)."""
    args.seeds = parse_seeds(args.seeds)
    args.extra = parse_extra(args.extra, {**RESERVED, **(EXTEND_RESERVED if "extend-context" in asked(args) else {})})
    sched.parse_duration(args.budget)
    args.sizes = args.sizes.split(",")
    unknown = [s for s in args.sizes if s not in PRESETS]
    if unknown:
        raise ExperimentError(f"--sizes: unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    for flag in ("max_tokens", "base_tokens", "extend_tokens", "eval_tokens", "switch_eval_tokens", "max_context"):
        if getattr(args, flag) < 1:
            raise ExperimentError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be >= 1")
    if not args.runs.strip():       # Path('') is the current folder: runs would land among the user's files
        raise ExperimentError("--runs '': give a folder (or leave --runs out: runs/exp)")
    args.runs = Path(args.runs).resolve()
    if args.runs.exists() and not args.runs.is_dir():
        raise ExperimentError(f"--runs {args.runs}: is a file, not a folder")
    args.publish = args.publish or args.force_publish
    there = [t for t in publish_targets(args) if t.exists()] if args.publish and not args.force_publish else []
    if there:   # checked before the first run: refused after hours of training would be worse
        raise ExperimentError(f"--publish: {there[0]} exists (committed results?); "
                              "--force-publish replaces them, or leave out --publish to write beside the runs")


def run_experiments(argv=None) -> int:
    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", choices=[*EXPERIMENTS, "all"])
    p.add_argument("--budget", default="3m", help="wallclock budget per run (default %(default)s)")
    p.add_argument("--max-tokens", type=int, default=2_000_000, help="token budget for `tokens` and `switch`")
    p.add_argument("--seeds", default="1,2", help="seeds for `wallclock` and `switch` (others use the first)")
    p.add_argument("--sizes", default="tiny,small", help="presets for `sizes`")
    p.add_argument("--base-tokens", type=int, default=2_000_000,
                   help="`extend-context`: tokens of the base run at 128 (default %(default)s)")
    p.add_argument("--extend-tokens", type=int, default=1_000_000,
                   help="`extend-context`: tokens of each run that extends it to 1024 (default %(default)s)")
    p.add_argument("--eval-tokens", type=int, default=65536,
                   help="tokens per length for `extension`'s and `extend-context`'s evals at 64 .. --max-context")
    p.add_argument("--switch-eval-tokens", type=int, default=16384, help="tokens per length for `switch`'s final evals")
    p.add_argument("--max-context", type=int, default=4096,
                   help="longest length for `extension` and `extend-context` (default: 4x their longest stage, 1024)")
    p.add_argument("--scale", default="gpu", choices=list(LONG),
                   help="for `long`: gpu (pythia-70m, 1024..16384) or cpu (tiny, 32..256, a smoke run)")
    p.add_argument("--extra", default="", help="more train.py flags for every run, quoted; one flag alone "
                   "may follow as its own word (--extra --compile)")
    p.add_argument("--threads", type=threads.threads_flag, default="auto",
                   help="CPU threads for every run and evaluation: auto (default: each train.py measures its own), "
                   "or N, set as OMP_NUM_THREADS for this process and the runs it starts")
    p.add_argument("--runs", default=str(ROOT / "runs" / "exp"), help="folder of the runs (default runs/exp)")
    p.add_argument("--publish", action="store_true",
                   help="write the tables and figures to results/ (the README's), not beside the runs; "
                   "refused where results are already there")
    p.add_argument("--force-publish", action="store_true", help="--publish, replacing the results already there")
    args = p.parse_args(joined_extra(sys.argv[1:] if argv is None else list(argv)))
    check_args(args)
    if args.threads != "auto":     # inherited by every train.py started here, whose `auto` keeps it
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    try:
        for name in asked(args):
            EXPERIMENTS[name](args)
    finally:
        release_all()
    return 0


def stopped(e: Stopped) -> int:
    print(f"error: {e}", file=sys.stderr)
    return e.exit_code


def main(argv=None) -> int:
    return cli.run(run_experiments, argv, {Stopped: stopped})


if __name__ == "__main__":
    sys.exit(main())
