"""Figures from runs' metrics.jsonl, the paper's plots for your own runs.

    python plot.py runs/fixed128 runs/fixed1024 runs/grow --out figures/

Writes loss_vs_time.png, loss_vs_tokens.png (train loss, stage changes marked),
val_vs_time.png (validation loss at one context length) and val_vs_context.png
(validation loss against context length: the final eval, or extension.json if a run has one).
Loss jumps at stage switches (`jump` records) are written next to the stage marks, and
`plot_switches` draws the per-step training loss around each switch (experiments.py switch).
"""
import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


def load_run(folder: Path) -> dict:
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{folder}: no metrics.jsonl")
    recs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            recs.append(json.loads(line))
        except ValueError:
            raise ValueError(f"{path}:{n}: not a JSON line") from None
    by = {k: [r for r in recs if r.get("kind") == k] for k in ("config", "train", "stage", "eval", "jump")}
    ext = folder / "extension.json"
    by["extension"] = json.loads(ext.read_text()) if ext.is_file() else None
    by["name"] = folder.name
    return by


def _stage_marks(ax, run, x_key, color):
    for s in run["stage"][1:]:       # the first stage starts at 0: nothing to mark
        ax.axvline(s[x_key] / (1e6 if x_key == "tokens" else 1), color=color, ls=":", lw=0.8, alpha=0.7)


def _jump_marks(ax, run, x_key, color):
    """The measured loss jump (schedule.loss_jumps) written at the stage change it belongs to."""
    at = {s["step"]: s[x_key] / (1e6 if x_key == "tokens" else 1) for s in run["stage"]}
    for j in run["jump"]:
        if j["jump"] is not None and j["step"] - 1 in at:   # the stage record is written before its first step
            ax.annotate(f"{j['jump']:+.2f}", (at[j["step"] - 1], 1.0), xycoords=("data", "axes fraction"),
                        xytext=(2, -12 - 10 * int(color[1:])), textcoords="offset points", color=color, fontsize=7)


def plot_train(runs, x_key, xlabel, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, run in enumerate(runs):
        color = f"C{i}"
        xs = [r[x_key] / (1e6 if x_key == "tokens" else 1) for r in run["train"]]
        ax.plot(xs, [r["loss"] for r in run["train"]], color=color, lw=1.2, label=run["name"])
        _stage_marks(ax, run, x_key, color)
        _jump_marks(ax, run, x_key, color)
    ax.set(xlabel=xlabel, ylabel="train loss (nats/token)",
           title="Training loss (dotted: stage changes, numbers: loss jump)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Plot growlength runs.")
    p.add_argument("runs", nargs="+", help="run folders holding metrics.jsonl")
    p.add_argument("--out", default="figures", help="folder for the PNGs (default %(default)s)")
    p.add_argument("--val-length", default=None, help="context length for val_vs_time (default: the largest shared)")
    args = p.parse_args(argv)
    try:
        runs = [load_run(Path(r)) for r in args.runs]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_train(runs, "elapsed_s", "training wallclock (s)", out / "loss_vs_time.png")
    plot_train(runs, "tokens", "tokens (millions)", out / "loss_vs_tokens.png")
    shared = set.intersection(*[set(e["loss"]) for r in runs for e in r["eval"][-1:]] or [set()])
    length = args.val_length or (max(shared, key=int) if shared else None)
    if length:
        plot_val_time(runs, str(length), out / "val_vs_time.png")
    plot_val_context(runs, out / "val_vs_context.png")
    print(f"wrote figures to {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
