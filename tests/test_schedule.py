"""Every rule of the schedule, with an injected clock: no torch, no sleeping."""
import math

import pytest

import schedule as S


def plan(lengths=(128, 256, 512, 1024), ratios=None, tps=8192, budget_s=100.0, max_tokens=None):
    return S.Plan.make(list(lengths), S.parse_ratios(ratios, len(lengths)), tps, budget_s, max_tokens)


def test_parse_schedule():
    assert S.parse_schedule("128,256,512,1024") == [128, 256, 512, 1024]
    assert S.parse_schedule(" 64 , 128 ") == [64, 128]
    assert S.parse_schedule("1024") == [1024]


@pytest.mark.parametrize("bad", ["", " ", "128,,256", "128,abc", "128,256.5", "0,128", "-128,256",
                                 "256,128", "128,128", "128,"])
def test_parse_schedule_rejects(bad):
    with pytest.raises(S.ScheduleError, match="--schedule"):
        S.parse_schedule(bad)


def test_parse_ratios_normalises_and_defaults_to_equal():
    assert S.parse_ratios("1,1,2,4", 4) == [0.125, 0.125, 0.25, 0.5]
    assert S.parse_ratios(None, 3) == pytest.approx([1 / 3] * 3)


@pytest.mark.parametrize("bad", ["1,1", "1,1,1,1,1", "1,0,1,1", "1,-1,1,1", "a,b,c,d", "1,nan,1,1"])
def test_parse_ratios_rejects(bad):
    with pytest.raises(S.ScheduleError, match="--ratios"):
        S.parse_ratios(bad, 4)


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("5m", 300), ("1h", 3600), ("300", 300),
                                          ("1.5h", 5400), ("2min", 120)])
def test_parse_duration(text, seconds):
    assert S.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5 minutes", "m5", "-5m", "0s", "5d", "1e3"])
def test_parse_duration_rejects(bad):
    with pytest.raises(S.ScheduleError, match="--budget"):
        S.parse_duration(bad)


def test_batch_size_keeps_tokens_per_step_constant():
    p = plan()
    assert [s.batch_size for s in p.stages] == [64, 32, 16, 8]
    assert all(s.batch_size * s.seq_len == 8192 for s in p.stages)


def test_stage_length_must_divide_tokens_per_step():
    with pytest.raises(S.ScheduleError, match="does not divide"):
        plan(lengths=(128, 384), tps=8192)


def test_plan_needs_a_budget_and_positive_values():
    with pytest.raises(S.ScheduleError, match="budget"):
        plan(budget_s=None, max_tokens=None)
    with pytest.raises(S.ScheduleError):
        plan(budget_s=None, max_tokens=0)
    with pytest.raises(S.ScheduleError):
        plan(tps=0)


def test_equal_ratios_split_the_wallclock_budget_evenly():
    p = plan(budget_s=100.0)
    # progress = elapsed / budget; stage boundaries at 25, 50, 75 s
    expected = {0: 128, 24.9: 128, 25.0: 256, 49.9: 256, 50.0: 512, 75.0: 1024, 99.9: 1024, 100: 1024}
    for t, T in expected.items():
        assert p.stage_at(p.progress(t, 0)).seq_len == T, t
    assert not p.done(99.9, 0) and p.done(100.0, 0)


def test_ratios_move_the_boundaries():
    p = plan(ratios="1,1,2,4", budget_s=80.0)     # 10s, 10s, 20s, 40s
    assert [p.stage_at(p.progress(t, 0)).seq_len for t in (9.9, 10, 19.9, 20, 39.9, 40, 79)] == \
        [128, 256, 256, 512, 512, 1024, 1024]


def test_token_budget_drives_the_same_schedule():
    p = plan(budget_s=None, max_tokens=1_000_000)
    assert p.progress(1e9, 0) == 0.0                       # wallclock ignored without --budget
    assert p.stage_at(p.progress(0, 249_999)).seq_len == 128
    assert p.stage_at(p.progress(0, 250_000)).seq_len == 256
    assert p.done(0, 1_000_000) and not p.done(0, 999_999)


def test_both_budgets_whichever_runs_out_first():
    p = plan(budget_s=100.0, max_tokens=1000)
    assert p.progress(10.0, 500) == 0.5
    assert p.progress(60.0, 500) == 0.6
    assert p.progress(500.0, 10) == 1.0                    # clamped


def test_single_stage_is_the_fixed_length_baseline():
    p = plan(lengths=(1024,), budget_s=10.0)
    assert [s.seq_len for s in p.stages] == [1024]
    assert p.stage_at(0.0).seq_len == p.stage_at(0.999).seq_len == 1024


def test_lr_warmup_then_cosine_to_ten_percent():
    lr = lambda p: S.lr_at(p, 1e-3, warmup=0.01, min_ratio=0.1)
    assert 0 < lr(0.0) < 1e-4                              # first step moves, but barely
    assert lr(0.005) == pytest.approx(0.5e-3)
    assert lr(0.01) == pytest.approx(1e-3)
    mid = 0.01 + 0.99 / 2
    assert lr(mid) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert lr(1.0) == pytest.approx(1e-4)
    values = [lr(i / 100) for i in range(1, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))   # monotone after warmup


class FakeTime:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_clock_pauses_and_resumes():
    t = FakeTime()
    c = S.Clock(time_fn=t)
    assert c.elapsed() == 0.0
    c.start(); t.now += 5
    assert c.elapsed() == 5.0
    c.pause(); t.now += 100                                # eval: not training time
    assert c.elapsed() == 5.0
    c.start(); t.now += 2.5
    assert c.elapsed() == 7.5
    c.start()                                              # starting twice does not reset
    assert c.elapsed() == 7.5


def test_clock_offset_restores_a_resumed_run():
    t = FakeTime()
    c = S.Clock(time_fn=t, offset_s=42.0)
    c.start(); t.now += 1
    assert c.elapsed() == 43.0


def test_stage_table_lists_every_stage():
    table = plan(budget_s=240.0).table().splitlines()
    assert len(table) == 5 and "1024" in table[-1] and "240.0s" in table[-1]
