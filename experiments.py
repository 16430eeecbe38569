"""The paper's experiments as commands; each writes its runs, a results table and figures.

    python experiments.py wallclock     # Fig. 1: fixed 128, fixed 1024, GrowLength, same time, 2 seeds
    python experiments.py tokens        # Fig. 2: the same three at the same token budget
    python experiments.py sizes         # Fig. 3: a second model size, with and without GrowLength
    python experiments.py ratios        # Fig. 5: {128,256,512,1024} vs {128,512,1024} vs {128,1024}, ratios
    python experiments.py extension     # Fig. 4: val loss at 64 .. 4096 (4x the longest stage), per run
    python experiments.py switch        # RoPE at the stage switch: none / pi / ntk / yarn, loss jump, 2 seeds
    python experiments.py long          # GPU: 1024..16384 vs fixed 16384, same time (--scale cpu: toy sizes)
    python experiments.py all

Runs go to runs/exp/<experiment>/<name>-s<seed>/ (a finished run is not run again), tables
to results/<experiment>.md, figures to results/<experiment>/. On a GPU, pass the model and
data through, e.g.  --extra "--preset pythia-160m --tokenizer gpt2 --data DIR" --budget 1h.
"""
import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

import plot
import train
from data import TokenData, resolve
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent
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
COMMON = ["--eval-lengths", "128,1024", "--eval-interval", "15", "--log-interval", "5", "--sample-tokens", "0"]


def run_arm(exp, name, seed, flags, args):
    out = ROOT / "runs" / "exp" / exp / f"{name}-s{seed}"
    done = out / "metrics.jsonl"
    if done.exists() and any(json.loads(line).get("reason") == "end" for line in done.read_text().splitlines()
                             if '"eval"' in line):
        print(f"[{exp}] {out.name}: finished earlier, kept")
        return out
    cmd = [sys.executable, "train.py", *COMMON, *flags, "--seed", str(seed), "--out", str(out),
           *shlex.split(args.extra)]
    if out.exists():
        cmd = [sys.executable, "train.py", "--resume", str(out)]
    print(f"[{exp}] {out.name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.time()
    code = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL).returncode
    if code:   # train.py has printed its own one-line reason on stderr
        sys.exit(f"error: [{exp}] {out.name} failed with exit code {code}")
    (out / "wall.json").write_text(json.dumps({"wall_s": round(time.time() - t0, 1)}))
    return out


def summary(out: Path) -> dict:
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if r["kind"] == "eval"]
    wall = json.loads((out / "wall.json").read_text())["wall_s"] if (out / "wall.json").exists() else None
    return {"run": out.name, "train_s": evals[-1]["elapsed_s"], "tokens": evals[-1]["tokens"],
            "val": evals[-1]["loss"], "evals": evals, "wall_s": wall}


def time_to_reach(evals, target, length="1024"):
    """First training time at which val loss at `length` <= target (linear between evals)."""
    pts = [(e["elapsed_s"], e["loss"][length]) for e in evals if length in e["loss"]]
    for (t0, l0), (t1, l1) in zip(pts, pts[1:]):
        if l1 <= target:
            return t0 + (t1 - t0) * (l0 - target) / (l0 - l1) if l0 > target else t0
    return None


def spread(values):
    return f"{sum(values) / len(values):.4f} ± {(max(values) - min(values)) / 2:.4f}" if len(values) > 1 \
        else f"{values[0]:.4f}"


def write_table(exp, rows, extra_lines=()):
    lengths = sorted({k for r in rows for k in r["val"]}, key=int)
    lines = [f"| run | train s | wall s | tokens | " + " | ".join(f"val@{k}" for k in lengths) + " |",
             "|---|---|---|---|" + "---|" * len(lengths)]
    for r in rows:
        lines.append(f"| {r['run']} | {r['train_s']:.0f} | {r['wall_s'] or '-'} | {r['tokens']:,} | " +
                     " | ".join(f"{r['val'].get(k, float('nan')):.4f}" for k in lengths) + " |")
    text = "\n".join([*lines, "", *extra_lines]) + "\n"
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / f"{exp}.md").write_text(text)
    print(text)


def figures(exp, outs):
    plot.main([str(o) for o in outs] + ["--out", str(ROOT / "results" / exp)])


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
    write_table("wallclock", list(rows.values()), lines)
    figures("wallclock", [outs[(n, args.seeds[0])] for n in ARMS])
    return list(outs.values())


def exp_tokens(args):
    outs = [run_arm("tokens", name, args.seeds[0], flags + ["--max-tokens", str(args.max_tokens)], args)
            for name, flags in ARMS.items()]
    write_table("tokens", [summary(o) for o in outs], [f"- all runs: {args.max_tokens:,} tokens; compare train s."])
    figures("tokens", outs)
    return outs


def exp_sizes(args):
    outs = []
    for preset in args.sizes.split(","):
        for name in ("fixed1024", "grow"):
            flags = ARMS[name] + ["--budget", args.budget]
            # the default preset's runs are the wallclock experiment's: reuse, do not rerun
            outs.append(run_arm("wallclock", name, args.seeds[0], flags, args) if preset == "tiny" else
                        run_arm("sizes", f"{preset}-{name}", args.seeds[0], flags + ["--preset", preset], args))
    write_table("sizes", [summary(o) for o in outs])
    figures("sizes", outs)
    return outs


def exp_ratios(args):
    outs = [run_arm("wallclock", "grow", args.seeds[0], ARMS["grow"] + ["--budget", args.budget], args)]
    outs += [run_arm("ratios", name, args.seeds[0], flags + ["--budget", args.budget], args)
             for name, flags in RATIO_ARMS.items()]
    write_table("ratios", [summary(o) for o in outs])
    figures("ratios", outs)
    return outs


@torch.no_grad()
def extend(out: Path, eval_tokens: int, max_context: int) -> dict:
    """Val loss of a finished run at 64 .. max_context (direct extrapolation past training lengths)."""
    ckpt = train.load_checkpoint(str(out))
    cfg = ckpt["config"]
    model = GPT(GPTConfig(**ckpt["model_config"], attn="sdpa"))
    model.load_state_dict(ckpt["model"])
    data = TokenData(resolve(cfg["data"], cfg["tokenizer"]))
    lengths = [2 ** i for i in range(6, 20) if 2 ** i <= max_context]
    losses = train.evaluate(model, data, lengths, eval_tokens, "cpu", torch.autocast("cpu", enabled=False))
    (out / "extension.json").write_text(json.dumps(losses))
    return losses


def exp_extension(args):
    outs = sorted(p.parent for p in (ROOT / "runs" / "exp" / "wallclock").glob("*/ckpt.pt"))
    if not outs:
        sys.exit("error: no finished wallclock runs; run `python experiments.py wallclock` first")
    results = {}
    for out in outs:
        results[out.name] = extend(out, args.eval_tokens, args.max_context)
        print(out.name, results[out.name], flush=True)
    lengths = sorted({k for losses in results.values() for k in losses}, key=int)
    lines = ["| run | " + " | ".join(lengths) + " |", "|---|" + "---|" * len(lengths)]
    lines += [f"| {name} | " + " | ".join(f"{losses.get(k, float('nan')):.4f}" for k in lengths) + " |"
              for name, losses in results.items()]
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "extension.md").write_text("\n".join(lines) + "\n")
    figures("extension", [o for o in outs if o.name.endswith(f"-s{args.seeds[0]}")])


SWITCHES = ("none", "pi", "ntk", "yarn")   # model.ROPE_SWITCHES; none is the paper's direct extrapolation


def switch_flags(method, args):
    """The 4-stage schedule with one RoPE method, at a token budget (the VM is shared: equal tokens
    keep the losses comparable whatever the load), every step logged for the jump metric. Evals
    during training only at 1024; the final checkpoint is evaluated at SWITCH_EVAL afterwards."""
    return ["--schedule", GROW, "--rope-switch", method, "--max-tokens", str(args.max_tokens),
            "--log-interval", "0", "--eval-lengths", "1024", "--eval-tokens", "16384", "--eval-interval", "1e9"]


SWITCH_EVAL = (128, 1024, 4096)   # the first stage's length, the last one's, and 4x past it


@torch.no_grad()
def final_val(out: Path, eval_tokens: int) -> dict:
    """Val loss of a finished run's checkpoint at SWITCH_EVAL, kept in switch_val.json. The checkpoint's
    model config carries the RoPE scaling, so the model sees the positions it was trained with."""
    path = out / "switch_val.json"
    if not path.exists():
        ckpt = train.load_checkpoint(str(out))
        model = GPT(GPTConfig(**ckpt["model_config"], attn="sdpa"))
        model.load_state_dict(ckpt["model"])
        data = TokenData(resolve(ckpt["config"]["data"], ckpt["config"]["tokenizer"]))
        losses = train.evaluate(model, data, SWITCH_EVAL, eval_tokens, "cpu", torch.autocast("cpu", enabled=False))
        path.write_text(json.dumps({"eval_tokens": eval_tokens, "loss": losses}))
    return json.loads(path.read_text())["loss"]


def switch_row(out: Path, args) -> dict:
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    jumps = {f"{j['from']}->{j['to']}": j["jump"] for j in recs if j["kind"] == "jump"}
    return {**summary(out), "jumps": jumps, "val": final_val(out, args.switch_eval_tokens)}


def exp_switch(args):
    outs = {(m, s): run_arm("switch", m, s, switch_flags(m, args), args) for s in args.seeds for m in SWITCHES}
    rows = {k: switch_row(v, args) for k, v in outs.items()}
    switches = list(rows[(SWITCHES[0], args.seeds[0])]["jumps"])
    cols = [f"jump {s}" for s in switches] + ["val@128", "val@1024", "val@4096", "train s"]
    lines = ["| run | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for (m, s), r in rows.items():
        vals = [r["jumps"][k] for k in switches] + [r["val"][k] for k in ("128", "1024", "4096")]
        lines.append(f"| {m}-s{s} | " + " | ".join(f"{v:+.4f}" if i < len(switches) else f"{v:.4f}"
                                                     for i, v in enumerate(vals)) + f" | {r['train_s']:.0f} |")
    lines += ["", f"Over seeds {args.seeds}, mean ± half-range:", "",
              "| method | " + " | ".join(cols[:-1]) + " |", "|---|" + "---|" * (len(cols) - 1)]
    for m in SWITCHES:
        per = [rows[(m, s)] for s in args.seeds]
        vals = [spread([r["jumps"][k] for r in per]) for k in switches] + \
               [spread([r["val"][k] for r in per]) for k in ("128", "1024", "4096")]
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    lines += ["", f"- {args.max_tokens:,} training tokens per run, schedule {GROW} (equal ratios), tiny, byte "
              "Shakespeare, 8192 tokens/step; jump = mean train loss of the first 5 steps of a stage minus "
              "the last 5 of the previous one (schedule.loss_jumps); val@T: the final checkpoint on "
              f"{args.switch_eval_tokens:,} validation tokens per length."]
    text = "\n".join(lines) + "\n"
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "switch.md").write_text(text)
    print(text)
    fig_dir = ROOT / "results" / "switch"
    fig_dir.mkdir(exist_ok=True)
    runs = [plot.load_run(outs[(m, args.seeds[0])]) for m in SWITCHES]
    plot.plot_switches(runs, fig_dir / "loss_around_switches.png")
    figures("switch", [outs[(m, args.seeds[0])] for m in SWITCHES])
    return list(outs.values())


# `long` (issue 12): GrowLength where attention is a large share of the step, against the fixed longest
# length at equal training time. `gpu` is the intended run; `cpu` the same code at toy sizes (tested).
LONG = {
    "gpu": {"schedule": "1024,2048,4096,8192,16384",
            "flags": ["--preset", "pythia-70m", "--tokenizer", "gpt2", "--tokens-per-step", "65536",
                      "--micro-batch-tokens", "32768"]},
    "cpu": {"schedule": "32,64,128,256", "flags": ["--preset", "tiny", "--tokens-per-step", "2048"]},
}


def stage_throughput(out: Path) -> dict:
    """Training tokens/s per stage length, from the checkpoint's per-stage counters."""
    stats = train.load_checkpoint(str(out))["state"]["stage_stats"]
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
    write_table(f"long-{args.scale}", list(rows.values()), lines)
    figures(f"long-{args.scale}", list(outs.values()))
    return list(outs.values())


EXPERIMENTS = {"wallclock": exp_wallclock, "tokens": exp_tokens, "sizes": exp_sizes,
               "ratios": exp_ratios, "extension": exp_extension, "switch": exp_switch, "long": exp_long}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", choices=[*EXPERIMENTS, "all"])
    p.add_argument("--budget", default="3m", help="wallclock budget per run (default %(default)s)")
    p.add_argument("--max-tokens", type=int, default=2_000_000, help="token budget for `tokens` and `switch`")
    p.add_argument("--seeds", default="1,2", help="seeds for `wallclock` and `switch` (others use the first)")
    p.add_argument("--sizes", default="tiny,small", help="presets for `sizes`")
    p.add_argument("--eval-tokens", type=int, default=65536, help="tokens per length for `extension`")
    p.add_argument("--switch-eval-tokens", type=int, default=16384, help="tokens per length for `switch`'s final evals")
    p.add_argument("--max-context", type=int, default=4096,
                   help="longest length for `extension` (default: 4x the 1024 of the longest stage)")
    p.add_argument("--scale", default="gpu", choices=list(LONG),
                   help="for `long`: gpu (pythia-70m, 1024..16384) or cpu (tiny, 32..256, a smoke run)")
    p.add_argument("--extra", default="", help="more train.py flags for every run, quoted")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    everything = [name for name in EXPERIMENTS if name != "long"]   # `long` is for a GPU: run it by name
    for name in (everything if args.experiment == "all" else [args.experiment]):
        EXPERIMENTS[name](args)


if __name__ == "__main__":
    main()
