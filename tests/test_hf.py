"""What leaves the project works where it lands: every export carries a tokenizer transformers loads
and that encodes and decodes as the run did (byte, gpt2, a tokenizer.json), its dtype, generation
config and model card; a run knows its tokenizer by content (harness.tokenizer.tokenizer_identity).

Offline: models are random and small, every folder is written here (HF_HUB_OFFLINE is set).
"""
import json
import os
from pathlib import Path

import pytest
import torch

import export
from harness import tokenizer as tokenizers
from harness.checkpoint import load_checkpoint
from test_export import make_run
from test_pythia import bpe, world  # noqa: F401  (world: a fixture)

transformers = pytest.importorskip("transformers")
os.environ["HF_HUB_OFFLINE"] = "1"

TEXTS = ["ROMEO: But, soft! what light through yonder window breaks?\n\n  It 's   the east,",
         "naïve café — Grüße, 東京 and an emoji 🙂👍🏽\r\n\ttab\n\n\nend ",
         " leading space, trailing newline\n"]


def exported(tmp_path, kind):
    """A run on `kind` (byte, gpt2, or a tokenizer.json) exported: -> (our model, our tokenizer, folder)."""
    if kind == "tokenizer.json":
        bpe().save(str(tmp_path / "tok.json"))
        name, vocab = str(tmp_path / "tok.json"), 512
    else:
        name, vocab = kind, 50304 if kind == "gpt2" else 256
    ours = make_run(tmp_path / "run", tokenizer=name, vocab_size=vocab, n_layer=1)
    export.export(tmp_path / "run", tmp_path / "hf")
    return ours, tokenizers.get_tokenizer(name), tmp_path / "hf"


KINDS = ["byte", "gpt2", "tokenizer.json"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_export_encodes_and_decodes_as_the_run_did(tmp_path, kind):
    """AutoTokenizer on the export gives our ids on non-ASCII, emoji, newlines and spaces, and
    decodes them back as ours does; a byte run's invalid UTF-8 decodes as data.ByteTokenizer's."""
    _, tok, folder = exported(tmp_path, kind)
    theirs = transformers.AutoTokenizer.from_pretrained(folder)
    for text in TEXTS:
        ids = tok.encode(text)
        assert theirs(text).input_ids == ids, text
        assert theirs.decode(ids) == tok.decode(ids) == text
    if kind == "byte":
        assert len(theirs) == 256 and theirs("\x00\xff").input_ids == [0, 195, 191]
        for bad in (b"\xff", b"\xf0\x9f\x98", b"a\xe2\x82b", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf0\x9f\x98\x80\x80"):
            assert theirs.decode(list(bad)) == tok.decode(list(bad)), bad


@pytest.mark.parametrize("kind", KINDS)
def test_every_export_generates_in_a_pipeline_with_our_greedy_tokens(tmp_path, kind):
    ours, tok, folder = exported(tmp_path, kind)
    pipe = transformers.pipeline("text-generation", model=str(folder), device="cpu")
    out = pipe("ROMEO:", max_new_tokens=8, do_sample=False, return_full_text=False)[0]["generated_text"]
    prompt = torch.tensor([tok.encode("ROMEO:")])
    want = ours.generate(prompt, 8, temperature=0, vocab_size=tok.vocab_size)[0, prompt.shape[1]:]
    assert out == tok.decode(want.tolist())


def rolling_loglikelihood(ids: list, logits_of, prefix: int, window: int) -> float:
    """lm-eval's loglikelihood_rolling (lm_eval.utils.get_rolling_token_windows, context_len 1, made
    disjoint): the text's tokens predicted in chunks of `window`, the first from `prefix` (its
    prefix_token_id), each chunk from the `window` tokens before its end."""
    seq, total = [prefix] + ids, 0.0
    for a in range(0, len(ids), window):
        b = min(a + window, len(ids))
        lo = max(0, b - window)                 # seq[lo:b] predicts ids[lo:b]; ids[a:b] are counted
        logp = torch.log_softmax(logits_of(torch.tensor([seq[lo:b]])).double(), -1)[0]
        total += sum(logp[k - lo, ids[k]].item() for k in range(a, b))
    return total


@pytest.mark.parametrize("kind", ["byte", "tokenizer.json"])
def test_rolling_loglikelihood_through_transformers_equals_ours(tmp_path, kind):
    """An lm-eval style rolling log-likelihood (bits per byte's numerator) computed with transformers
    on the export, from its own tokenizer and config, equals our model's on the same text."""
    ours, tok, folder = exported(tmp_path, kind)
    theirs = transformers.AutoTokenizer.from_pretrained(folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    gen = json.loads((folder / "generation_config.json").read_text())
    # lm-eval's prefix: bos, else eos; bytes have neither: "\n" (--model_args prefix_token_id=10), as
    # every document but the first follows "\n\n" in training
    prefix = gen["bos_token_id"] if gen["bos_token_id"] is not None else tok.separator[-1]
    text = "\n\n".join(TEXTS) * 3
    window = theirs.model_max_length
    assert window == 64 and len(tok.encode(text)) > 2 * window      # several windows
    with torch.no_grad():
        a = rolling_loglikelihood(theirs(text).input_ids, lambda x: hf(x).logits, prefix, window)
        b = rolling_loglikelihood(tok.encode(text), lambda x: ours(x)[0], prefix, window)
    assert a < -10 and abs(a - b) <= 1e-4 * abs(b), (a, b)


# ----------------------------------------------------------------------------- dtype, generation config, card

def test_export_dtype_is_written_and_loads_as_written(tmp_path):
    """--dtype casts the weights and sets config.json's dtype keys, so dtype="auto" gives them back;
    the default for a run from scratch is float32."""
    ours = make_run(tmp_path / "run")
    for dtype, want in ((None, torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        out = tmp_path / f"hf-{dtype}"
        assert export.main([str(tmp_path / "run"), str(out), *(["--dtype", dtype] if dtype else [])]) == 0
        hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="auto")
        assert hf.dtype == want and hf.gpt_neox.embed_in.weight.dtype == want
        assert torch.equal(hf.get_output_embeddings().weight, ours.embed_out.weight.to(want))


def init_run(tmp_path, context=2048, dtype="float16", schedule="128,256"):
    """A run continued from a folder trained at `context` in `dtype` (only config.json is read)."""
    base = tmp_path / "pythia"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"max_position_embeddings": context, "torch_dtype": dtype}))
    make_run(tmp_path / "run", schedule=schedule)
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    ckpt["config"]["init_from"] = str(base)
    torch.save(ckpt, tmp_path / "run" / "ckpt.pt")
    return tmp_path / "run"


def test_a_continued_run_keeps_its_history_length_and_dtype(tmp_path):
    """A 2048-token fp16 folder continued at 128,256 exports max_position_embeddings 2048 (not 256)
    and fp16 weights by default: lm-eval then scores it in 2048-token windows, and a later
    --init-from --rope-switch scales from 2048 (export.init_state reads max_position_embeddings)."""
    export.export(init_run(tmp_path), tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["max_position_embeddings"] == 2048 and cfg["dtype"] == "float16"
    assert json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())["model_max_length"] == 2048
    assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype="auto").dtype == torch.float16
    shape = json.loads(json.dumps(load_checkpoint(tmp_path / "run")["model_config"]))
    rope, _ = export.init_state(tmp_path / "hf", {**shape, "rope_switch": "yarn"}, "byte")
    assert rope["rope_orig_len"] == 2048                    # a switch scales from the history's length


def test_an_inactive_rope_switch_is_said_at_start(tmp_path, world, capsys):
    """--init-from a folder trained at 64 with every stage within 64: the switch never scales."""
    import train
    folder, corpus = world
    assert train.main(["--init-from", str(folder), "--data", str(corpus), *TRAIN, "--max-tokens", "1024",
                       "--rope-switch", "yarn", "--out", str(tmp_path / "run")]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == [f"note: --rope-switch yarn is inactive: every stage of 64 is within the 64 tokens {folder} "
                     "was trained at (it scales from that length)"]


def test_generation_config_never_draws_a_padding_row(tmp_path):
    """gpt2: the head's 47 padding rows (50257..50303) are suppressed; eos/bos/pad are <|endoftext|>."""
    exported(tmp_path, "gpt2")
    gen = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert gen["eos_token_id"] == gen["pad_token_id"] == 50256 and gen["suppress_tokens"] == list(range(50257, 50304))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        hf.get_output_embeddings().weight[50300] += 1e3           # a padding row that would win every argmax
        out = hf.generate(torch.tensor([[464, 3290]]), max_new_tokens=4, do_sample=False)
    assert out.max() < 50257


def test_the_model_card_says_what_a_reader_needs(tmp_path):
    run = init_run(tmp_path)
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "loss": {"256": 2.5, "128": 2.25}}) + "\n")
    export.export(run, tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    for want in ("continued from the local folder", "schedule `128,256`", "| 128 | 2.2500 |", "| 256 | 2.5000 |",
                 "RoPE: plain RoPE", "AutoModelForCausalLM.from_pretrained", "# license:", "Weights: float16",
                 "Longest context trained: 2048"):
        assert want in card, want


# ----------------------------------------------------------------------------- a tokenizer known by content

TRAIN = ["--schedule", "64", "--tokens-per-step", "1024", "--eval-lengths", "64", "--eval-tokens", "1024",
         "--eval-interval", "1e9", "--sample-tokens", "0"]


def resaved(tok_file: Path, where: Path) -> Path:
    """The tokenizer.json transformers writes for tok_file (save_pretrained): other JSON (it adds a
    post-processor, reorders keys), the same encoding."""
    transformers.PreTrainedTokenizerFast(tokenizer_file=str(tok_file)).save_pretrained(where)
    return where / "tokenizer.json"


def fails(capsys, main, argv, match):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and match in err[0], err


@pytest.fixture
def bpe_run(tmp_path, world):
    """A run trained on a tokenizer.json: -> (run folder, its tokenizer file, the corpus)."""
    import train
    _, corpus = world
    tok = tmp_path / "tok" / "tokenizer.json"
    tok.parent.mkdir()
    bpe(300).save(str(tok))
    assert train.main(["--tokenizer", str(tok), "--data", str(corpus), *TRAIN, "--max-tokens", "1024",
                       "--out", str(tmp_path / "run")]) == 0
    tokenizers.get_tokenizer.cache_clear()
    return tmp_path / "run", tok, corpus


def test_a_resaved_tokenizer_is_the_same_tokenizer_everywhere(tmp_path, bpe_run, capsys):
    """transformers' re-save changes the JSON, not the tokenizer: same identity; train (on the data
    prepared with the original), resume, sample and export all take it."""
    import sample
    import train
    run, tok, corpus = bpe_run
    again = resaved(tok, tmp_path / "resaved")
    a, b = json.loads(tok.read_text()), json.loads(again.read_text())
    assert a != b and tokenizers.tokenizer_identity(tok.read_text()) == tokenizers.tokenizer_identity(again.read_text())
    assert train.main(["--resume", str(run), "--max-tokens", "2048", "--tokenizer", str(again)]) == 0
    assert train.main(["--tokenizer", str(again), "--data", str(corpus), *TRAIN, "--max-tokens", "1024",
                       "--out", str(tmp_path / "fresh")]) == 0
    assert sample.main([str(run), "--tokenizer", str(again), "--max-new-tokens", "4"]) == 0
    assert export.main([str(run), str(tmp_path / "hf"), "--tokenizer", str(again)]) == 0


def test_an_edited_tokenizer_is_refused_by_sample_and_export(tmp_path, bpe_run, capsys):
    """Edited in place after training (two ids swapped): sample.py and export.py refuse it in one
    line naming the file, and nothing is exported."""
    import sample
    run, tok, _ = bpe_run
    spec = json.loads(tok.read_text())
    vocab = spec["model"]["vocab"]
    x, y = sorted(vocab, key=vocab.get)[100:102]
    vocab[x], vocab[y] = vocab[y], vocab[x]
    tok.write_text(json.dumps(spec))
    fails(capsys, sample.main, [str(run), "--max-new-tokens", "2"], f"{tok.resolve()}: not the tokenizer the run")
    fails(capsys, export.main, [str(run), str(tmp_path / "hf")], f"{tok.resolve()}: not the tokenizer the run")
    assert not (tmp_path / "hf").exists()
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)      # a checkpoint from before the record:
    del ckpt["tokenizer_identity"]                              # its data folder's meta.json names it
    torch.save(ckpt, run / "ckpt.pt")
    fails(capsys, sample.main, [str(run), "--max-new-tokens", "2"], f"{tok.resolve()}: not the tokenizer the run")


def test_a_moved_tokenizer_is_found_in_the_prepared_data_folder(tmp_path, bpe_run, capsys):
    """The tokenizer.json gone from where the run found it: the prepared data folder's copy is
    taken (its identity is the run's), or --tokenizer names the new place."""
    import sample
    run, tok, _ = bpe_run
    moved = tok.rename(tmp_path / "moved.json")
    assert export.main([str(run), str(tmp_path / "hf")]) == 0
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")("To be").input_ids == \
        tokenizers.get_tokenizer(str(moved)).encode("To be")
    assert sample.main([str(run), "--max-new-tokens", "2"]) == 0
    assert export.main([str(run), str(tmp_path / "hf2"), "--tokenizer", str(moved)]) == 0


def test_data_prepared_under_the_old_identity_still_trains(tmp_path, world):
    """Folders prepared before the identity changed are named by legacy_identity (whole-JSON hash):
    a text file's cache so named is found again, not re-prepared, and open_data accepts it."""
    import prepare as P
    _, corpus = world
    tok_file = tmp_path / "tok.json"
    bpe(300).save(str(tok_file))
    tok = tokenizers.get_tokenizer(str(tok_file))
    legacy = "hf-" + tok.legacy[:16]
    assert legacy != tok.name and legacy in tok.names
    text = tmp_path / "plays.txt"
    text.write_text(corpus.read_text()[:20_000])
    folder = P.resolve(str(text), str(tok_file))
    old = folder.rename(tmp_path / f"plays.txt-{legacy}")         # as the old version named it
    meta = json.loads((old / "meta.json").read_text())
    meta.update(tokenizer=legacy, source_key=P.source_key(P.list_files(text, None), legacy, P.settings(tok)))
    (old / "meta.json").write_text(json.dumps(meta))
    assert P.resolve(str(text), str(tok_file)) == old
    assert P.open_data(str(text), str(tok_file)).folder == old


# ----------------------------------------------------------------------------- sample.py on a Hugging Face folder

@pytest.mark.parametrize("kind", KINDS)
def test_sample_takes_a_hugging_face_folder(tmp_path, kind, capsys):
    """An export (each tokenizer kind) samples greedily the tokens the run's model does."""
    import sample
    ours, tok, folder = exported(tmp_path, kind)
    capsys.readouterr()
    assert sample.main([str(folder), "--prompt", "ROMEO:", "--max-new-tokens", "6", "--temperature", "0"]) == 0
    prompt = torch.tensor([tok.encode("ROMEO:")])
    want = tok.decode(ours.generate(prompt, 6, temperature=0, vocab_size=tok.vocab_size)[0].tolist())
    assert capsys.readouterr().out == want + "\n---\n"


def test_sample_on_a_released_pythia_folder(tmp_path, world, capsys):
    import sample
    folder, _ = world
    assert sample.main([str(folder), "--prompt", "To be", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("To be")
