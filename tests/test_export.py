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
from harness import tokenizer as tokenizers
from harness.checkpoint import CKPT_FORMAT, load_checkpoint
from model import GPT, GPTConfig

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parent.parent


def make_run(folder: Path, tokenizer="byte", schedule="32,64", switch=None, **shape) -> GPT:
    """A random model saved as train.py saves a checkpoint (only the keys export reads). switch:
    (first length, current length) for GPT.switch_rope, the RoPE state of a run in a later stage."""
    torch.manual_seed(0)
    cfg = GPTConfig(**{**dict(vocab_size=256, n_layer=2, n_head=4, n_embd=64), **shape})
    model = GPT(cfg).eval()
    if switch:
        model.switch_rope(*switch)
    folder.mkdir(parents=True)
    torch.save({"format": CKPT_FORMAT, "config": {"tokenizer": tokenizer, "preset": "tiny", "schedule": schedule},
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


def test_byte_export_has_a_tokenizer_generation_config_and_a_card(tmp_path, capsys):
    make_run(tmp_path / "run")
    assert export.main([str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        "README.md", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json"]


def test_gpt2_export_tokenizer_round_trip_with_the_padded_vocab(tmp_path):
    """vocab 50304 (GPT-2's 50257 padded, as train.py does): AutoTokenizer encodes as our
    tokenizer does, decodes back, and its ids run through the exported model."""
    ours = make_run(tmp_path / "run", tokenizer="gpt2", vocab_size=50304, n_layer=1)
    export.export(tmp_path / "run", tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "ROMEO: But, soft! what light through yonder window breaks?\n\n  It's   the east,"
    ids = tok(text).input_ids
    assert ids == tokenizers.get_tokenizer("gpt2").encode(text) and tok.decode(ids) == text
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


# ----------------------------------------------------------------------------- every --rope-switch

def sharp_rope_run(folder: Path, method: str) -> GPT:
    """A run in its third stage (64 -> 256, s = 4) whose positions matter: q and k weights scaled
    up so attention is peaked (at init it is near uniform and RoPE barely moves the logits), a
    non-default base and rotary share, and base 500 so yarn's ramp has a dim half way (keep 1/2)."""
    make_run(folder, schedule="64,128,256", switch=(64, 256), rope_switch=method, rotary_pct=0.5, rope_base=500.0)
    ckpt = torch.load(folder / "ckpt.pt", weights_only=True)
    for k in ckpt["model"]:
        if k.endswith("query_key_value.weight"):
            ckpt["model"][k] *= 12
    torch.save(ckpt, folder / "ckpt.pt")
    model = GPT(GPTConfig(**ckpt["model_config"])).eval()
    model.load_state_dict(ckpt["model"])
    return model


def set_config(folder: Path, cfg: dict):
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("method", ["none", "pi", "ntk", "yarn"])
def test_every_rope_switch_exports_with_our_logits_past_the_trained_length(tmp_path, method):
    """Logits equal transformers' to 1e-5 at 512 tokens, 2x the last stage, in transformers 5's key
    style, in transformers 4's (read by 5 too), and after transformers saves the folder itself;
    load_hf gives back the run's shape, RoPE state included, and the same logits."""
    ours = sharp_rope_run(tmp_path / "run", method)
    assert (ours.cfg.rope_scale == 4.0) == (method != "none")
    export.export(tmp_path / "run", tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    idx = torch.randint(0, 256, (2, 512))
    with torch.no_grad():
        want = ours(idx)[0]
        plain = GPT(GPTConfig(**{**ours.cfg.shape(), "rope_switch": "none"})).eval()
        plain.load_state_dict(ours.state_dict())
        assert (plain(idx)[0] - want).abs().max() > (1e-3 if method != "none" else -1)   # the scaling shows

    def agrees(folder):
        hf = transformers.GPTNeoXForCausalLM.from_pretrained(folder).eval()
        shape, state = export.load_hf(folder)
        assert shape == ours.cfg.shape(), (shape, ours.cfg.shape())
        back = GPT(GPTConfig(**shape)).eval()
        back.load_state_dict(state)
        with torch.no_grad():
            for got in (hf(idx).logits, back(idx)[0]):
                assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
        return hf
    hf = agrees(tmp_path / "hf")
    hf.save_pretrained(tmp_path / "resaved")                       # transformers' own file (5 keys)
    agrees(tmp_path / "resaved")
    v4 = {k: v for k, v in cfg.items() if k != "rope_parameters"}  # rope_scaling + rotary_emb_base only
    (tmp_path / "v4").mkdir()
    (tmp_path / "v4" / "model.safetensors").write_bytes((tmp_path / "hf" / "model.safetensors").read_bytes())
    set_config(tmp_path / "v4", v4)
    agrees(tmp_path / "v4")
    if method == "yarn":   # transformers 4 derives yarn's factor from max_position_embeddings / original
        assert cfg["max_position_embeddings"] == 256 and cfg["rope_scaling"]["original_max_position_embeddings"] == 64


def test_a_folder_without_our_record_loads_as_transformers_reads_it(tmp_path):
    """A folder from elsewhere has no growlength_rope: pi and yarn read back as themselves, ntk (to
    transformers only a base) as plain RoPE with the scaled base: another shape, the same logits."""
    for method, switch, base in (("pi", "pi", 500.0), ("yarn", "yarn", 500.0), ("ntk", "none", 500.0 * 4 ** (8 / 6))):
        ours = sharp_rope_run(tmp_path / method, method)
        export.export(tmp_path / method, tmp_path / f"hf-{method}")
        cfg = json.loads((tmp_path / f"hf-{method}" / "config.json").read_text())
        del cfg[export.RECORD]
        set_config(tmp_path / f"hf-{method}", cfg)
        shape, state = export.load_hf(tmp_path / f"hf-{method}")
        assert shape["rope_switch"] == switch and shape["rope_base"] == pytest.approx(base, rel=1e-12)
        back = GPT(GPTConfig(**shape)).eval()
        back.load_state_dict(state)
        idx = torch.randint(0, 256, (1, 512))
        with torch.no_grad():
            assert torch.allclose(back(idx)[0], ours(idx)[0], atol=1e-5)


def test_a_two_stage_yarn_run_exports_with_our_logits(tmp_path):
    """train.py through a stage switch (32 -> 64, s = 2), then export: transformers' yarn computes
    the run's own logits, at 128 tokens (2x the last stage)."""
    run = tmp_path / "run"
    assert train.main(["--preset", "tiny", "--schedule", "32,64", "--tokens-per-step", "256", "--max-tokens", "1024",
                       "--eval-tokens", "256", "--eval-lengths", "32", "--eval-interval", "1e9", "--log-interval", "0",
                       "--sample-tokens", "0", "--rope-switch", "yarn", "--out", str(run)]) == 0
    ckpt = load_checkpoint(run)
    assert ckpt["model_config"]["rope_scale"] == 2.0 and ckpt["model_config"]["rope_orig_len"] == 32
    export.export(run, tmp_path / "hf")
    ours = GPT(GPTConfig(**ckpt["model_config"])).eval()
    ours.load_state_dict(ckpt["model"])
    logits_agree(ours, transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path / "hf").eval(), 256, T=128)


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
    ("rope_type", "RoPE type 'dynamic' is not computed by model.py"),
    ("yarn_beta", "yarn beta_fast 16 differs from model.py's YaRN"),
    ("yarn_mscale", "yarn attention_factor"),
    ("record", r"growlength_rope \(ntk, s=4\) and the RoPE fields transformers reads give different positions"),
    ("bad_record", "growlength_rope is not a record of rope_switch"),
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
    elif damage == "rope_type":
        edit_config(folder, rope_parameters={"rope_type": "dynamic", "factor": 4.0, "rope_theta": 500})
    elif damage == "yarn_beta":
        edit_config(folder, rope_scaling={"rope_type": "yarn", "factor": 4.0, "beta_fast": 16})
    elif damage == "yarn_mscale":       # DeepSeek's form: another attention factor than 0.1 ln s + 1
        edit_config(folder, rope_scaling={"rope_type": "yarn", "factor": 4.0, "mscale": 0.707, "mscale_all_dim": 1.0})
    elif damage == "record":            # the base edited, the record not: which positions did the model learn?
        edit_config(folder, growlength_rope={"rope_switch": "ntk", "rope_base": 500.0, "rope_orig_len": 64,
                                             "rope_scale": 4.0})
    elif damage == "bad_record":
        edit_config(folder, growlength_rope={"rope_switch": "ntk"})
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
    gpt2 = json.loads((tokenizers.gpt2_files() / "encoder.json").read_text())
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
    got_shape, weights = export.init_state(folder, run_model.cfg.shape(), "gpt2")
    assert got_shape == run_model.cfg.shape()
    run_model.load_state_dict(weights)
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
