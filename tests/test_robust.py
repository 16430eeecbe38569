"""Issue 18, the training-run side: nothing lost, nothing silently wrong. A resumed run never
writes the folder it came from; extending a run keeps its schedule; the data fingerprint, not
the path, decides; signals stop every run alike and keep their promise; old checkpoints load;
metrics.jsonl tells the checkpoint's story once; generation never draws a padding id."""
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sample
import train
from harness.checkpoint import save_checkpoint
from model import GPT, PRESET_LR, GPTConfig
from test_runs import SLOW, wait_for_steps
from test_train import FAST, ROOT, fail, records


def files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# ----------------------------------------------------------------------------- --resume A --out B

def test_resume_into_another_folder_continues_there_and_leaves_the_first_as_it_was(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert train.main(FAST + ["--out", str(a), "--stop-at-step", "13"]) == 0
    before = files(a)
    assert train.main(["--resume", str(a), "--out", str(b)]) == 0
    assert files(a) == before                                   # A: not a byte changed
    assert torch.load(b / "ckpt.pt", weights_only=True)["state"]["step"] == 40
    assert [r["step"] for r in records(b, "train")] == list(range(1, 41))   # the whole story, once
    assert len(records(b, "config")) == 1
    # a folder that holds another run is not overwritten
    capsys.readouterr()
    fail(capsys, ["--resume", str(a), "--out", str(b)], "already holds a run")
    assert files(a) == before


# ----------------------------------------------------------------------------- extending a run

def test_extending_a_finished_run_keeps_its_last_stage_and_floor_lr(tmp_path, capsys):
    out = tmp_path / "ext"
    assert train.main(FAST + ["--out", str(out)]) == 0          # 40 steps: 32 then 64
    # 3x the budget: re-planned from scratch, the run would fall back to T=32 at a high LR
    assert train.main(["--resume", str(out), "--max-tokens", str(3 * 40960)]) == 0
    more = records(out, "train")[40:]
    assert [r["step"] for r in more] == list(range(41, 121))
    assert {r["seq_len"] for r in more} == {64}
    assert all(r["lr"] == pytest.approx(0.1 * PRESET_LR["tiny"]) for r in more)
    assert [r["seq_len"] for r in records(out, "stage")] == [32, 64]


def test_resuming_a_finished_run_does_nothing_and_says_so(tmp_path, capsys):
    out = tmp_path / "done"
    assert train.main(FAST + ["--out", str(out)]) == 0
    before = files(out)
    capsys.readouterr()
    assert train.main(["--resume", str(out)]) == 0
    assert "finished" in capsys.readouterr().out
    assert files(out) == before                     # no second final eval, no rewritten checkpoint


# ----------------------------------------------------------------------------- data by fingerprint

def test_a_moved_corpus_resumes_when_its_fingerprint_is_the_same(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("play.txt").write_text("to be or not to be, that is the question. " * 2000)
    assert train.main(FAST + ["--data", "play.txt", "--out", "r", "--stop-at-step", "2"]) == 0
    saved = torch.load(tmp_path / "r" / "ckpt.pt", weights_only=True)["config"]["data"]
    assert saved == str(tmp_path / "play.txt")                  # stored resolved, not relative
    (tmp_path / "moved").mkdir()
    shutil.move("play.txt", "moved/play.txt")
    shutil.rmtree("play.txt-byte")
    assert train.main(["--resume", "r", "--data", "moved/play.txt", "--stop-at-step", "3"]) == 0
    assert torch.load(tmp_path / "r" / "ckpt.pt", weights_only=True)["state"]["step"] == 3


# ----------------------------------------------------------------------------- signals

def test_sighup_stops_a_run_with_a_checkpoint(tmp_path):
    out = tmp_path / "hup"
    proc = subprocess.Popen([sys.executable, "train.py", *SLOW, "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_steps(out, 2, proc)
    proc.send_signal(signal.SIGHUP)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped (signal SIGHUP)" in stdout and "SIGHUP: stopping after this step" in err
    assert torch.load(out / "ckpt.pt", weights_only=True)["state"]["step"] >= 2


# The stop checkpoint slowed down, and announced on stdout, so a second Ctrl-C can land in it.
SLOW_SAVE = """import sys, time, train
save = train.ckpt_file.save_checkpoint
def slow(*args, **kwargs):
    print("SAVING", flush=True)
    time.sleep(1.0)
    return save(*args, **kwargs)
train.ckpt_file.save_checkpoint = slow
sys.exit(train.main(sys.argv[1:]))
"""


def test_the_first_ctrl_c_is_acknowledged_and_a_second_cannot_abandon_its_checkpoint(tmp_path):
    out = tmp_path / "int"
    proc = subprocess.Popen([sys.executable, "-u", "-c", SLOW_SAVE, *SLOW, "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_steps(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    for line in proc.stdout:
        if line.startswith("SAVING"):
            break
    proc.send_signal(signal.SIGINT)                     # during the stop checkpoint
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "SIGINT: stopping after this step and writing a checkpoint (Ctrl-C again" in err
    assert "writing the checkpoint first" in err and "Traceback" not in err
    step = torch.load(out / "ckpt.pt", weights_only=True)["state"]["step"]
    assert f"stopped (signal SIGINT) at step {step}" in stdout


# ----------------------------------------------------------------------------- checkpoints and metrics

def test_a_checkpoint_from_before_the_rope_switch_fields_resumes(tmp_path):
    out = tmp_path / "old"
    assert train.main(FAST + ["--out", str(out), "--stop-at-step", "2"]) == 0
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    for name in ("rope_switch", "rope_orig_len", "rope_scale"):
        del ckpt["model_config"][name]
    del ckpt["config"]["rope_switch"]
    torch.save(ckpt, out / "ckpt.pt")
    assert train.main(["--resume", str(out), "--stop-at-step", "3"]) == 0


def test_records_written_after_a_checkpointed_stage_switch_are_not_repeated(tmp_path):
    """As a kill -9 right after the switch leaves it: a checkpoint at the last step of stage 1,
    then the stage record and its eval at that same step."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert train.main(FAST + ["--out", str(whole)]) == 0
    assert train.main(FAST + ["--out", str(cut), "--stop-at-step", "20"]) == 0      # stage 1: steps 1-20
    after = [json.dumps(r) + "\n" for r in records(whole, "stage")[1:] + records(whole, "eval")
             if r["step"] == 20]
    assert len(after) == 2
    with open(cut / "metrics.jsonl", "a") as f:
        f.writelines(after)
    assert train.main(["--resume", str(cut)]) == 0
    assert [r["seq_len"] for r in records(cut, "stage")] == [32, 64]
    assert [r["reason"] for r in records(cut, "eval")] == ["start", "stage 2", "end"]


def test_a_checkpoint_of_more_ranks_resumed_on_one_says_it_is_no_longer_exact(tmp_path, capsys):
    out = tmp_path / "ranks"
    assert train.main(FAST + ["--out", str(out), "--stop-at-step", "2"]) == 0
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    ckpt["state"]["data_rng"] = ckpt["state"]["data_rng"] * 2          # as 2 ranks wrote it
    torch.save(ckpt, out / "ckpt.pt")
    capsys.readouterr()
    assert train.main(["--resume", str(out), "--stop-at-step", "3"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "2 rank(s), this run has 1" in warnings[0]


# ----------------------------------------------------------------------------- padding ids

def padded_model():
    """A head of 384 rows for a 256-token vocabulary, its padding rows made the likeliest."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=384, n_layer=1, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        model.embed_out.weight[256:] = 5.0
    return model


@pytest.mark.parametrize("use_cache,temperature", [(True, 1.0), (False, 0.8), (True, 0.0)])
def test_generation_never_draws_a_padding_id(use_cache, temperature):
    ids = padded_model().generate(torch.zeros((2, 1), dtype=torch.long), 20, temperature=temperature, top_k=50,
                                  use_cache=use_cache, vocab_size=256)
    assert ids.max().item() < 256


def test_sample_py_on_a_padded_gpt2_head_prints_text(tmp_path, capsys):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50304, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():       # every position's features = 1, so the padding rows' logits are 16 x 5, the rest 0
        model.final_layer_norm.weight.zero_()
        model.final_layer_norm.bias.fill_(1.0)
        model.embed_out.weight.zero_()
        model.embed_out.weight[50257:] = 5.0
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    (tmp_path / "g").mkdir()
    save_checkpoint(tmp_path / "g" / "ckpt.pt", {"tokenizer": "gpt2"}, model, opt, {"step": 1}, "x")
    assert sample.main([str(tmp_path / "g"), "--prompt", "Hello", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.startswith("Hello")


# ----------------------------------------------------------------------------- flags

@pytest.mark.parametrize("flags,match", [
    (["--out", ""], "--out ''"),
    (["--stop-at-step", "-5"], "--stop-at-step -5: must be >= 0"),
])
def test_flags_that_would_silently_mean_something_else(tmp_path, monkeypatch, capsys, flags, match):
    monkeypatch.chdir(tmp_path)         # where a default runs/<timestamp> would go
    fail(capsys, FAST + flags, match)
    assert list(tmp_path.iterdir()) == []


def test_a_prepared_data_folder_is_not_a_run_folder(tmp_path, capsys):
    prepared = tmp_path / "corpus"
    prepared.mkdir()
    (prepared / "meta.json").write_text("{}")
    (prepared / "train.bin").write_bytes(b"")
    fail(capsys, FAST + ["--out", str(prepared)], "is a prepared data folder")
    assert sorted(p.name for p in prepared.iterdir()) == ["meta.json", "train.bin"]


@pytest.mark.parametrize("config", [
    {"model_type": "gpt_neox", "vocab_size": 256, "hidden_size": 128, "intermediate_size": 512,
     "num_hidden_layers": 4, "num_attention_heads": "4"},                  # a number given as text
    {"model_type": "gpt_neox", "vocab_size": 256, "hidden_size": 128, "intermediate_size": 512,
     "num_hidden_layers": 4, "num_attention_heads": 4, "rotary_emb_base": "ten thousand"},
])
def test_a_hand_edited_config_json_for_init_from_is_one_line(tmp_path, capsys, config):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    fail(capsys, FAST + ["--init-from", str(folder), "--out", str(tmp_path / "r")], "config.json")
    assert not (tmp_path / "r").exists()
