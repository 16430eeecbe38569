"""Microbenchmarks, one subcommand each.

    python bench.py attention [--out FILE]

`attention`: the Triton kernel in kernels/attention.py against PyTorch SDPA (flash
backend, else cuDNN, else whatever SDPA picks), bf16, causal, forward and
forward+backward, at a fixed number of tokens per batch so every row does the work of
one training micro-batch: B = tokens // T. H = width // D, as in a model of that width.
Each row first checks our output and gradients against SDPA's (a broken kernel must
not post a fast number), then times with triton.testing.do_bench; autotuning happens
during that check, outside the timings, and is most of the run time (the config
lists in kernels/attention.py are kept short so the whole run fits in a few minutes).
Needs a CUDA GPU.

FLOPs counted (causal halves the forward): forward 4*B*H*T^2*D * 0.5, backward 2.5x
the forward, so forward+backward 3.5x. speedup = SDPA time / our time (> 1: ours faster).
"""

import argparse
import contextlib
import datetime
import os
import platform
import sys


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


def bench_attention(args):
    import torch
    if not torch.cuda.is_available():
        print("bench.py attention needs a CUDA GPU", file=sys.stderr)
        return 2
    if os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes"):
        print("bench.py attention: unset TRITON_INTERPRET to time the compiled kernels",
              file=sys.stderr)
        return 2
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
        f"width {args.width} (H = width // D), SDPA backend: {sdpa_name}",
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
            q, k, v, do = (torch.randn(B, H, T, D, device=dev, dtype=dtype, generator=g)
                           for _ in range(4))

            # Correctness first, against SDPA (this call also autotunes our kernels for T).
            def fwd_bwd(fn):
                qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
                o = fn(qg, kg, vg)
                o.backward(do)
                return o.detach(), (qg.grad, kg.grad, vg.grad)

            o_ours, g_ours = fwd_bwd(ours)
            o_ref, g_ref = fwd_bwd(sdpa)
            err_o = (o_ours.float() - o_ref.float()).abs().max().item()
            err_g = max((a.float() - b.float()).abs().max().item() for a, b in zip(g_ours, g_ref))
            # bf16 keeps ~3 significant digits; two correct kernels differ by a few units
            # in the last place of the largest values, a wrong one by O(1).
            ok = err_o <= 2e-2 * o_ref.abs().max().item() and all(
                (a.float() - b.float()).abs().max().item() <= 2e-2 * b.abs().max().item()
                for a, b in zip(g_ours, g_ref))
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
            qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
            # grad_to_none: without it every rep would also time a gradient accumulation.
            fb_ours = do_bench(lambda: ours(qg, kg, vg).backward(do), grad_to_none=[qg, kg, vg],
                               rep=args.rep)
            fb_sdpa = do_bench(lambda: sdpa(qg, kg, vg).backward(do), grad_to_none=[qg, kg, vg],
                               rep=args.rep)
            del qg, kg, vg

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
            del q, k, v, do
            torch.cuda.empty_cache()

    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    if failed:
        print(f"{failed} row(s) failed the correctness check", file=sys.stderr)
        return 1
    return 0


def _int_list(text):
    return [int(x) for x in text.split(",") if x]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
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
    p.add_argument("--rep", type=int, default=50,
                   help="milliseconds of repetitions per do_bench measurement (default: 50)")
    p.add_argument("--out", metavar="FILE", help="also write the table as markdown to FILE")
    p.set_defaults(func=bench_attention)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
