"""Continuing a released Pythia: a Hugging Face tokenizer.json through prepare.py and train.py,
a GPT-NeoX folder as EleutherAI publishes it continued with a growing schedule and a RoPE switch,
exported and loaded back. Offline: the folder is built here (random weights through
transformers, a small byte-level BPE trained with the `tokenizers` library on a few KB of
Shakespeare), in Pythia's own config.json style.
"""
import gzip
import json
from pathlib import Path

import pytest
import torch

import data as D
import export
import prepare as P
import train
from harness import cli
from harness.tokenizer import HFTokenizer, get_tokenizer
from harness.checkpoint import load_checkpoint, model_from_checkpoint
from model import GPT, GPTConfig

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
ROOT = Path(__file__).resolve().parent.parent
TRAINED_LEN = 64      # the folder's max_position_embeddings: the length its weights "were trained at"


def shakespeare(n_chars: int) -> str:
    with gzip.open(ROOT / "data" / "shakespeare.txt.gz", "rt") as f:
        return f.read(n_chars)


def bpe(vocab_size=400, text=None, eot="<|endoftext|>"):
    """A byte-level BPE as GPT-NeoX-20B's (NFC, no prefix space), end-of-text id 0 as in Pythia's."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text or shakespeare(6000)], trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[eot, "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def pythia_folder(path: Path, tok, weights="safetensors") -> Path:
    """A tiny-preset GPT-NeoX saved by transformers, with config.json rewritten in the key style of a
    released Pythia (transformers 4: rotary_emb_base, rotary_pct; no rope_parameters) and its
    tokenizer.json. Weights drawn wide (std 0.2): near-uniform logits would hide a wrong position."""
    vocab = 128 * -(-tok.get_vocab_size() // 128)
    torch.manual_seed(3)
    hf = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        vocab_size=vocab, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
        rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=TRAINED_LEN, use_parallel_residual=True,
        hidden_act="gelu", tie_word_embeddings=False, initializer_range=0.2))
    hf.save_pretrained(path)
    if weights == "bin":                       # older releases: fp16 tensors in a pickle
        (path / "model.safetensors").unlink()
        state = {("embed_out.weight" if k == "lm_head.weight" else k): v.half() for k, v in hf.state_dict().items()}
        torch.save(state, path / "pytorch_model.bin")
    (path / "config.json").write_text(json.dumps({
        "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
        "hidden_size": 128, "initializer_range": 0.02, "intermediate_size": 512, "layer_norm_eps": 1e-05,
        "max_position_embeddings": TRAINED_LEN, "model_type": "gpt_neox", "num_attention_heads": 4,
        "num_hidden_layers": 4, "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False,
        "torch_dtype": "float32", "transformers_version": "4.24.0", "use_cache": True,
        "use_parallel_residual": True, "vocab_size": vocab}, indent=2))
    tok.save(str(path / "tokenizer.json"))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The Pythia-style folder and a corpus (other Shakespeare than the tokenizer saw)."""
    root = tmp_path_factory.mktemp("pythia")
    folder = pythia_folder(root / "pythia-tiny", bpe())
    corpus = root / "plays.txt"
    corpus.write_text(shakespeare(120_000)[20_000:])
    return folder, corpus


def hf_from(folder):
    return transformers.GPTNeoXForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def first_eval(run: Path) -> dict:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in recs if r["kind"] == "eval")


@torch.no_grad()
def their_loss(hf, data: D.TokenData, T: int, eval_tokens: int) -> float:
    """transformers' mean next-token loss on the very windows train.evaluate reads."""
    total, count = 0.0, 0
    for x, y in data.eval_windows(T, eval_tokens, batch_size=max(1, train.EVAL_BATCH_TOKENS // T)):
        logits = hf(x).logits
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    return total / count


# ----------------------------------------------------------------------------- the tokenizer

def test_a_tokenizer_json_encodes_as_the_library_and_names_itself_by_content(tmp_path, world):
    folder, _ = world
    tok = get_tokenizer(str(folder))
    lib = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    text = "O Romeo, Romeo! wherefore art thou Romeo?\n\nnaïve café"
    assert tok.encode(text) == lib.encode(text, add_special_tokens=False).ids and tok.decode(tok.encode(text)) == text
    assert tok.eot_token == 0 and tok.separator == (0,) and tok.vocab_size == lib.get_vocab_size()
    assert tok.name.startswith("hf-") and len(tok.identity) == 64
    # The same tokenizer saved with other whitespace is the same one; another vocabulary is not.
    (tmp_path / "pretty.json").write_text(json.dumps(json.loads((folder / "tokenizer.json").read_text()), indent=4))
    assert get_tokenizer(str(tmp_path / "pretty.json")).name == tok.name
    bpe(300).save(str(tmp_path / "other.json"))
    assert get_tokenizer(str(tmp_path / "other.json")).name != tok.name


def test_tokenizer_config_names_the_end_of_text_token(tmp_path):
    bpe(eot="<|im_end|>").save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(D.DataError, match="no end-of-text token"):
        HFTokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<|im_end|>"}}))
    assert HFTokenizer(tmp_path).eot_token == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_streaming_preparation_equals_one_shot_encoding(tmp_path, monkeypatch, world, workers):
    folder, _ = world
    docs = [shakespeare(30_000)[i * 3000:(i + 1) * 3000] for i in range(6)] + ["x" * 900 + "\n   \n\t  y  "]
    src = tmp_path / "docs"
    src.mkdir()
    for i, doc in enumerate(docs):
        (src / f"{i}.txt").write_text(doc)
    monkeypatch.setattr(P, "BLOCK", 97)        # every document cut into many pieces
    out = P.prepare(src, tmp_path / "p", str(folder), workers=workers, batch_bytes=300)
    tok = get_tokenizer(str(folder))
    expected = []
    for doc in docs:
        expected += ([tok.eot_token] if expected else []) + tok.encode(doc)
    data = D.TokenData(out)
    assert [int(i) for s in ("train", "val") for i in data.splits[s]] == expected
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokenizer"] == tok.name and meta["tokenizer_sha256"] == tok.identity and meta["separator"] == [0]
    assert (out / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()


def test_prepare_cli_takes_a_folder_and_neox_tokens_never_pass_for_gpt2_ones(tmp_path, world, capsys):
    folder, corpus = world
    assert P.main(["--input", str(corpus), "--out", str(tmp_path / "neox"), "--tokenizer", str(folder)]) == 0
    assert P.main(["--input", str(corpus), "--out", str(tmp_path / "gpt2"), "--tokenizer", "gpt2"]) == 0
    neox, gpt2 = D.TokenData(tmp_path / "neox"), D.TokenData(tmp_path / "gpt2")
    assert neox.fingerprint != gpt2.fingerprint                  # so check_data refuses a resume across them
    with pytest.raises(D.DataError, match="prepared with the hf-"):
        P.open_data(str(tmp_path / "neox"), "gpt2")
    assert P.open_data(str(tmp_path / "neox"), str(folder / "tokenizer.json")).fingerprint == neox.fingerprint


@pytest.mark.parametrize("flag, match", [
    ("missing", "is not byte or gpt2, nor a tokenizer.json"),
    ("empty_dir", "cannot read tokenizer.json"),
    ("not_json", "not a Hugging Face tokenizer.json"),
])
def test_a_bad_tokenizer_is_one_line(tmp_path, capsys, flag, match):
    (tmp_path / "c.txt").write_text("some text " * 50)
    path = tmp_path / flag
    if flag == "empty_dir":
        path.mkdir()
    elif flag == "not_json":
        path.write_text("{not json")
    argv = ["--input", str(tmp_path / "c.txt"), "--out", str(tmp_path / "p"), "--tokenizer", str(path)]
    try:
        code = cli.run(P.main, argv)
    except SystemExit as e:          # argparse's own exit, after its one line
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "p").exists()


# ----------------------------------------------------------------------------- continuing the folder

def test_continue_a_pythia_folder_grow_and_export(tmp_path, world):
    """The issue's command at toy scale: no --preset, no --tokenizer (both the folder's), a growing
    schedule from the folder's trained length with yarn; the first eval is transformers' loss."""
    folder, corpus = world
    run, out = tmp_path / "run", tmp_path / "exported"
    assert train.main(["--init-from", str(folder), "--data", str(corpus), "--schedule", "64,128",
                       "--rope-switch", "yarn", "--tokens-per-step", "1024", "--max-tokens", "4096",
                       "--eval-lengths", "64,128,256", "--eval-tokens", "2048", "--eval-interval", "1e9",
                       "--log-interval", "0", "--sample-tokens", "16", "--out", str(run)]) == 0
    ckpt = load_checkpoint(run)
    assert ckpt["config"]["preset"] == "tiny" and ckpt["config"]["tokenizer"] == str((folder / "tokenizer.json").resolve())
    shape = ckpt["model_config"]
    assert (shape["rope_switch"], shape["rope_orig_len"], shape["rope_scale"]) == ("yarn", TRAINED_LEN, 2.0)

    # Before any step: the folder's own loss, as transformers computes it, at every eval length.
    start = first_eval(run)
    assert start["reason"] == "start" and start["step"] == 0
    data = P.open_data(str(corpus), ckpt["config"]["tokenizer"])
    hf = hf_from(folder)
    for T, ours in start["loss"].items():
        assert abs(ours - their_loss(hf, data, int(T), 2048)) < 1e-4, (T, ours)
    # ... and that check can fail: the same weights under another RoPE base give another loss.
    shape, weights = export.load_hf(folder)
    wrong = GPT(GPTConfig(**{**shape, "rope_base": 500.0}))
    wrong.load_state_dict(weights)
    wrong_loss = train.evaluate(wrong, data, [256], 2048, "cpu", torch.autocast("cpu", enabled=False))["256"]
    assert abs(start["loss"]["256"] - wrong_loss) > 1e-2

    # Exported and loaded back: transformers' logits are ours (yarn s=2 from 64), past 128 too;
    # the tokenizer comes along and encodes as ours.
    export.export(run, out)
    ours = model_from_checkpoint(ckpt, str(run)).eval()
    idx = torch.randint(0, data.vocab_size, (2, 300))
    with torch.no_grad():
        a, b = ours(idx)[0], hf_from(out)(idx).logits
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    auto = transformers.AutoTokenizer.from_pretrained(out)
    text = "Thou art more lovely and more temperate"
    assert auto(text)["input_ids"] == get_tokenizer(str(folder)).encode(text)
    assert auto.eos_token_id == 0


def test_a_longer_first_stage_scales_from_the_folders_length_and_bin_weights_load(tmp_path, world):
    """A released .bin (fp16, pickled state dict; weights_only) continued straight at 2x its length with pi."""
    folder, corpus = world
    bin_folder = pythia_folder(tmp_path / "bin", tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")),
                               weights="bin")
    run = tmp_path / "run"
    assert train.main(["--init-from", str(bin_folder), "--data", str(corpus), "--schedule", "128",
                       "--rope-switch", "pi", "--tokens-per-step", "1024", "--max-tokens", "1024",
                       "--eval-lengths", "64", "--eval-tokens", "1024", "--eval-interval", "1e9",
                       "--log-interval", "0", "--sample-tokens", "0", "--out", str(run)]) == 0
    shape = load_checkpoint(run)["model_config"]
    assert (shape["rope_switch"], shape["rope_orig_len"], shape["rope_scale"]) == ("pi", TRAINED_LEN, 2.0)
    data = P.open_data(str(corpus), str(folder))
    assert abs(first_eval(run)["loss"]["64"] - their_loss(hf_from(bin_folder), data, 64, 1024)) < 1e-4


def test_an_exported_scaled_run_continues_with_its_own_rope(tmp_path, world, capsys):
    """A folder whose RoPE is already scaled (our yarn export) starts with those tables: the flag
    defaults to its method, another method is one line."""
    folder, corpus = world
    common = ["--data", str(corpus), "--tokens-per-step", "1024", "--max-tokens", "1024", "--eval-lengths", "128",
              "--eval-tokens", "1024", "--eval-interval", "1e9", "--log-interval", "0", "--sample-tokens", "0"]
    first, exported = tmp_path / "first", tmp_path / "exported"
    assert train.main(["--init-from", str(folder), "--schedule", "64,128", "--rope-switch", "yarn",
                       *common, "--max-tokens", "2048", "--out", str(first)]) == 0
    export.export(first, exported)
    capsys.readouterr()
    assert train.main(["--init-from", str(exported), "--schedule", "128,256", "--rope-switch", "pi",
                       *common, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its RoPE is scaled by yarn (s=2); continue it with --rope-switch yarn" in err[0], err
    again = tmp_path / "again"
    assert train.main(["--init-from", str(exported), "--schedule", "128,256", *common, "--out", str(again)]) == 0
    ckpt = load_checkpoint(again)
    assert ckpt["config"]["rope_switch"] == "yarn"
    assert (ckpt["model_config"]["rope_orig_len"], ckpt["model_config"]["rope_scale"]) == (TRAINED_LEN, 2.0)   # one step: stage 1, the folder's own
    recs = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines()]
    end = [r for r in recs if r["kind"] == "eval"][-1]
    assert end["reason"] == "end" and abs(first_eval(again)["loss"]["128"] - end["loss"]["128"]) < 1e-4
    data = P.open_data(str(corpus), str(folder))
    assert abs(first_eval(again)["loss"]["128"] - their_loss(hf_from(exported), data, 128, 1024)) < 1e-4


@pytest.mark.parametrize("damage, match", [
    ("other_tokenizer", "its tokenizer is not the run's hf-"),
    ("no_tokenizer_file", "cannot read tokenizer.json"),
    ("folder_without_tokenizer", "vocab_size is 512, the run's model has 256; give --tokenizer"),
    ("rope_type", "RoPE type 'dynamic' is not computed by model.py"),
    ("bin_not_a_state_dict", "not a state dict"),
    ("no_preset", "3 layers of width 128 and 4 heads fit no --preset"),
])
def test_a_bad_pythia_folder_is_one_line(tmp_path, world, capsys, damage, match):
    folder, corpus = world
    bad = pythia_folder(tmp_path / "bad", tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")))
    flags = []
    cfg = json.loads((bad / "config.json").read_text())
    if damage == "other_tokenizer":            # the data's tokenizer is another one than the folder ships
        bpe(300).save(str(tmp_path / "other.json"))
        flags = ["--tokenizer", str(tmp_path / "other.json")]
    elif damage == "no_tokenizer_file":
        (tmp_path / "empty").mkdir()
        flags = ["--tokenizer", str(tmp_path / "empty")]
    elif damage == "folder_without_tokenizer":     # the run falls back to bytes, whose 256 ids are too few
        (bad / "tokenizer.json").unlink()
    elif damage == "rope_type":
        cfg["rope_scaling"] = {"type": "dynamic", "factor": 2.0}
    elif damage == "bin_not_a_state_dict":
        (bad / "model.safetensors").unlink()
        torch.save([torch.zeros(2)], bad / "pytorch_model.bin")
    elif damage == "no_preset":
        cfg["num_hidden_layers"] = 3
    (bad / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert train.main(["--init-from", str(bad), "--data", str(corpus), "--schedule", "64", "--max-tokens", "1024",
                       "--tokens-per-step", "1024", *flags, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and match in err[0], err
    assert not (tmp_path / "r").exists()


def test_a_moved_tokenizer_json_resumes_by_its_identity(tmp_path, world, capsys):
    """--tokenizer is fixed on resume, but a tokenizer.json may move: the new place is taken when
    its identity is the data's; another tokenizer makes other data, refused by its fingerprint."""
    folder, corpus = world
    tok = tmp_path / "tok.json"
    tok.write_bytes((folder / "tokenizer.json").read_bytes())
    run = tmp_path / "run"
    flags = ["--eval-lengths", "64", "--eval-tokens", "1024", "--eval-interval", "1e9", "--sample-tokens", "0"]
    assert train.main(["--tokenizer", str(tok), "--data", str(corpus), "--schedule", "64", "--tokens-per-step",
                       "1024", "--max-tokens", "1024", *flags, "--out", str(run)]) == 0
    moved = tok.rename(tmp_path / "moved.json")
    get_tokenizer.cache_clear()          # as a new process finds it: gone
    bpe(300).save(str(tmp_path / "other.json"))
    for argv, match in ((["--max-tokens", "2048"], "no such file or folder (moved?"),
                        (["--max-tokens", "2048", "--tokenizer", str(tmp_path / "other.json")], "the data changed since the checkpoint")):
        capsys.readouterr()
        assert train.main(["--resume", str(run), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err
    assert train.main(["--resume", str(run), "--max-tokens", "2048", "--tokenizer", str(moved)]) == 0
    assert load_checkpoint(run)["state"]["tokens"] == 2048
