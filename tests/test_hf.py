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
from harness.checkpoint import load_checkpoint, model_from_checkpoint
from test_export import make_run
from test_pythia import bpe

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
