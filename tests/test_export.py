"""export.py: a run out to a Hugging Face GPT-NeoX folder, and a GPT-NeoX folder in to our model.

All offline: the Hugging Face models are built from configs with random weights, and every
folder is written by the test. Logits are compared to 1e-5, as in tests/test_neox.py.
"""
import json
from dataclasses import asdict
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import data as datalib
import export
import train
from harness.checkpoint import CKPT_FORMAT, load_checkpoint
from model import GPT, GPTConfig

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parent.parent


def make_run(folder: Path, tokenizer="byte", **shape) -> GPT:
    """A random model saved as train.py saves a checkpoint (only the keys export reads)."""
    torch.manual_seed(0)
    cfg = GPTConfig(**{**dict(vocab_size=256, n_layer=2, n_head=4, n_embd=64), **shape})
    model = GPT(cfg).eval()
    folder.mkdir(parents=True)
    torch.save({"format": CKPT_FORMAT, "config": {"tokenizer": tokenizer, "preset": "tiny", "schedule": "32,64"},
                "model_config": cfg.shape(), "model": model.state_dict(), "optimizer": {},
                "state": asdict(train.TrainState())}, folder / "ckpt.pt")
    return model


def hf_model(parallel=True, **kw):
    torch.manual_seed(1)
    return transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        vocab_size=320, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        rotary_pct=0.5, rotary_emb_base=500, use_parallel_residual=parallel, hidden_act="gelu",
        tie_word_embeddings=False, **kw)).eval()


def logits_agree(ours: GPT, hf, vocab: int, T=200):
    idx = torch.randint(0, vocab, (2, T))
    with torch.no_grad():
        a, b = ours(idx)[0], hf(idx).logits
    assert a.abs().max() > 0.1                               # not trivially zero
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def fails(capsys, argv, match):
    assert export.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and match in err[0], err


# ----------------------------------------------------------------------------- export

@pytest.mark.parametrize("parallel", [True, False])
def test_export_loads_in_transformers_with_our_logits(tmp_path, parallel):
    """Non-default rotary_pct and base, so a dropped config field shows in the logits. T=200 runs
    past the trained length (64): Hugging Face extrapolates RoPE as we do."""
    ours = make_run(tmp_path / "run", vocab_size=384, rotary_pct=0.5, rope_base=500.0, parallel_residual=parallel)
    assert export.main([str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    hf = transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.max_position_embeddings == 64 and hf.config.eos_token_id is None
    logits_agree(ours, hf, 384)


def test_byte_export_has_weights_and_says_the_tokenizer_is_bytes(tmp_path, capsys):
    make_run(tmp_path / "run")
    assert export.main([str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    assert "byte tokenizer" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors"]


def test_gpt2_export_tokenizer_round_trip_with_the_padded_vocab(tmp_path):
    """vocab 50304 (GPT-2's 50257 padded, as train.py does): AutoTokenizer encodes as our
    tokenizer does, decodes back, and its ids run through the exported model."""
    ours = make_run(tmp_path / "run", tokenizer="gpt2", vocab_size=50304, n_layer=1)
    export.export(tmp_path / "run", tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "ROMEO: But, soft! what light through yonder window breaks?\n\n  It's   the east,"
    ids = tok(text).input_ids
    assert ids == datalib.GPT2Tokenizer().encode(text) and tok.decode(ids) == text
    assert tok.eos_token_id == 50256 and len(tok) == 50257
    hf = transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.vocab_size == 50304 and hf.config.eos_token_id == 50256
    with torch.no_grad():
        a, b = ours(torch.tensor([ids]))[0], hf(torch.tensor([ids])).logits
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_an_unknown_config_field_is_refused_not_dropped(tmp_path, capsys):
    """A GPTConfig field export does not map (e.g. a future RoPE scaling switch) stops the export."""
    make_run(tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    ckpt["model_config"]["sliding_window"] = 256
    torch.save(ckpt, tmp_path / "run" / "ckpt.pt")
    fails(capsys, [str(tmp_path / "run"), str(tmp_path / "hf")], "sliding_window=256 has no config.json mapping")
    assert not (tmp_path / "hf").exists()


def test_a_rescaled_rope_is_refused_not_guessed(tmp_path, capsys):
    make_run(tmp_path / "run", rope_switch="yarn", rope_orig_len=128, rope_scale=8.0)
    fails(capsys, [str(tmp_path / "run"), str(tmp_path / "hf")], "--rope-switch yarn, factor 8")
    assert not (tmp_path / "hf").exists()


def test_export_never_writes_into_a_folder_that_holds_files(tmp_path, capsys):
    make_run(tmp_path / "run")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "notes.txt").write_text("mine")
    fails(capsys, [str(tmp_path / "run"), str(tmp_path / "hf")], "not an empty folder")
    assert [p.name for p in (tmp_path / "hf").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("case", ["no_run", "not_a_checkpoint"])
def test_cli_errors_are_one_line_and_a_nonzero_exit(tmp_path, case):
    run = tmp_path / "run"
    if case == "not_a_checkpoint":
        run.mkdir()
        (run / "ckpt.pt").write_bytes(b"not a zip")
    r = subprocess.run([sys.executable, str(ROOT / "export.py"), str(run), str(tmp_path / "hf")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert ("no checkpoint" if case == "no_run" else "not a readable checkpoint") in lines[0]
    assert not (tmp_path / "hf").exists()


# ----------------------------------------------------------------------------- load_hf

@pytest.mark.parametrize("parallel", [True, False])
def test_a_folder_saved_by_transformers_loads_with_their_logits(tmp_path, parallel):
    hf = hf_model(parallel)
    hf.save_pretrained(tmp_path / "hf")
    shape, state = export.load_hf(tmp_path / "hf")
    assert shape["rotary_pct"] == 0.5 and shape["rope_base"] == 500.0 and shape["parallel_residual"] == parallel
    ours = GPT(GPTConfig(**shape)).eval()
    ours.load_state_dict(state)                               # strict: every name and shape
    logits_agree(ours, hf, 320)


def test_an_old_pytorch_model_bin_with_buffers_loads(tmp_path):
    """Released Pythia .bin files carry the causal mask and RoPE frequencies as tensors; skipped."""
    hf = hf_model()
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    state = {("embed_out.weight" if k == "lm_head.weight" else k): v for k, v in hf.state_dict().items()}
    state["gpt_neox.layers.0.attention.bias"] = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    state["gpt_neox.layers.0.attention.rotary_emb.inv_freq"] = torch.ones(8)
    torch.save(state, tmp_path / "hf" / "pytorch_model.bin")
    shape, state = export.load_hf(tmp_path / "hf")
    ours = GPT(GPTConfig(**shape)).eval()
    ours.load_state_dict(state)
    logits_agree(ours, hf, 320)


def test_check_matches_names_the_field_and_the_preset_that_fits(tmp_path):
    shape, _ = export.load_hf(save(tmp_path, hf_model()))
    export.check_matches(shape, dict(shape), tmp_path)       # the same shape passes
    with pytest.raises(export.ExportError, match=r"vocab_size is 320, the run's model has 50304"):
        export.check_matches(shape, {**shape, "vocab_size": 50304}, tmp_path)
    pythia70 = dict(shape, vocab_size=50304, n_layer=6, n_head=8, n_embd=512, rotary_pct=0.25, rope_base=10000.0)
    with pytest.raises(export.ExportError, match=r"n_layer is 6, the run's model has 2; it matches --preset pythia-70m"):
        export.check_matches(pythia70, {**shape, "vocab_size": 50304}, tmp_path)


def save(tmp_path, hf, name="hf"):
    hf.save_pretrained(tmp_path / name)
    return tmp_path / name


def edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("damage, match", [
    ("no_config", "no config.json"),
    ("no_weights", "no model.safetensors or pytorch_model.bin"),
    ("truncated_weights", "not a readable safetensors file"),
    ("shape", r"embed_in.weight has shape \(320, 64\), config.json implies \(320, 128\)"),
    ("tied", "tie_word_embeddings is True"),
    ("rope_scaling", "RoPE scaling"),
    ("activation", "hidden_act is 'relu'"),
    ("heads", "hidden_size 64 is not a multiple of num_attention_heads 5"),
])
def test_a_bad_folder_is_one_line_naming_the_problem(tmp_path, damage, match):
    folder = save(tmp_path, hf_model())
    if damage == "no_config":
        (folder / "config.json").unlink()
    elif damage == "no_weights":
        (folder / "model.safetensors").unlink()
    elif damage == "truncated_weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "shape":
        edit_config(folder, hidden_size=128, intermediate_size=512)
    elif damage == "tied":
        edit_config(folder, tie_word_embeddings=True)
    elif damage == "rope_scaling":
        edit_config(folder, rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 500})
    elif damage == "activation":
        edit_config(folder, hidden_act="relu")
    elif damage == "heads":           # the model would fail on it (n_embd % n_head), not say why
        edit_config(folder, num_attention_heads=5)
    with pytest.raises(export.ExportError, match=match) as e:
        export.load_hf(folder)
    assert "\n" not in str(e.value)


def test_a_folder_with_another_tokenizer_is_refused(tmp_path):
    """A released Pythia has vocab 50304 like our padded gpt2 runs, but GPT-NeoX-20B's ids."""
    folder = tmp_path / "hf"
    folder.mkdir()
    export.check_tokenizer(folder, "gpt2")                    # no tokenizer files: nothing to compare
    gpt2 = json.loads((datalib.gpt2_files() / "encoder.json").read_text())
    (folder / "vocab.json").write_text(json.dumps(gpt2))
    export.check_tokenizer(folder, "gpt2")                    # GPT-2's own: fine
    with pytest.raises(export.ExportError, match="not the run's byte tokenizer"):
        export.check_tokenizer(folder, "byte")
    (folder / "vocab.json").unlink()
    neox = dict(gpt2, **{"Ġthe": 5, "the": 1169})               # two ids swapped
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"vocab": neox}}))
    with pytest.raises(export.ExportError, match="not the run's gpt2 tokenizer"):
        export.check_tokenizer(folder, "gpt2")


def test_init_state_is_the_one_call_for_init_from(tmp_path):
    """What train.py --init-from calls: weights that load strictly into the run's model, or one line."""
    folder = save(tmp_path, hf_model())
    shape, _ = export.load_hf(folder)
    run_model = GPT(GPTConfig(**shape))
    run_model.load_state_dict(export.init_state(folder, run_model.cfg.shape(), "gpt2"))
    assert torch.equal(run_model.embed_out.weight, hf_model().lm_head.weight)
    with pytest.raises(export.ExportError, match="n_head is 4, the run's model has 8"):
        export.init_state(folder, {**shape, "n_head": 8}, "gpt2")


def test_a_real_training_run_exports(tmp_path):
    """One step of train.py, so a change to its checkpoint shows up here, not in a user's export."""
    import train
    run = tmp_path / "run"
    assert train.main(["--preset", "tiny", "--schedule", "32", "--tokens-per-step", "256", "--max-tokens", "256",
                       "--eval-tokens", "256", "--eval-lengths", "32", "--eval-interval", "1e9",
                       "--log-interval", "0", "--sample-tokens", "0", "--out", str(run)]) == 0
    export.export(run, tmp_path / "hf")
    ckpt = load_checkpoint(run)
    ours = GPT(GPTConfig(**ckpt["model_config"])).eval()
    ours.load_state_dict(ckpt["model"])
    logits_agree(ours, transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path / "hf").eval(), 256, T=64)


def tiny_neox_folder(path: Path, **kw) -> Path:
    """A randomly initialised GPT-NeoX of the tiny preset's shape, saved by transformers itself."""
    torch.manual_seed(2)
    cfg = dict(vocab_size=256, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
               rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True, hidden_act="gelu",
               tie_word_embeddings=False)
    transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**{**cfg, **kw})).save_pretrained(path)
    return path


def test_train_init_from_starts_with_the_folders_weights(tmp_path):
    from test_train import FAST
    folder = tiny_neox_folder(tmp_path / "neox")
    out = tmp_path / "run"
    assert train.main(FAST + ["--init-from", str(folder), "--out", str(out), "--stop-at-step", "0"]) == 0
    saved = torch.load(out / "ckpt.pt", weights_only=True)
    _, theirs = export.load_hf(folder)
    assert saved["state"]["step"] == 0 and set(saved["model"]) == set(theirs)
    assert all(torch.equal(saved["model"][k], theirs[k]) for k in theirs)


def test_train_init_from_refuses_another_shape_and_resume(tmp_path, capsys):
    from test_train import FAST, fail
    folder = tiny_neox_folder(tmp_path / "neox", num_hidden_layers=2)
    capsys.readouterr()                   # transformers' own progress bar
    fail(capsys, FAST + ["--init-from", str(folder), "--out", str(tmp_path / "r")], "n_layer")
    assert not (tmp_path / "r").exists()
    edit_config(folder, num_attention_heads=3)          # refused by export, before GPT's ValueError (a traceback)
    fail(capsys, FAST + ["--init-from", str(folder), "--out", str(tmp_path / "r")],
         "hidden_size 128 is not a multiple of num_attention_heads 3")
    assert not (tmp_path / "r").exists()
    run = tmp_path / "run"
    assert train.main(FAST + ["--out", str(run), "--stop-at-step", "1"]) == 0
    capsys.readouterr()
    fail(capsys, ["--resume", str(run), "--init-from", str(folder)], "--init-from starts a new run")
