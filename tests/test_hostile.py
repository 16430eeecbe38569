"""The hostile cases of issue 28 (a user's pass, 2026-12-06): each one line and a non-zero exit, or
the right behaviour, and nothing already on disk lost."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import experiments
import plot
import prepare as P
import sample
import train
from harness.config import parse_config
from model import GPT
from test_export import make_run
from test_plot import write_metrics
from test_pythia import bpe, world  # noqa: F401  (world: a fixture)
from test_train import FAST, ROOT, fail

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 60


def one_line(capsys, main, argv, match):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and match in err[0], err


# ----------------------------------------------------------------------------- sample.py

def test_many_samples_are_drawn_in_batches(tmp_path, capsys, monkeypatch):
    """--num-samples 1000000 once grew one batch until the OOM killer: now BATCH at a time."""
    make_run(tmp_path / "run")
    sizes, generate = [], GPT.generate

    def spy(self, idx, *a, **k):
        sizes.append(idx.shape[0])
        return generate(self, idx, *a, **k)
    monkeypatch.setattr(GPT, "generate", spy)
    assert sample.main([str(tmp_path / "run"), "--num-samples", "130", "--max-new-tokens", "1"]) == 0
    assert sizes == [64, 64, 2] and capsys.readouterr().out.count("---\n") == 130


@pytest.mark.parametrize("flags, match", [(["--temperature", "1e-320"], "--temperature 1e-320: below 1e-06"),
                                          (["--seed", "99999999999999999999999"], "must be in 0 .. 2**63-1")])
def test_sample_flags_that_tracebacked(tmp_path, capsys, flags, match):
    make_run(tmp_path / "run")
    one_line(capsys, sample.main, [str(tmp_path / "run"), "--max-new-tokens", "2", *flags], match)


# ----------------------------------------------------------------------------- data

def test_a_token_file_under_any_suffix_is_not_text(tmp_path, capsys):
    tokens = tmp_path / "tokens.dat"
    np.arange(300, dtype=np.uint16).tofile(tokens)
    fail(capsys, [*FAST, "--data", str(tokens), "--out", str(tmp_path / "r")], "holds NUL bytes, so it is binary data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.dat"]


def test_resume_after_the_corpus_changed_refuses_before_preparing(tmp_path, capsys):
    """The prepared folder the checkpoint matched is kept as it was, and named."""
    corpus = tmp_path / "plays.txt"
    corpus.write_text(TEXT)
    run = tmp_path / "run"
    assert train.main([*FAST, "--max-tokens", "2048", "--data", str(corpus), "--out", str(run)]) == 0
    cache = tmp_path / "plays.txt-byte"
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    corpus.write_text(TEXT.upper())
    fail(capsys, ["--resume", str(run), "--max-tokens", "4096"], f"still holds the run's tokens: --resume with --data {cache}")
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before
    assert train.main(["--resume", str(run), "--max-tokens", "4096", "--data", str(cache)]) == 0
    corpus.rename(tmp_path / "moved.txt")
    fail(capsys, ["--resume", str(run), "--max-tokens", "8192", "--data", str(corpus)],
         "if the corpus moved, --resume takes --data NEWPATH")


def test_a_hand_edited_vocab_size_is_one_line(tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT)
    folder = P.prepare(tmp_path / "t.txt", tmp_path / "d", "byte")
    meta = json.loads((folder / "meta.json").read_text())
    for bad in (1000, 10 ** 12):
        (folder / "meta.json").write_text(json.dumps({**meta, "vocab_size": bad}))
        fail(capsys, [*FAST, "--data", str(folder), "--out", str(tmp_path / "r")],
             f"vocab_size {bad} is not the byte tokenizer's 256")


def test_bad_utf8_skip_that_empties_the_corpus_says_so(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café crème".encode("latin-1") * 10)
    with pytest.raises(P.DataError, match=r"1 file\(s\) skipped for invalid UTF-8 \(--bad-utf8 skip\)"):
        P.prepare(tmp_path / "latin1.txt", tmp_path / "out", "gpt2", bad_utf8="skip")


# ----------------------------------------------------------------------------- plot.py

def test_plot_takes_an_absurd_number_as_unusable(tmp_path):
    run = write_metrics(tmp_path / "run", [json.dumps(r) for r in (
        {"kind": "train", "step": 1, "elapsed_s": 1e308, "tokens": 8, "loss": 3.0},
        {"kind": "train", "step": 2, "elapsed_s": 2.0, "tokens": 16, "loss": 2.9},
        {"kind": "eval", "elapsed_s": 1e308, "loss": {"32": 2.7}})])
    assert plot.main([str(run), "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "loss_vs_time.png").is_file()


def test_plot_with_nothing_to_draw_writes_nothing(tmp_path, capsys):
    run = write_metrics(tmp_path / "run", [json.dumps({"kind": "config"})])
    one_line(capsys, plot.main, [str(run), "--out", str(tmp_path / "fig")], "no usable train or eval records")
    assert not (tmp_path / "fig").exists()


# ----------------------------------------------------------------------------- experiments.py

def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_an_arm_dies_with_experiments_py_even_by_kill_9(tmp_path):
    """kill -9 of experiments.py: its train.py is told (SIGTERM), checkpoints and exits, no orphan."""
    p = subprocess.Popen([sys.executable, "experiments.py", "tokens", "--runs", str(tmp_path), "--max-tokens",
                          "10000000", "--extra", "--tokens-per-step 1024 --eval-tokens 2048 --log-interval 0"],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    arm, child = tmp_path / "tokens" / "fixed128-s1", None
    try:
        deadline = time.time() + 240
        while time.time() < deadline and (not (arm / "metrics.jsonl").exists()
                                          or (arm / "metrics.jsonl").read_text().count('"train"') < 2):
            time.sleep(0.2)
        child = experiments.train_holding(arm)
        assert child is not None
        p.kill()
        p.wait()
        deadline = time.time() + 60
        while alive(child) and time.time() < deadline:
            time.sleep(0.2)
        assert not alive(child), "train.py outlived experiments.py"
        assert (arm / "ckpt.pt").is_file()
    finally:        # never leave a training process behind, whatever failed
        if p.poll() is None:
            p.kill()
            p.wait()
        child = child or experiments.train_holding(arm)
        if child and alive(child):
            os.kill(child, signal.SIGKILL)


def test_runs_empty_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line(capsys, experiments.main, ["tokens", "--runs", ""], "--runs '': give a folder")
    assert list(tmp_path.iterdir()) == []


def test_wall_seconds_add_up_over_invocations(tmp_path):
    experiments.add_wall(tmp_path, 5.0)
    experiments.add_wall(tmp_path, 3.25)
    assert json.loads((tmp_path / "wall.json").read_text()) == {"wall_s": 8.2}


def test_stopped_says_checkpointed_only_where_a_checkpoint_is(tmp_path):
    assert "had no checkpoint yet: the same command starts it again" in str(experiments.Stopped(signal.SIGINT, tmp_path))
    (tmp_path / "ckpt.pt").write_bytes(b"x")
    assert "has checkpointed" in str(experiments.Stopped(signal.SIGINT, tmp_path))


# ----------------------------------------------------------------------------- messages that named the wrong cause

def test_a_checkpoint_of_another_format_names_its_own(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    torch.save({"format": "growlength-1"}, tmp_path / "run" / "ckpt.pt")
    one_line(capsys, sample.main, [str(tmp_path / "run")], "(its format is 'growlength-1')")


def test_list_flags_are_the_same_with_spaces():
    cfg, _ = parse_config(["--schedule", "32, 64", "--ratios", " 1, 3", "--eval-lengths", "32 ,128"])
    assert (cfg.schedule, cfg.ratios, cfg.eval_lengths) == ("32,64", "1,3", "32,128")


def init_from(tmp_path, folder, corpus):
    return ["--init-from", str(folder), "--data", str(corpus), "--schedule", "64", "--max-tokens", "1024",
            "--tokens-per-step", "1024", "--out", str(tmp_path / "r")]


def test_init_from_a_folder_whose_tokenizer_is_too_large_says_so(tmp_path, world, capsys):
    folder, corpus = world
    bigger = shutil.copytree(folder, tmp_path / "big")
    bpe(700).save(str(bigger / "tokenizer.json"))       # 700 ids; the model has 512 rows
    fail(capsys, init_from(tmp_path, bigger, corpus), "tokenizer file holds more ids than its model")


def test_init_from_a_folder_no_preset_computes_names_the_field(tmp_path, world, capsys):
    folder, corpus = world
    serial = shutil.copytree(folder, tmp_path / "serial")
    cfg = json.loads((serial / "config.json").read_text())
    (serial / "config.json").write_text(json.dumps({**cfg, "use_parallel_residual": False}))
    fail(capsys, init_from(tmp_path, serial, corpus), "nearest --preset tiny: parallel_residual is False, the preset's True")
