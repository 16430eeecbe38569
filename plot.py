"""Figures from runs' metrics.jsonl, the paper's plots for your own runs.

    python plot.py runs/grow                                      # -> runs/grow/figures/
    python plot.py runs/fixed128 runs/fixed1024 runs/grow --out figures/

Writes loss_vs_time.png, loss_vs_tokens.png (train loss, stage changes marked),
val_vs_time.png (validation loss at one context length) and val_vs_context.png
(validation loss against context length: the final eval, or extension.json if a run has one).
Loss jumps at stage switches (`jump` records) are written next to the stage marks, and
`plot_switches` draws the per-step training loss around each switch (experiments.py switch).
"""
import harness.boot  # noqa: F401  (first: Ctrl-C while matplotlib imports is one line)

import json
import math
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from harness import cli
from harness.cli import OneLineParser, UserError
from harness.files import atomic_write

matplotlib.use("Agg")   # files only: no display on servers and CI


class PlotError(UserError):
    """A run folder or flag plot.py cannot use; reported as one line, exit code 2."""


# What each kind of record must hold for the figures. A run that crashed mid-write leaves a
# half JSON line, and older or hand-edited files may lack keys: such records are skipped
# (and counted), never a traceback.
NEEDS = {"train": ("step", "elapsed_s", "tokens", "loss"), "stage": ("step", "elapsed_s", "tokens"),
         "eval": ("elapsed_s",), "jump": ("step", "from", "to")}
MAY_BE_NULL = {"jump": ("jump",)}   # present, a number or null: null when a stage had fewer than k steps


# A larger step, time, token count or loss is no record of a run (a hand-edited 1e308 made matplotlib's
# tick locator raise): treated like a missing field.
LARGEST = 1e15


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and abs(x) < LARGEST


def _losses(x):
    """{"128": 2.1, ...} with the lengths whose loss is missing or null dropped; None if unusable."""
    if not isinstance(x, dict):
        return None
    kept = {k: v for k, v in x.items() if str(k).isdigit() and _number(v)}
    return kept or None


def clean_record(line: str):
    """One metrics line -> its record if the figures can use it, else None."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    kind = rec.get("kind")
    if kind == "config":
        return rec
    if kind not in NEEDS or not all(_number(rec.get(k)) for k in NEEDS[kind]):
        return None
    if not all(k in rec and (rec[k] is None or _number(rec[k])) for k in MAY_BE_NULL.get(kind, ())):
        return None
    if kind == "eval":
        rec["loss"] = _losses(rec.get("loss"))
        if rec["loss"] is None:
            return None
    return rec


def read_metrics(path: Path):
    """-> (usable records, line numbers skipped). Undecodable bytes count as a bad line, too."""
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise PlotError(f"{path}: cannot read ({e.strerror})") from None
    recs, skipped = [], []
    for n, line in enumerate(text.splitlines(), 1):
        rec = clean_record(line) if line.strip() else None
        if rec is None:
            if line.strip():
                skipped.append(n)
        else:
            recs.append(rec)
    return recs, skipped


def load_run(folder: Path) -> dict:
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise PlotError(f"{folder}: no metrics.jsonl")
    recs, skipped = read_metrics(path)
    if skipped:
        print(f"warning: {path}: skipped {len(skipped)} unusable line(s) (line {skipped[0]} first): "
              "cut short by a crash, or missing fields", file=sys.stderr)
    by = {k: [r for r in recs if r.get("kind") == k] for k in ("config", "train", "stage", "eval", "jump")}
    if not by["train"] and not by["eval"]:      # before any figure is written: nothing to draw
        raise PlotError(f"{path}: no usable train or eval records; nothing to plot (no figure was written)")
    by["extension"] = load_extension(folder / "extension.json")
    by["name"] = folder.name
    return by


def load_extension(path: Path):
    """experiments.py extension's losses by context length, if the run has a usable file."""
    if not path.is_file():
        return None
    try:
        losses = _losses(json.loads(path.read_text(errors="replace")))
    except (OSError, ValueError):
        losses = None
    if losses is None:
        print(f"warning: {path}: not a table of losses by length; ignored", file=sys.stderr)
    return losses


def save(fig, path: Path):
    """All or nothing, like every file the project writes; the format is given, since the
    temp file's name does not end in .png."""
    fig.tight_layout()
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=120)
    finally:
        plt.close(fig)


def _stage_marks(ax, run, x_key, color):
    for s in run["stage"][1:]:       # the first stage starts at 0: nothing to mark
        ax.axvline(s[x_key] / (1e6 if x_key == "tokens" else 1), color=color, ls=":", lw=0.8, alpha=0.7)


def _jump_marks(ax, run, x_key, i):
    """The measured loss jump (schedule.loss_jumps) written at the stage change it belongs to; run i's
    numbers one line below run i-1's, in its colour."""
    at = {s["step"]: s[x_key] / (1e6 if x_key == "tokens" else 1) for s in run["stage"]}
    for j in run["jump"]:
        if j["jump"] is not None and j["step"] - 1 in at:   # the stage record is written before its first step
            ax.annotate(f"{j['jump']:+.2f}", (at[j["step"] - 1], 1.0), xycoords=("data", "axes fraction"),
                        xytext=(2, -12 - 10 * i), textcoords="offset points", color=f"C{i}", fontsize=7)


def plot_train(runs, x_key, xlabel, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, run in enumerate(runs):
        color = f"C{i}"
        xs = [r[x_key] / (1e6 if x_key == "tokens" else 1) for r in run["train"]]
        ax.plot(xs, [r["loss"] for r in run["train"]], color=color, lw=1.2, label=run["name"])
        _stage_marks(ax, run, x_key, color)
        _jump_marks(ax, run, x_key, i)
    ax.set(xlabel=xlabel, ylabel="train loss (nats/token)",
           title="Training loss (dotted: stage changes, numbers: loss jump)")
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)


def plot_val_time(runs, length, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, run in enumerate(runs):
        pts = [(e["elapsed_s"], e["loss"][length]) for e in run["eval"] if length in e["loss"]]
        if pts:
            ax.plot(*zip(*pts), "o-", color=f"C{i}", ms=3, label=run["name"])
    ax.set(xlabel="training wallclock (s)", ylabel=f"val loss at context {length}",
           title=f"Validation loss at context {length}")
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)


def plot_val_context(runs, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, run in enumerate(runs):
        losses = run["extension"] or (run["eval"][-1]["loss"] if run["eval"] else {})
        if losses:
            xs = sorted(int(k) for k in losses)
            ax.plot(xs, [losses[str(x)] for x in xs], "o-", color=f"C{i}", ms=3, label=run["name"])
    ax.set_xscale("log", base=2)
    ax.set(xlabel="evaluation context length (tokens)", ylabel="val loss (nats/token)",
           title="Context extension: validation loss by context length")
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)


def plot_switches(runs, path, window=30):
    """Per-step training loss from `window` steps before to `window` after each stage switch, one
    panel per switch, one line per run (needs runs logged every step: --log-interval 0)."""
    switches = sorted({(j["from"], j["to"]) for run in runs for j in run["jump"]})
    fig, axes = plt.subplots(1, max(1, len(switches)), figsize=(max(6.5, 4 * len(switches)), 4), sharey=True,
                             squeeze=False)
    for ax, (a, b) in zip(axes[0], switches):
        for i, run in enumerate(runs):
            j = next((j for j in run["jump"] if (j["from"], j["to"]) == (a, b)), None)
            if j is None:
                continue
            pts = [(r["step"] - j["step"], r["loss"]) for r in run["train"] if abs(r["step"] - j["step"]) <= window]
            jump = "n/a" if j["jump"] is None else f"{j['jump']:+.3f}"
            ax.plot(*zip(*pts), color=f"C{i}", lw=1, label=f"{run['name']} ({jump})")
        ax.axvline(-0.5, color="k", ls=":", lw=0.8)
        ax.set(title=f"T {a} -> {b}", xlabel="steps from the switch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("train loss (nats/token), per step")
    fig.suptitle("Training loss around each stage switch\n(legend: jump = mean of k steps after - k before)", fontsize=10)
    fig.tight_layout()
    save(fig, path)


def make_out(out: Path):
    if out.exists() and not out.is_dir():
        raise PlotError(f"--out {out}: is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PlotError(f"--out {out}: cannot create the folder ({e.strerror})") from None


def draw(runs, out: Path, val_length):
    if val_length is not None and not any(str(val_length) in e["loss"] for r in runs for e in r["eval"]):
        evaluated = sorted({int(k) for r in runs for e in r["eval"] for k in e["loss"]})
        raise PlotError(f"--val-length {val_length}: no run was evaluated at that length "
                        f"(lengths evaluated: {', '.join(map(str, evaluated)) or 'none'})")
    plot_train(runs, "elapsed_s", "training wallclock (s)", out / "loss_vs_time.png")
    plot_train(runs, "tokens", "tokens (millions)", out / "loss_vs_tokens.png")
    length = val_length if val_length is not None else default_val_length(runs)
    if length is not None:
        plot_val_time(runs, str(length), out / "val_vs_time.png")
    plot_val_context(runs, out / "val_vs_context.png")


def default_val_length(runs):
    """The longest training stage that every run was evaluated at (the README's headline: val@1024
    for the default run), else the longest length they share; None if they share none."""
    shared = set.intersection(*[set(e["loss"]) for r in runs for e in r["eval"][-1:]] or [set()])
    stages = {T for r in runs for c in r["config"][:1] for T in str(c.get("schedule", "")).split(",")}
    trained = shared & stages
    return max(trained or shared, key=int) if shared else None


def plot_runs(argv=None) -> int:
    p = OneLineParser(description="Plot growlength runs.")
    p.add_argument("runs", nargs="+", help="run folders holding metrics.jsonl")
    p.add_argument("--out", help="folder for the PNGs (default: figures/ in the run folder, the first one's "
                   "when comparing several)")
    p.add_argument("--val-length", type=int, default=None,
                   help="context length for val_vs_time (default: the longest training stage every run was "
                   "evaluated at, else the longest length they share)")
    args = p.parse_args(argv)
    runs = [load_run(Path(r)) for r in args.runs]
    out = Path(args.out) if args.out else Path(args.runs[0]) / "figures"
    make_out(out)
    draw(runs, out, args.val_length)
    print(f"wrote figures to {out}/")
    return 0


def main(argv=None) -> int:
    return cli.run(plot_runs, argv)


if __name__ == "__main__":
    sys.exit(main())
