"""Compile the attention kernels ahead of time for GPUs this machine does not have.

    python bench.py compile [--targets 80,90] [--out REPORT.md]   (matrix and report: compile_report.py)

Triton needs no GPU to compile: `triton.compile(ASTSource(...), target=GPUTarget("cuda", 90,
32))` lowers a kernel to PTX and runs the `ptxas` shipped in the triton wheel to make a cubin.
Compiling is not running: this proves a kernel builds and shows its shared memory, registers
and spills; its numerics and speed on a GPU stay unmeasured until a GPU runs it.

What is compiled is what the model launches. `launches()` calls the kernel module's own
launchers (`_flash_fwd`, `_flash_bwd`) on meta tensors inside `recorded_launches()`, so each
kernel's arguments, constexprs and autotune configs come from the launch code itself, and
Triton's own binder turns them into the signature and specialisation a GPU run would compile.
A kernel parameter the launcher does not pass, or a launcher argument this file does not know
how to fill (`LAUNCHER_ARGS`), fails loudly instead of compiling something else.

Each compile runs in a worker process with TRITON_INTERPRET=0 (`python -m kernels.compile
--worker`): a process that imported the kernels under the interpreter cannot compile them.
Results are cached on disk by the exact compile inputs, so a second run only re-reads them.
"""
import contextlib
import hashlib
import inspect
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

# Target compute capability -> (GPUs, max shared memory per block in bytes, opt-in): the
# limits the CUDA programming guide lists per capability (163, 99, 227, 227 KiB).
TARGETS = {
    80: ("A100", 163 * 1024),
    89: ("L4, RTX 4090", 99 * 1024),
    90: ("H100, H200", 227 * 1024),
    100: ("B200", 227 * 1024),
}
KERNELS = ("_attn_fwd", "_attn_bwd_delta", "_attn_bwd_dkdv", "_attn_bwd_dq")
DTYPES = ("bfloat16", "float16", "float32")
# The launchers' arguments, as launches() fills them. A new launcher argument must be added
# here, with what to pass for it, or launches() refuses to run. docs: the document mask's
# (2, B, T) int32 starts and ends (attention.doc_bounds), or None.
LAUNCHER_ARGS = {
    "_flash_fwd": ("q", "k", "v", "causal", "sm_scale", "docs"),
    "_flash_bwd": ("do", "q", "k", "v", "o", "lse", "causal", "sm_scale", "docs"),
}
CACHE_DIR = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                         "growlength", "compile")
_TC_INSTRUCTIONS = ("tcgen05.mma", "wgmma.mma_async", "mma.sync")


class CompileCheckError(Exception):
    """The compile check cannot derive what a kernel is launched with."""


def launches(dtype, head_dim, causal, B=2, T=1024, H=4, docs=False):
    """{kernel name: (kernel, args, kwargs)} as the model launches them for one (B, H, T, D)
    attention, forward and backward, recorded on meta tensors (nothing runs). q, k, v are
    views of a fused (B, T, H, 3, D) projection, as in model.py. T=1024 and H=4 keep every
    integer a multiple of 16, as at training lengths (Triton specialises on that). docs:
    with document starts (--doc-mask; causal only), the kernels' HAS_DOCS variant."""
    import torch
    from kernels import attention

    for name, known in LAUNCHER_ARGS.items():
        params = tuple(inspect.signature(getattr(attention, name)).parameters)
        if params != known:
            raise CompileCheckError(
                f"attention.{name}{params} changed: kernels/compile.py fills {known}; teach "
                f"LAUNCHER_ARGS and launches() what to pass")
    dt = getattr(torch, dtype)
    qkv = torch.empty(B, T, H, 3, head_dim, dtype=dt, device="meta")
    q, k, v = (qkv[:, :, :, i].transpose(1, 2) for i in range(3))  # (B, H, T, D) views
    scale = head_dim ** -0.5
    bounds = torch.empty(2, B, T, dtype=torch.int32, device="meta") if docs else None
    with attention.recorded_launches() as calls:
        o, lse = attention._flash_fwd(q, k, v, causal, scale, bounds)
        attention._flash_bwd(torch.empty_like(o), q, k, v, o, lse, causal, scale, bounds)
    found = {_fn(kernel).__name__: (kernel, args, kwargs) for kernel, args, kwargs in calls}
    if sorted(found) != sorted(KERNELS):
        raise CompileCheckError(f"recorded launches {sorted(found)}, expected {sorted(KERNELS)}: "
                                f"a kernel launched outside attention._launch is not checked")
    return found


def _fn(kernel):
    """The @triton.jit function under an Autotuner (or the kernel itself)."""
    return kernel.fn if hasattr(kernel, "configs") else kernel


def configs(kernel):
    """The kernel's autotune configs; a plain @triton.jit kernel has one, Triton's defaults."""
    import triton
    return list(kernel.configs) if hasattr(kernel, "configs") else [triton.Config({})]


def check_binding(kernel, args, kwargs, config):
    """Raise CompileCheckError unless the launch fills every kernel parameter exactly once."""
    names = list(_fn(kernel).arg_names)
    given = list(names[:len(args)]) + list(kwargs) + list(config.kwargs)
    missing = [n for n in names if n not in given]
    extra = [n for n in given if n not in names] + (["<positional>"] if len(args) > len(names) else [])
    twice = sorted({n for n in given if given.count(n) > 1})
    if missing or extra or twice:
        raise CompileCheckError(f"{_fn(kernel).__name__}: launch leaves {missing} unset, passes "
                                f"unknown {extra}, sets {twice} twice")


def describe(config, kwargs):
    """'128x64 w4 s3': block sizes (the config's, else the launch's), warps, stages."""
    blocks = {**kwargs, **config.kwargs}
    blocks = "x".join(str(blocks[k]) for k in ("BLOCK_M", "BLOCK_N") if k in blocks)
    return f"{blocks} w{config.num_warps} s{config.num_stages}"


# ----------------------------------------------------------------------------------------
# One compile (in a worker process, TRITON_INTERPRET=0)


def _compile_inputs(job):
    """(fn, signature, constexprs, attrs, options, target, description, pruned) for a job, via
    Triton's own binder: the specialisation a GPU launch with these arguments would make.
    The binder and `_pack_args` are Triton internals (as of the pinned 3.7.1): should they
    move, every compile fails with the error, rather than guessing a signature."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    from kernels import attention

    kernel, args, kwargs = launches(job["dtype"], job["head_dim"], job["causal"],
                                    docs=job.get("docs", False))[job["kernel"]]
    config = configs(kernel)[job["config"]]
    check_binding(kernel, args, kwargs, config)
    fn = _fn(kernel)
    target = GPUTarget("cuda", job["target"], 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    launch_kwargs = dict(kwargs, **config.all_kwargs())
    bound, specialization, opts = binder(*args, **launch_kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, launch_kwargs, bound,
                                                          specialization, opts)
    # Whether the kernel's own prune (attention._skip_spilling) keeps it from the autotuner there.
    skipped = attention.spills(job["kernel"], config, job["head_dim"], job["target"] // 10)
    return fn, signature, constexprs, attrs, options, target, describe(config, kwargs), skipped


def _ptxas_log(ptx, capability):
    """`ptxas -v`'s report on the PTX, with the flags Triton's own ptxas call uses."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        return subprocess.run([get_ptxas(capability).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
                               f"--gpu-name={sm_arch_from_capability(capability)}", src,
                               "-o", os.path.join(tmp, "k.o")],
                              capture_output=True, text=True, check=True).stderr


def _ptxas_info(log):
    """(registers, spill store bytes, spill load bytes) from a `ptxas -v` log."""
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return (int(regs.group(1)) if regs else None,
            *(int(x) for x in (spills.groups() if spills else (0, 0))))


@contextlib.contextmanager
def _ptxas_log_printed():
    """Triton's knob that prints its ptxas log (TRITON_DUMP_PTXAS_LOG), on for one compile."""
    from triton import knobs
    before = knobs.nvidia.dump_ptxas_log
    knobs.nvidia.dump_ptxas_log = True
    try:
        yield
    finally:
        knobs.nvidia.dump_ptxas_log = before


def compile_job(job, cache_dir):
    """One compile -> the job's result dict (cached under cache_dir when given)."""
    import triton
    from triton.compiler import ASTSource
    t0 = time.time()
    fn, signature, constexprs, attrs, options, target, desc, pruned = _compile_inputs(job)
    job = dict(job, pruned=pruned)
    src = ASTSource(fn, signature, constexprs, attrs)
    key = hashlib.sha256(f"{triton.__version__}-{src.hash()}-{target}-{sorted(options.__dict__.items())}"
                         .encode()).hexdigest()
    path = os.path.join(cache_dir, key + ".json") if cache_dir else None
    if path and os.path.exists(path):
        with open(path) as f:
            return dict(json.load(f), **job, cached=True)
    result = dict(config_desc=desc, ok=False, error=None)
    try:
        # Triton runs `ptxas -v` itself and prints its log when asked: one ptxas run, not two.
        # A compile Triton finds in its own cache runs no ptxas, so then we run it.
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), _ptxas_log_printed():
            compiled = triton.compile(src, target=target, options=options.__dict__)
        ptx = compiled.asm["ptx"]
        log = printed.getvalue()
        regs, spill_store, spill_load = _ptxas_info(
            log if "Used" in log else _ptxas_log(ptx, job["target"]))
        result.update(ok=True, shared=compiled.metadata.shared, registers=regs,
                      spill_store=spill_store, spill_load=spill_load,
                      tensor_cores=[i for i in _TC_INSTRUCTIONS if i in ptx])
    except Exception as e:  # the compiler's own complaint, one line, is the result
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        result["error"] = f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]
    result["seconds"] = round(time.time() - t0, 1)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(result, f)
        os.replace(path + ".tmp", path)
    return dict(result, **job, cached=False)


def _worker():
    """Read jobs (JSON lines) from stdin, write one result line per job to stdout."""
    cache_dir = os.environ.get("GROWLENGTH_COMPILE_CACHE") or None
    for line in sys.stdin:
        job = json.loads(line)
        try:
            result = compile_job(job, cache_dir)
        except CompileCheckError as e:
            result = dict(job, ok=False, error=f"CompileCheckError: {e}", config_desc="?", cached=False)
        print(json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------
# Many compiles (in the caller's process)


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _worker_env(cache_dir, env):
    """The compile workers' environment: compiled Triton (not the interpreter), one thread."""
    worker_env = dict(os.environ, TRITON_INTERPRET="0", OMP_NUM_THREADS="1",
                      GROWLENGTH_COMPILE_CACHE=cache_dir or "", **(env or {}))
    worker_env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, worker_env.get("PYTHONPATH")]))
    return worker_env


def run_jobs(jobs, workers=1, cache_dir=CACHE_DIR, progress=None, env=None):
    """Compile jobs in `workers` subprocesses -> results in job order. progress(i, n, result)
    is called as each finishes. env: extra environment for the workers (e.g. TRITON_CACHE_DIR).
    Each worker takes the next job when it is free: compile times range from 1 s to minutes."""
    worker_env = _worker_env(cache_dir, env)
    results, lock, errors = [None] * len(jobs), threading.Lock(), []
    todo = iter(range(len(jobs)))

    def serve():
        log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty worker cannot block on it
        proc = subprocess.Popen([sys.executable, "-m", "kernels.compile", "--worker"], cwd=_ROOT,
                                env=worker_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=log, text=True)
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                break
            proc.stdin.write(json.dumps(jobs[i]) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            if not line:
                break
            with lock:
                results[i] = json.loads(line)
                if progress:
                    progress(sum(r is not None for r in results), len(jobs), results[i])
        proc.stdin.close()
        code = proc.wait()
        log.seek(0)
        stderr = log.read()
        if code != 0:
            errors.append(stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {code}")

    threads = [threading.Thread(target=serve) for _ in range(min(workers, len(jobs)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors or None in results:
        raise RuntimeError(f"compile worker failed: {errors[0] if errors else 'no result'}")
    return results


def config_counts(env=None):
    """{kernel name: number of autotune configs} as a GPU process sees them (under the
    interpreter each kernel has one small config), asked of a TRITON_INTERPRET=0 process."""
    out = subprocess.run([sys.executable, "-m", "kernels.compile", "--configs"], cwd=_ROOT,
                         env=_worker_env(None, env), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"compile worker failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout)


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker()
elif __name__ == "__main__" and sys.argv[1:] == ["--configs"]:
    calls = launches("bfloat16", 64, True)
    print(json.dumps({name: len(configs(kernel)) for name, (kernel, _, _) in calls.items()}))
