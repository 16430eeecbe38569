"""Where a run computes: device and dtype, the device's peak (for MFU), what fits in memory, and
the one-line reports when it does not. On a GPU, `warm_up` finds each stage's micro-batch before
the clock starts; on a CPU almost all of this returns at once."""
import sys
import time
from contextlib import nullcontext

import torch

import schedule as sched
from harness.cli import UserError
from kernels import interpreting
from harness.distributed import Ranks, min_over_ranks
from model import flops_per_token, machine_memory, rope_table_len

# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, from the vendors' data sheets; MFU is
# printed only for these devices (on anything else we do not know the denominator).
EXIT_OOM = 4
PEAK_BF16_TFLOPS = {"A100": 312, "H100": 989, "H200": 989}


def pick_device(name: str, local_rank: int) -> str:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else \
            "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available")
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: MPS is not available")
    return name


def pick_dtype(name: str, device: str):
    if name == "auto":
        name = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
    return getattr(torch, name)


def pick_attn(name, device: str) -> str:
    """The default backend is chosen for this device, not saved: a GPU run can resume on a CPU."""
    attn = name or ("triton" if device.startswith("cuda") else "sdpa")
    if attn == "triton" and not device.startswith("cuda") and not interpreting():
        raise UserError("--attn triton needs a CUDA device (or TRITON_INTERPRET=1 to run the kernel slowly on CPU)")
    return attn


def autocast_for(device: str, dtype):
    return torch.autocast(device.split(":")[0], dtype=dtype) if dtype != torch.float32 else nullcontext()


def sync(device: str):
    """CUDA runs ahead of Python: wait for it before reading the clock."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_flops(device) -> float | None:
    """The bf16 peak of a CUDA device in FLOP/s, or None if unknown (CPU, MPS, other GPUs)."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    return next((tf * 1e12 for key, tf in PEAK_BF16_TFLOPS.items() if key in name), None)


class Mfu:
    """Model FLOPs utilisation: achieved training FLOP/s over the devices' bf16 peak."""

    def __init__(self, model_cfg, device: str, world: int):
        self.model_cfg, self.peak, self.world = model_cfg, peak_flops(device), world

    def __call__(self, tokens_per_s: float, seq_len: int) -> float | None:
        """None where the device's peak is unknown (CPU, MPS, other GPUs)."""
        if self.peak is None:
            return None
        return tokens_per_s * flops_per_token(self.model_cfg, seq_len) / (self.peak * self.world)


def check_memory(plan: sched.Plan, eval_lengths, mcfg):
    """Absurd lengths or batch sizes fail here in one line, not in an allocation that takes
    the machine down: RoPE tables (cos and sin, per layer) and one micro-batch of token ids,
    against the machine's memory."""
    total = machine_memory()
    longest = max([st.seq_len for st in plan.stages] + eval_lengths)
    tables = 2 * 4 * int(mcfg.head_dim * mcfg.rotary_pct) * mcfg.n_layer * rope_table_len(longest)
    ids = max(st.micro_batch * (st.seq_len + 1) for st in plan.stages) * 8 * 2     # x and y, int64
    for what, size in (("the RoPE tables for length " + str(longest), tables), ("one micro-batch of token ids", ids)):
        if size > total // 4:
            raise UserError(f"{what} would take {size / 2 ** 30:.1f} GiB of this machine's "
                            f"{total / 2 ** 30:.0f} GiB: choose shorter lengths or fewer tokens per step")


def oom_possible(device: str) -> bool:
    """Only CUDA reports running out of memory as an exception we can catch and retry;
    on CPU or MPS the first sign is the OS killing the process."""
    return device.startswith("cuda")


def warm_up(plan: sched.Plan, model, train_model, autocast, device: str, ranks: Ranks, *,
            auto: bool, compile: bool, optimizer_started: bool, docs: bool = False) -> sched.Plan:
    """Before the clock starts, at every stage length: with --micro-batch-tokens auto on a GPU,
    find the largest micro-batch that fits; compile and autotune that shape (modded-nanogpt
    warms every stage the same way), so neither costs training time. -> the plan to train.
    docs (--doc-mask): warm the document-masked kernels and graph, the ones training runs."""
    probe = auto and oom_possible(device)
    if not (probe or compile or device.startswith("cuda")):
        return plan
    # AdamW allocates two fp32 moments per parameter at its first step: hold that much (and 5%
    # for the allocator) while probing, so a micro-batch that fits now still fits then.
    reserve = (0 if optimizer_started else 8 * model.num_params()) + int(0.05 * device_memory(device))
    args = (model, train_model.module if ranks.world > 1 else train_model, autocast, device, docs)
    micro = []
    for st in plan.stages:
        t0 = time.perf_counter()
        m = fit_micro_batch(args, st, ranks.world, reserve) if probe else st.micro_batch
        if not probe and not try_step(args, m, st.seq_len, 0):
            raise UserError(f"stage T={st.seq_len}: a micro-batch of {m} x {st.seq_len} tokens does not fit in "
                            f"GPU memory; lower --micro-batch-tokens or leave it at auto")
        micro.append(m)
        if ranks.master:
            print(f"warm-up T={st.seq_len}: micro-batch {m} x {st.seq_len}, {time.perf_counter() - t0:.1f} s", flush=True)
    # every rank runs the same shapes: the smallest that fits everywhere
    return plan.with_micro_batches(min_over_ranks(micro, ranks, device))


def fit_micro_batch(args, stage: sched.Stage, world: int, reserve: int) -> int:
    """The largest divisor of the per-rank batch whose training step fits in memory: the whole
    batch first, halved while it does not fit, then bisected between the last size that failed
    and the first that fit. Each try costs a compile, so few tries."""
    per_rank = stage.batch_size // world
    sizes = sched.divisors(per_rank)
    m, failed = per_rank, per_rank + 1
    while not try_step(args, m, stage.seq_len, reserve):
        if m == 1:
            raise UserError(f"stage T={stage.seq_len}: not even one sequence fits in GPU memory; "
                            f"use a smaller --preset or shorter --schedule lengths")
        m, failed = max(d for d in sizes if d <= m // 2), m
    between = [d for d in sizes if m < d < failed]
    while between:
        mid = between[len(between) // 2]
        if try_step(args, mid, stage.seq_len, reserve):
            m, between = mid, [d for d in between if d > mid]
        else:
            between = [d for d in between if d < mid]
    return m        # compiled and autotuned already: its try was a real forward and backward


def device_memory(device: str) -> int:
    return torch.cuda.get_device_properties(torch.device(device)).total_memory if device.startswith("cuda") else 0


def try_step(args, m: int, T: int, reserve_bytes: int) -> bool:
    model, _, _, device, _ = args
    reserve, fits = None, True
    try:
        reserve = torch.empty(reserve_bytes, dtype=torch.uint8, device=device)
        warm_step(*args, m, T)
    except torch.OutOfMemoryError:
        fits = False
    del reserve
    model.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()     # give back what the failed try took before the next one
    return fits


def warm_step(model, step_model, autocast, device: str, docs: bool, m: int, T: int):
    """Forward and backward on random tokens at (m, T): compiles, autotunes and allocates as
    a real step would. Runs the model without DDP, so no rank waits on another while probing."""
    x = torch.randint(model.cfg.vocab_size, (m, T + 1), device=device)
    with autocast:
        _, loss = step_model(x[:, :-1], x[:, 1:], *[torch.zeros(m, T, dtype=torch.int32, device=device)] * docs)
    loss.backward()
    model.zero_grad(set_to_none=True)


def out_of_memory_line(stage: sched.Stage, i: int, step: int, rank: int, world: int, ckpt_note: str) -> str:
    """Printed by the rank that ran out (another process may have taken memory on its GPU)."""
    who = f"rank {rank}: " if world > 1 else ""
    tokens = stage.micro_batch * stage.seq_len
    fix = (f"lower --micro-batch-tokens (e.g. {max(stage.seq_len, tokens // 2)})" if stage.micro_batch > 1
           else "use a smaller --preset or shorter --schedule lengths")
    return (f"error: {who}out of GPU memory at step {step} (stage {i + 1}, T={stage.seq_len}, micro-batch "
            f"{stage.micro_batch} x {stage.seq_len} = {tokens} tokens); {fix}, or free the GPU; {ckpt_note}")


def oom_outside_step(_error) -> int:
    print("error: out of GPU memory outside a training step (loading the model, or an evaluation); "
          "free the GPU or use a smaller --preset", file=sys.stderr)
    return EXIT_OOM
