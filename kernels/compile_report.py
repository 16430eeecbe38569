"""The compile matrix of `python bench.py compile` and its markdown report.

Which compiles (the issue's matrix, kernels/README.md#compiled-ahead-of-time):
- every autotune config of every kernel at bf16, causal, D = 64 and 128, on sm_80 and sm_90
  (the targets among those asked for), what the autotuner can pick on an A100 or H100;
- each kernel's first config at every dtype x D x causal on every target asked for (the one
  `fixed_configs()` runs in the GPU tests), and causal with documents (--doc-mask's HAS_DOCS
  variant). Duplicates of the first part are compiled once.
"""
import json
import os

from kernels.compile import CACHE_DIR, DTYPES, KERNELS, TARGETS

HEAD_DIMS = (16, 32, 64, 128)
CONFIG_TARGETS = (80, 90)  # every config is compiled for these
CONFIG_HEAD_DIMS = (64, 128)


def _job(kernel, target, dtype, head_dim, causal, config, docs=False):
    return dict(kernel=kernel, target=target, dtype=dtype, head_dim=head_dim, causal=causal,
                config=config, **({"docs": True} if docs else {}))


def matrix(targets, counts, part="all"):
    """The jobs, in report order. counts: {kernel: number of configs} (compile.config_counts).
    part: "all", "configs" (every config, sm_80/90) or "first" (first config, every dtype)."""
    jobs = []
    if part in ("all", "configs"):
        jobs += [_job(k, t, "bfloat16", d, True, i)
                 for t in targets if t in CONFIG_TARGETS for d in CONFIG_HEAD_DIMS
                 for k in KERNELS for i in range(counts[k])]
    if part in ("all", "first"):
        jobs += [_job(k, t, dt, d, c, 0, docs) for t in targets for dt in DTYPES for d in HEAD_DIMS
                 for c, docs in ((True, False), (False, False), (True, True)) for k in KERNELS
                 if not (docs and k == "_attn_bwd_delta")]   # delta takes no documents
    unique = {json.dumps(j, sort_keys=True): j for j in jobs}
    return list(unique.values())


def _cell(r):
    """One compile in a table cell: 'regs r / spill B / smem KiB / tensor cores', or its error."""
    if r is None:
        return "–"
    if not r["ok"]:
        return f"**fails** ({r['error']})"
    spill = _spill(r)
    tc = {"wgmma.mma_async": "wgmma", "tcgen05.mma": "tcgen05", "mma.sync": "mma.sync"}
    tcs = ",".join(tc[t] for t in r["tensor_cores"]) or "no TC"
    flag = " ⚠" if spill or r["shared"] > TARGETS[r["target"]][1] else ""
    return f"{r['registers']} r, {f'**{spill} B spill**' if spill else '0 spill'}, " \
           f"{r['shared'] / 1024:.0f} KiB, {tcs}{flag}"


def _key(r, *fields):
    return tuple(r[f] for f in fields)


def summary_rows(results):
    """[(target, kernel, 'ok/n', max shared KiB, worst spill bytes of a config the autotuner may
    pick there, the same at fp32)]: bf16/fp16 and fp32 apart, fp32 being for checking only."""
    def worst(rs, key):
        return max((key(r) for r in rs), default=0)
    rows = []
    for t in sorted({r["target"] for r in results}):
        for k in KERNELS:
            rs = [r for r in results if r["target"] == t and r["kernel"] == k]
            ok = [r for r in rs if r["ok"] and not r.get("pruned")]
            half, fp32 = ([r for r in ok if (r["dtype"] == "float32") == f] for f in (False, True))
            if rs:
                rows.append((t, k, f"{sum(r['ok'] for r in rs)}/{len(rs)}",
                             worst(half, lambda r: r["shared"]) / 1024, worst(fp32, lambda r: r["shared"]) / 1024,
                             worst(half, _spill), worst(fp32, _spill)))
    return rows


def _spill(r):
    return r["spill_store"] + r["spill_load"]


def _per_config(results):
    """{(kernel, D, config description): {target: result}} of the every-config part, in order."""
    rows = {}
    for r in sorted(results, key=lambda r: (KERNELS.index(r["kernel"]), r["head_dim"], r["config"])):
        if (r["dtype"] == "bfloat16" and r["causal"] and not r.get("docs") and r["target"] in CONFIG_TARGETS
                and r["head_dim"] in CONFIG_HEAD_DIMS):
            rows.setdefault(_key(r, "kernel", "head_dim", "config_desc"), {})[r["target"]] = r
    return rows


def _per_config_table(results, baseline):
    """Every config at bf16, causal, per target; with a baseline, its numbers beside (a config
    only the baseline has is listed after, as removed)."""
    now, before = _per_config(results), _per_config(baseline or [])
    if not now:
        return []
    targets = sorted({t for by_target in now.values() for t in by_target})
    cols = [f"sm_{t}" + (f" | sm_{t} before" if baseline else "") for t in targets]
    out = ["", "## Every autotune config, bf16, causal", "",
           "Cell: registers per thread, spill bytes (store + load) from `ptxas -v`, shared memory, "
           "tensor-core instructions in the PTX; ⚠ marks a spill or a block over the target's shared "
           "memory. *Pruned*: the autotuner never times it on that target (listed as spilling beside "
           "the config in kernels/attention.py)." + (" *Before*: the baseline run named above; "
                                                      "*removed*: no longer in the list." if baseline else ""),
           "", "| kernel | D | config | " + " | ".join(cols) + " |",
           "|---|---|---|" + "---|" * (len(targets) * (2 if baseline else 1))]
    keys = list(now) + sorted((k for k in before if k not in now),
                              key=lambda k: (KERNELS.index(k[0]), k[1]))
    for key in keys:
        cells = []
        for t in targets:
            r = now.get(key, {}).get(t)
            cells.append(_cell(r) + (" — *pruned here*" if r and r.get("pruned") else "")
                         if key in now else "*removed*")
            if baseline:
                cells.append(_cell(before.get(key, {}).get(t)))
        out.append(f"| `{key[0]}` | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    return out


def render(results, header, baseline=None):
    """The markdown report. baseline: an earlier run's results (JSON), shown as 'before'."""
    out = list(header)
    out += ["", "## Summary: target x kernel (every compile below)", "",
            "Over the configs the autotuner may pick there (pruned ones left out); bf16 and fp16 "
            "apart from fp32, which is for checking (IEEE dots without tensor cores).", "",
            "| target | kernel | compiled | max shared memory, bf16/fp16 · fp32 (limit) "
            "| worst spills (store + load), bf16/fp16 · fp32 |", "|---|---|---|---|---|"]
    for t, k, ok, smem, smem32, spill, spill32 in summary_rows(results):
        out.append(f"| sm_{t} ({TARGETS[t][0]}) | `{k}` | {ok} | {smem:.0f} · {smem32:.0f} KiB "
                   f"({TARGETS[t][1] // 1024}) | {spill} · {spill32} B |")

    out += _per_config_table(results, baseline)

    first = [r for r in results if r["config"] == 0]
    out += ["", "## First config, every dtype x D x causal", "",
            "The config `fixed_configs()` runs in the GPU tests; the cell as above. causal "
            "*docs*: causal within documents (`--doc-mask`).", "",
            "| target | dtype | D | causal | " + " | ".join(f"`{k}`" for k in KERNELS) + " |",
            "|---|---|---|---|" + "---|" * len(KERNELS)]
    cells = {(*_key(r, "target", "dtype", "head_dim"), _mask(r), r["kernel"]): r for r in first}
    for t, dt, d, c in sorted({k[:4] for k in cells}, key=lambda k: (k[0], k[1], k[2], k[3])):
        out.append(f"| sm_{t} | {dt} | {d} | {c[2:]} | "
                   + " | ".join(_cell(cells.get((t, dt, d, c, k))) for k in KERNELS) + " |")

    failed = [r for r in results if not r["ok"]]
    out += ["", f"## Failures: {len(failed)}", ""]
    out += [f"- `{r['kernel']}` sm_{r['target']} {r['dtype']} D={r['head_dim']} causal={_mask(r)[2:]} "
            f"{r['config_desc']}: {r['error']}" for r in failed]
    return "\n".join(out) + "\n"


def _mask(r):
    """'1 yes', '2 docs', '3 no': the mask a compile was for, sortable (report order)."""
    return "2 docs" if r.get("docs") else "1 yes" if r["causal"] else "3 no"


def _progress(i, n, r):
    what = (f"sm_{r['target']} {r['kernel']} {r['dtype']} D={r['head_dim']} "
            f"{'causal, docs' if r.get('docs') else 'causal' if r['causal'] else 'full'} {r['config_desc']}")
    took = "cached" if r["cached"] else f"{r['seconds']} s"
    print(f"[{i:3d}/{n}] {what}: {_cell(r)} ({took})", flush=True)


def run(targets, workers, part="all", baseline=None, command="python bench.py compile"):
    """Compile the matrix -> (markdown report, raw results as JSON)."""
    import datetime
    import platform
    import time

    import torch
    import triton

    from kernels.compile import config_counts, run_jobs
    t0 = time.time()
    jobs = matrix(targets, config_counts(), part)
    print(f"{len(jobs)} compiles, {workers} worker(s); cache in {CACHE_DIR}", flush=True)
    results = run_jobs(jobs, workers=workers, progress=_progress)
    took = time.time() - t0
    cached = sum(r["cached"] for r in results)
    header = [
        "# Ahead-of-time compile report: kernels/attention.py", "",
        f"- command: `{command}`",
        f"- date {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, "
        f"triton {triton.__version__}, torch {torch.__version__}, python {platform.python_version()}",
        f"- machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, no GPU needed; "
        f"{workers} worker(s); {len(results)} compiles ({cached} from the cache) in {took:.0f} s",
        "- each kernel is compiled as the model launches it: B=2, H=4, T=1024, q/k/v views of one "
        "(B, T, H, 3, D) tensor (kernels/compile.py)",
        "- **compiling is not running**: this shows the kernels build for these GPUs and what they "
        "cost in registers and shared memory; their numerics and speed on a GPU are unmeasured "
        "until a GPU runs them",
    ]
    before = None
    if baseline:
        header.append(f"- before: `{baseline}`")
        with open(baseline) as f:
            before = json.load(f)
    return render(results, header, before), json.dumps(results, indent=0)
