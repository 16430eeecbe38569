"""Train a RoPE transformer with GrowLength: short sequences first, longer ones later.

    python train.py --schedule 128,256,512,1024                  # tiny model, Shakespeare, 4 min
    python train.py --schedule 1024                              # the fixed-length baseline
    torchrun --nproc_per_node=8 train.py --preset pythia-160m --tokenizer gpt2 --data DIR ...

Every step, in order: schedule (stage, batch, LR from progress) -> train -> log -> eval ->
checkpoint. Progress is the share of the budget used (wallclock or tokens, schedule.py); the
clock counts training only: eval, checkpoints and compile warm-up are outside it.

Read top to bottom: the run's state; building a run (plan, data, model, optimizer, state); one
step and evaluation; `train()`, `train_loop()`, `finish()`. The machinery around it (flags,
ranks, devices, run folders, checkpoints, console lines) is harness/'s, one named call each.
"""
import harness.boot  # noqa: F401  (first: Ctrl-C while torch imports is one line)

import functools
import math
import sys
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

import data as datalib
import export
import prepare
import schedule as sched
from harness import checkpoint as ckpt_file, cli, device as hw, distributed, report
from harness.config import TrainConfig, check_config, make_plans, merge_resumed, parse_config
from harness.report import Interval, LogWindow, WallTime
from harness.runfolder import Metrics, RunFolder
from harness.threads import StageThreads
from model import GPT, make_config

EVAL_BATCH_TOKENS = 16384   # tokens per evaluation forward, whatever --eval-tokens says
JUMP_K = 5   # steps averaged on each side of a stage switch for the loss jump (schedule.loss_jumps)
# Exit codes: 2 a user error, 3 a non-finite loss, 4 out of memory, 129/130/143 a signal before training.
EXIT_NAN, EXIT_OOM = 3, hw.EXIT_OOM


# ----------------------------------------------------------------------------- the run's state

@dataclass
class TrainState:
    """What changes as a run trains, and exactly what a checkpoint's `state` holds: restoring
    it (with the weights and the optimizer) continues the run as if never stopped."""
    step: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0     # training seconds: the clock's reading, eval and checkpoints excluded
    stage_stats: dict = field(default_factory=dict)   # "seq_len" -> {"steps", "tokens", "seconds"}
    step_losses: list = field(default_factory=list)   # [seq_len, loss] per step: the loss jump at each switch
    data_rng: list = field(default_factory=list)      # every rank's data-window generator state
    torch_rng: Optional[torch.Tensor] = None          # for anything else random (sampling at the end)
    planned: Optional[list] = None     # [seconds, tokens]: the budget the stages and LR were planned for
    metrics_bytes: int = 0             # metrics.jsonl's length when checkpointed: the records it knows

    def count_step(self, seq_len: int, tokens: int, seconds: float, loss: float):
        self.step += 1
        self.step_losses.append([seq_len, loss])
        self.tokens += tokens
        s = self.stage_stats.setdefault(str(seq_len), {"steps": 0, "tokens": 0, "seconds": 0.0})
        s["steps"], s["tokens"], s["seconds"] = s["steps"] + 1, s["tokens"] + tokens, s["seconds"] + seconds


# ----------------------------------------------------------------------------- building a run

@dataclass
class Run:
    """The fixed parts of a run, built once by `build()`; what changes lives in TrainState."""
    cfg: TrainConfig
    ranks: distributed.Ranks
    device: str
    dtype: torch.dtype
    autocast: object
    plan: sched.Plan                # the stages and LR, for the budget the run was planned with
    end: sched.Plan                 # this invocation's budget: when to stop (config.EXTENDING)
    eval_lengths: list
    data: datalib.TokenData
    model: GPT
    train_model: torch.nn.Module    # what the loop calls: compiled and/or DDP-wrapped `model`
    opt: torch.optim.Optimizer
    gen: torch.Generator            # this rank's data windows
    out: Path
    metrics: Metrics
    wall: WallTime
    mfu: hw.Mfu                     # model FLOPs utilisation, where the device's peak is known
    threads: StageThreads           # --threads: CPU threads fitted per stage length


def build(cfg: TrainConfig, ranks: distributed.Ranks, ckpt: Optional[dict], wall: WallTime):
    """Everything a run needs -> (Run, TrainState, RunFolder). Every check that can fail runs
    before the run folder is claimed, so a mistake leaves nothing on disk."""
    check_config(cfg)
    device = hw.pick_device(cfg.device, ranks.local_rank)
    threads = StageThreads(cfg.threads, device, ranks.master, cfg.doc_mask)   # a fixed --threads: set now
    dtype, attn = hw.pick_dtype(cfg.dtype, device), hw.pick_attn(cfg.attn, device)
    plan, end, eval_lengths = make_plans(cfg, ranks.world, ckpt)
    hw.check_memory(plan, eval_lengths, make_config(cfg.preset))
    data = load_data(cfg, ranks, ckpt and ckpt.get("data_fingerprint"))
    data.check_windows(plan.stages[-1].seq_len, max(eval_lengths), docs=cfg.doc_mask or cfg.eval_masked())
    if ckpt is not None:
        ckpt_file.check_data(ckpt, data.fingerprint, f"--resume {cfg.resume}")
    model, opt = build_model(cfg, attn, data.vocab_size, device, ckpt)
    ckpt_file.check_unfinished(ckpt, end, cfg.resume)      # after every other check
    state, gen = ckpt["state"] if ckpt else TrainState(), ckpt_file.data_generator(cfg.seed, ckpt, ranks)
    model.grow_rope(max([st.seq_len for st in plan.stages] + eval_lengths))
    folder = distributed.agree(ranks, RunFolder.claim if ranks.master else None, cfg.out, cfg.resume,
                               (ckpt["state"].step, ckpt["state"].metrics_bytes) if ckpt else None)
    out = Path(distributed.share_from_rank0(str(folder.path) if folder else None, ranks))
    try:
        train_model = distributed.wrap_ddp(torch.compile(model, dynamic=False) if cfg.compile else model, ranks, device)
        run = Run(cfg, ranks, device, dtype, hw.autocast_for(device, dtype), plan, end, eval_lengths, data, model,
                  train_model, opt, gen, out, Metrics(out / "metrics.jsonl" if ranks.master else None),
                  wall, hw.Mfu(model.cfg, device, ranks.world), threads)
    except BaseException:
        if folder is not None:
            folder.discard_if_unused()
        raise
    return run, state, folder


def load_data(cfg: TrainConfig, ranks: distributed.Ranks, keep=None) -> datalib.TokenData:
    """Rank 0 prepares the corpus on first use; the others wait for it (agree is a collective).
    A path is kept resolved in the config, so that a resume from elsewhere finds the same corpus.
    keep: a resumed run's data fingerprint, whose prepared folder is never prepared over."""
    if cfg.data not in prepare.BUILTIN_CORPORA and Path(cfg.data).exists():
        cfg.data = str(Path(cfg.data).resolve())
    distributed.agree(ranks, prepare.resolve if ranks.master else None, cfg.data, cfg.tokenizer, keep)
    return distributed.agree(ranks, prepare.open_data, cfg.data, cfg.tokenizer)


def build_model(cfg: TrainConfig, attn: str, vocab_size: int, device: str, ckpt: Optional[dict]):
    """The model and its AdamW: fresh, or --init-from's weights (with their RoPE), or the checkpoint's."""
    torch.manual_seed(cfg.seed)        # same init on every rank (DDP also broadcasts rank 0's)
    vocab = 128 * math.ceil(vocab_size / 128)  # pad the head: 50257 -> 50304, as Pythia
    mcfg = make_config(cfg.preset, vocab_size=vocab, attn=attn, rope_switch=cfg.rope_switch)
    if ckpt is not None:    # with the RoPE scaling its stage had reached (model.switch_rope)
        ckpt_file.check_shape(ckpt, mcfg.shape(), "--resume")
        model = ckpt_file.model_from_checkpoint(ckpt, f"--resume {cfg.resume}", attn)
    elif cfg.init_from:     # the folder's weights, and the RoPE they were trained with
        model = export.init_model(cfg.init_from, mcfg, cfg.tokenizer)
    else:
        model = GPT(mcfg)
    model = model.to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]       # matrices decay; biases, norms don't
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.peak_lr(), betas=(0.9, 0.95),
                            fused=device == "cpu" or device.startswith("cuda"))  # one kernel: ~10% a step on CPU
    if ckpt is not None:
        ckpt_file.load_optimizer(opt, ckpt, "--resume")
    return model, opt


# ----------------------------------------------------------------------------- one step, evaluation

def train_step(run: Run, stage: sched.Stage) -> float:
    """One optimizer step of tokens_per_step tokens, split over ranks and micro-batches;
    returns the mean loss over all of them (every rank gets the same number)."""
    n_micro = stage.batch_size // run.ranks.world // stage.micro_batch
    loss_sum = torch.zeros((), device=run.device)
    for m in range(n_micro):
        x, y, *docs = run.data.get_batch("train", stage.micro_batch, stage.seq_len, run.gen, run.device, run.cfg.doc_mask)
        # DDP averages gradients across ranks on every backward; only the last micro-batch needs it.
        no_sync = run.train_model.no_sync() if run.ranks.world > 1 and m < n_micro - 1 else nullcontext()
        with no_sync, run.autocast:
            _, loss = run.train_model(x, y, *docs)
        (loss / n_micro).backward()       # accumulate the mean, as if one batch
        loss_sum += loss.detach()
    if run.cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    loss = distributed.mean_over_ranks(loss_sum / n_micro, run.ranks)
    # A NaN step is taken too: the loop stops on it and saves nothing after it.
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return loss.item()        # read after the optimizer step is queued, so the GPU never waits on Python


def set_lr(opt, progress: float, cfg: TrainConfig) -> float:
    lr = sched.lr_at(progress, cfg.peak_lr(), cfg.warmup, cfg.min_lr_ratio)
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


@torch.no_grad()
def evaluate(model, data, lengths, eval_tokens, device, autocast, masked=False):
    """Mean validation loss (nats/token) per context length, same fixed windows every time; masked: --doc-mask's."""
    model.eval()
    out = {}
    for T in lengths:
        total, count = 0.0, 0
        for x, y, *docs in data.eval_windows(T, eval_tokens, max(1, EVAL_BATCH_TOKENS // T), device, masked):
            with autocast:
                _, loss = model(x, y, *docs)
            total, count = total + loss.item() * x.numel(), count + x.numel()
        out[str(T)] = round(total / count, 5)
    model.train()
    return out


def checkpoint(run: Run, state: TrainState):
    """Gather every rank's data RNG (a collective: all ranks call this), rank 0 writes."""
    with run.wall.part("checkpointing"):
        state.data_rng = distributed.gather_generators(run.gen, run.ranks)
        state.torch_rng = torch.get_rng_state()
        state.planned, state.metrics_bytes = [run.plan.budget_s, run.plan.max_tokens], run.metrics.size()
        if run.ranks.master:
            ckpt_file.save_checkpoint(run.out / "ckpt.pt", asdict(run.cfg), run.model, run.opt, asdict(state),
                                      run.data.fingerprint)


# ----------------------------------------------------------------------------- the loop

def train(argv=None) -> int:
    cfg, explicit = parse_config(argv, __doc__.split("\n\n")[0])
    ranks = distributed.setup_distributed()
    # agree: a rank that cannot read the checkpoint (another node's disk) stops all of them
    ckpt = distributed.agree(ranks, ckpt_file.load_checkpoint, cfg.resume, TrainState) if cfg.resume else None
    # The flags not given: a resumed run's from its checkpoint; a --init-from run's from its folder.
    cfg = merge_resumed(cfg, explicit, ckpt["config"]) if ckpt else export.init_defaults(cfg, explicit)
    run, state, folder = build(cfg, ranks, ckpt, WallTime(ckpt["state"].elapsed_s if ckpt else 0.0))
    stop, code = None, None
    try:
        evaluate_now = start(run, state, resumed=ckpt is not None)
        stop = cli.StopRequest(cfg.stop_at_step)   # from here on, Ctrl-C stops after a step, with a checkpoint
        code = train_loop(run, state, evaluate_now, stop)
        return code
    finally:
        if stop is not None:
            stop.restore()
        run.metrics.close()
        if folder is not None:      # failed before any step (an exception, OOM, NaN, a signal): leave no trace
            folder.close(failed=code != 0, step=state.step)


def start(run: Run, state: TrainState, resumed: bool) -> report.Evaluator:
    """Before the clock starts: the header, warm-up (GPU micro-batches, compiles), the stage
    table, and for a new run the config record and the first eval. -> the evaluator."""
    if run.ranks.master:
        report.announce(run.device, run.ranks.world, run.dtype, run.model, run.data,
                        run.cfg.resolved(run.model.cfg.attn), state.step, state.elapsed_s, state.tokens)
    with run.wall.part("warm-up"):
        run.plan = hw.warm_up(run.plan, run.model, run.train_model, run.autocast, run.device, run.ranks,
                              auto=run.cfg.micro_batch_tokens == "auto", compile=run.cfg.compile,
                              optimizer_started=bool(run.opt.state), docs=run.cfg.doc_mask)
    if run.ranks.master:
        print(run.plan.table())
    evaluate_now = report.Evaluator(functools.partial(evaluate, run.model, run.data, run.eval_lengths, run.cfg.eval_tokens,
                                                      run.device, run.autocast, run.cfg.eval_masked()),
                                    run.metrics, run.wall, run.ranks.master)
    if not resumed:     # the first record of metrics.jsonl, then where the run starts from
        run.metrics.write("config", **run.cfg.resolved(run.model.cfg.attn), model=run.model.cfg.shape(),
                          params=run.model.num_params(), resolved_device=run.device, world_size=run.ranks.world,
                          micro_batches={str(st.seq_len): st.micro_batch for st in run.plan.stages})
    first = run.plan.stages[run.plan.stage_index(run.plan.progress(state.elapsed_s, state.tokens))]
    run.threads(run.model, run.autocast, first, run.metrics, run.wall)    # the first eval runs with them
    if not resumed:
        evaluate_now(state, "start")
    return evaluate_now


def train_loop(run: Run, state: TrainState, evaluate_now: report.Evaluator, stop: cli.StopRequest) -> int:
    cfg, plan, ranks = run.cfg, run.plan, run.ranks
    clock = sched.Clock(offset_s=state.elapsed_s)
    log_every, eval_every, ckpt_every = (Interval(s, state.elapsed_s) for s in
                                         (cfg.log_interval, cfg.eval_interval, cfg.ckpt_interval))
    window, stopped = LogWindow(state.tokens, state.elapsed_s), False
    # Resumed: the stage of the last step, so a stage that began before the checkpoint is not
    # begun (recorded, evaluated at) a second time.
    stage_idx = [st.seq_len for st in plan.stages].index(state.step_losses[-1][0]) if state.step_losses else None
    clock.start()
    while True:
        # 1. schedule: rank 0's clock decides for every rank, so stages never split.
        hw.sync(run.device)
        now = distributed.from_rank0(clock.elapsed(), ranks, run.device)
        progress = plan.progress(now, state.tokens)
        stopped = distributed.any_rank(stop(state.step), ranks, run.device)   # a signal may reach one rank only
        if run.end.done(now, state.tokens) or stopped:
            break
        i = plan.stage_index(progress)
        if i != stage_idx:      # a new stage: announce it, and evaluate where the last one ended
            clock.pause()
            state.elapsed_s = clock.elapsed()
            begin_stage(run, state, i)
            run.model.switch_rope(plan.stages[0].seq_len, plan.stages[i].seq_len)  # before the eval sees it
            if stage_idx is not None:
                evaluate_now(state, f"stage {i + 1}")
                eval_every.reset(state.elapsed_s)
            stage_idx = i
            clock.start()
        stage = plan.stages[i]
        lr = set_lr(run.opt, progress, cfg)

        # 2. train: one optimizer step; the clock keeps running through it.
        t0 = clock.elapsed()
        try:
            loss = train_step(run, stage)
        except torch.OutOfMemoryError:
            return report.failure(hw.out_of_memory_line(stage, i, state.step + 1, ranks.rank, ranks.world,
                                                     report.checkpoint_note(run.out)), EXIT_OOM)
        if not math.isfinite(loss):
            return report.failure(f"loss is {loss} at step {state.step + 1} (T={stage.seq_len}, lr {lr:.2e}); "
                                  f"stopping; {report.checkpoint_note(run.out)}", EXIT_NAN, ranks.master)
        hw.sync(run.device)
        now = distributed.from_rank0(clock.elapsed(), ranks, run.device)
        state.count_step(stage.seq_len, cfg.tokens_per_step, now - t0, loss)
        state.elapsed_s = now
        window.add(loss)

        # 3. log
        if ranks.master and log_every.due(now):
            log(run, state, i, lr, window)
            log_every.reset(now)

        # 4. eval and 5. checkpoint, with the clock paused: neither is training time.
        if eval_every.due(now) or ckpt_every.due(now):
            clock.pause()
            if eval_every.due(now):
                evaluate_now(state, "interval")
                eval_every.reset(now)
            if ckpt_every.due(now):
                checkpoint(run, state)
                ckpt_every.reset(now)
            clock.start()

    clock.pause()
    state.elapsed_s = clock.elapsed()
    return finish(run, state, evaluate_now, stop, stopped)


def log(run: Run, state: TrainState, i: int, lr: float, window: LogWindow):
    """The train record and its line: mean loss and throughput since the last one."""
    stage = run.plan.stages[i]
    loss, tps = window.close(state.tokens, state.elapsed_s)
    mfu = run.mfu(tps, stage.seq_len)
    record = dict(step=state.step, elapsed_s=round(state.elapsed_s, 3), tokens=state.tokens, seq_len=stage.seq_len,
                  batch_size=stage.batch_size, loss=round(loss, 6), lr=lr, tokens_per_s=round(tps, 1),
                  **({"mfu": round(mfu, 4)} if mfu is not None else {}))
    run.metrics.write("train", **record)
    report.log_line(record, i, len(run.plan.stages), run.end.budget_point(1.0))


def begin_stage(run: Run, state: TrainState, i: int):
    stage = run.plan.stages[i]
    run.metrics.write("stage", step=state.step, elapsed_s=round(state.elapsed_s, 3), tokens=state.tokens,
                      stage=i + 1, seq_len=stage.seq_len, batch_size=stage.batch_size)
    if run.ranks.master:
        report.stage_line(i, len(run.plan.stages), stage, run.cfg.tokens_per_step)
    run.threads(run.model, run.autocast, stage, run.metrics, run.wall)


def finish(run: Run, state: TrainState, evaluate_now: report.Evaluator, stop: cli.StopRequest, stopped: bool) -> int:
    """Stopped early (on any rank): checkpoint and say how to resume. Done: final eval, loss jumps at
    the switches, checkpoint, summary, sample. No signal can abandon that checkpoint (stop.final)."""
    if stopped:
        with stop.final():
            checkpoint(run, state)
        if run.ranks.master:
            report.stopped(stop.reason(state.step), state.step, state.elapsed_s, run.out, run.ranks.world)
        return 0
    final = evaluate_now(state, "end")
    jumps = sched.loss_jumps([T for T, _ in state.step_losses], [loss for _, loss in state.step_losses], JUMP_K)
    for j in jumps:
        run.metrics.write("jump", **j)
    with stop.final():
        checkpoint(run, state)      # after the records: it knows them all (metrics_bytes)
    if run.ranks.master:
        report.summary(state.step, state.tokens, state.elapsed_s, state.stage_stats, final, jumps,
                       run.mfu if run.mfu.peak else None, run.wall.line(state.elapsed_s), run.out)
        if run.cfg.sample_tokens > 0:
            cli.interrupt_on_signals()    # the run is saved: a signal now stops only the sampling
            report.sample(run.model, run.cfg.tokenizer, run.cfg.sample_tokens,
                          run.cfg.seed, run.device, run.autocast)
    return 0


def main(argv=None) -> int:
    """train(), with every way it can fail ending in one line and an exit code."""
    try:
        return cli.run(train, argv, {torch.OutOfMemoryError: hw.oom_outside_step,   # before RuntimeError: a subclass
                                     RuntimeError: distributed.peer_failed})
    finally:
        distributed.teardown_distributed()


if __name__ == "__main__":
    sys.exit(main())
