"""The kernels compiled ahead of time for GPUs, on this CPU machine (kernels/compile.py).

The compiles run in worker processes with TRITON_INTERPRET=0 (this process imported the
kernels under the interpreter, see conftest.py); the checks of what is compiled run here.
"""
import json
from pathlib import Path

import pytest
import triton

from kernels import attention, compile as aot

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("docs", [False, True])
def test_every_kernel_parameter_is_filled_by_its_launch(docs):
    calls = aot.launches("bfloat16", 64, True, docs=docs)
    assert sorted(calls) == sorted(aot.KERNELS)
    for kernel, args, kwargs in calls.values():
        aot.check_binding(kernel, args, kwargs, aot.configs(kernel)[0])


def test_a_parameter_the_launch_leaves_unset_fails():
    kernel, args, kwargs = aot.launches("bfloat16", 64, True)["_attn_fwd"]
    with pytest.raises(aot.CompileCheckError, match="N_CTX"):  # the last positional argument
        aot.check_binding(kernel, args[:-1], kwargs, aot.configs(kernel)[0])
    with pytest.raises(aot.CompileCheckError, match="DOC_START"):
        aot.check_binding(kernel, args, dict(kwargs, DOC_START=None), aot.configs(kernel)[0])


def test_a_new_launcher_argument_fails_until_the_check_knows_it(monkeypatch):
    # A new launcher argument (as the document mask's `docs` was, issue 29): the check must
    # not compile the kernels without it as if nothing had changed.
    fwd = attention._flash_fwd

    def with_window(q, k, v, causal, sm_scale, docs=None, window=None):
        return fwd(q, k, v, causal, sm_scale, docs)

    monkeypatch.setattr(attention, "_flash_fwd", with_window)
    with pytest.raises(aot.CompileCheckError, match="window"):
        aot.launches("bfloat16", 64, True)


def test_a_kernel_launched_outside_launch_fails(monkeypatch):
    def bwd_unseen(do, q, k, v, o, lse, causal, sm_scale, docs=None):
        pass  # stands for a backward that calls its kernels directly, not via _launch

    monkeypatch.setattr(attention, "_flash_bwd", bwd_unseen)
    with pytest.raises(aot.CompileCheckError, match="outside attention._launch"):
        aot.launches("bfloat16", 64, True)


def test_first_configs_compile_for_sm80_and_sm90(tmp_path):
    """The CI subset of `python bench.py compile`: each kernel's first config, bf16, D=64,
    causal, compiled for real (empty Triton cache, no result cache) for an A100 and an H100."""
    jobs = [dict(kernel=k, target=t, dtype="bfloat16", head_dim=64, causal=True, config=0)
            for t in (80, 90) for k in aot.KERNELS]
    # and --doc-mask's HAS_DOCS variant of the three kernels that take documents, on sm_90
    jobs += [dict(kernel=k, target=90, dtype="bfloat16", head_dim=64, causal=True, config=0, docs=True)
             for k in aot.KERNELS if k != "_attn_bwd_delta"]
    results = aot.run_jobs(jobs, workers=2, cache_dir=None,
                           env={"TRITON_CACHE_DIR": str(tmp_path / "triton")})
    for r in results:
        where = f"{r['kernel']} sm_{r['target']}"
        assert r["ok"], f"{where}: {r['error']}"
        assert not r["cached"] and r["registers"] and r["shared"] > 0, where
        assert r["shared"] <= aot.TARGETS[r["target"]][1], where
    tc = {(r["kernel"], r["target"]): r["tensor_cores"] for r in results if not r.get("docs")}
    for k in ("_attn_fwd", "_attn_bwd_dkdv", "_attn_bwd_dq"):
        assert "wgmma.mma_async" in tc[k, 90], f"{k} on sm_90 uses {tc[k, 90]}, not Hopper's wgmma"
        assert "mma.sync" in tc[k, 80], f"{k} on sm_80 uses {tc[k, 80]}"


def test_pruned_configs_are_those_the_committed_report_found_spilling():
    """attention's prune table against the latest full report (results/compile.json): every
    config the autotuner may pick on sm_80/sm_90 compiled without spills, and every pruned one
    spilled there (or over-ran shared memory)."""
    results = json.loads((ROOT / "results" / "compile.json").read_text())
    per_config = [r for r in results if r["dtype"] == "bfloat16" and r["causal"]
                  and r["target"] in (80, 90) and r["kernel"] != "_attn_bwd_delta"]
    assert per_config
    for r in per_config:
        bad = r["spill_store"] + r["spill_load"] > 0 or r["shared"] > aot.TARGETS[r["target"]][1]
        pruned = attention.spills(r["kernel"], _config(r), r["head_dim"], r["target"] // 10)
        assert bool(pruned) == bad, (r["kernel"], r["target"], r["head_dim"], r["config_desc"])


def _config(r):
    blocks, warps, stages = r["config_desc"].split()
    bm, bn = (int(x) for x in blocks.split("x"))
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=int(warps[1:]),
                         num_stages=int(stages[1:]))



@pytest.mark.parametrize("argv, says", [
    (["--targets", "80,70"], "unknown target 70"),
    (["--targets", "x"], "'x' is not an integer"),
    (["--out", "/no/such/folder/r.md"], "does not exist"),
    (["--out", "r.json"], "name a .md file"),
    (["--baseline", "/no/such/before.json"], "no such file"),
])
def test_user_errors_are_one_line(argv, says, capsys):
    import bench
    try:
        code = bench.main(["compile", *argv])
    except SystemExit as e:  # argparse's errors exit from the parser
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and says in err, err
