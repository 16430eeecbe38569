"""Document masking (issue 29) outside the kernel: the document starts prepare.py records, the
starts get_batch returns with each window, the sdpa and naive backends' mask, and --doc-mask in
train.py. The Triton kernel's document mask is tested in test_attention.py."""
import json
import shutil

import numpy as np
import pytest
import torch

import data as D
import experiments
import prepare as P
import train
from harness import tokenizer as tokenizers
from kernels.reference import attention_ref
from model import GPT, attention, make_config
from test_experiments import fake  # noqa: F401  (a fixture: train.py runs faked)
from test_train import FAST, fail, records

DOCS = ["ünïcödé " * 5, "def f():\n    return 1\n", "x", "class A:\n\n\n    pass\n" * 3, "y = 2\n", "z = 3"]


def doc_texts(data, split, tok):
    """The text of each recorded document of a split, its separator (if any) cut off."""
    ids = np.asarray(data.splits[split])
    starts = list(data.docs[split]) + [len(ids)]
    sep = list(tok.separator)
    out = []
    for a, b in zip(starts, starts[1:]):
        piece = list(ids[a:b])
        if b < len(ids) and piece[-len(sep):] == sep:
            piece = piece[:-len(sep)]
        out.append(tok.decode(piece))
    return out


@pytest.mark.parametrize("tokenizer", ["byte", "gpt2"])
def test_prepare_records_where_each_document_starts(tmp_path, tokenizer):
    folder = tmp_path / "texts"
    folder.mkdir()
    for i, text in enumerate(DOCS):
        (folder / f"{i}.txt").write_text(text)
    (folder / "z.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ("one line", "two")))
    data = D.TokenData(P.prepare(folder, tmp_path / "p", tokenizer, workers=1))
    tok = tokenizers.get_tokenizer(tokenizer)
    assert data.meta["train_docs"] == len(data.docs["train"]) and data.docs["train"].dtype == np.int64
    # few documents: the tail is validation, so the document the cut falls in continues there
    texts, full = doc_texts(data, "train", tok), DOCS + ["one line", "two"]
    assert len(texts) > 3 and texts[:-1] == full[:len(texts) - 1] and full[len(texts) - 1].startswith(texts[-1])
    assert data.docs["val"][0] == 0 and doc_texts(data, "val", tok)[-2:] == ["one line", "two"]


def test_documents_split_by_hash_keep_their_starts(tmp_path):
    docs = [f"document {i}: " + "word " * (i % 7 + 1) for i in range(300)]
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    data = D.TokenData(P.prepare(src, tmp_path / "p", "byte", workers=1))
    tok = tokenizers.get_tokenizer("byte")
    train_docs, val_docs = doc_texts(data, "train", tok), doc_texts(data, "val", tok)
    assert data.meta["val_split"] == "by document hash" and len(val_docs) > 5
    assert sorted(train_docs + val_docs) == sorted(docs)


def test_shakespeare_documents_are_its_plays_and_its_tokens_unchanged():
    data = D.TokenData(P.resolve("shakespeare", "byte"))
    ids = np.concatenate([data.splits["train"], data.splits["val"]]).astype(np.uint8).tobytes()
    import gzip
    assert ids == gzip.decompress((P.DATA_DIR / "shakespeare.txt.gz").read_bytes())   # no separator added
    starts = np.asarray(data.docs["train"])
    assert len(starts) + len(data.docs["val"]) - 1 == 38 == data.meta["documents"]    # val starts mid-play
    titles = [ids[s:ids.index(b"\n", s)].decode() for s in starts]
    assert titles[:2] == ["A Midsummer Night's Dream", "A Winter's Tale"] and "Hamlet" in titles
    assert all(ids[s - 3:s] == b"\n\n\n" for s in starts[1:])


def test_gpt2_tokens_are_the_same_with_plays_cut_apart(tmp_path):
    # as in shakespeare.txt.gz: exactly three newlines between plays, never more (data/README.md)
    text = "Hamlet\n\nACT I\n\nHAMLET\nTo be.\n\n\nMacbeth\n\nACT I\n\n\nThe End \n\n\n"
    src = tmp_path / "plays.txt"
    src.write_text(text)
    data = D.TokenData(P.prepare(src, tmp_path / "p", "gpt2", doc_break=P.PLAY_BREAK, workers=1))
    tok = tokenizers.get_tokenizer("gpt2")
    ids = np.concatenate([data.splits["train"], data.splits["val"]]).tolist()
    assert ids == tok.encode(text)
    assert tok.decode(ids[data.docs["train"][1]:]).startswith("Macbeth")


def test_doc_starts_of_a_window_are_its_documents(tmp_path):
    rng = np.random.default_rng(0)
    index = np.concatenate([[0], np.sort(rng.choice(np.arange(1, 500), 60, replace=False))])
    starts = rng.integers(0, 500 - 40, 16).tolist()
    got = D.doc_starts(index, starts, 40)
    for b, s in enumerate(starts):
        for t in range(40):
            first = max(i for i in index if i <= s + t)          # the document holding position s + t
            assert got[b, t] == max(first - s, 0)
    assert got.dtype == torch.int32


def test_get_batch_and_eval_windows_return_the_starts_with_the_same_windows(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"text": f"doc {i} " * (i % 5 + 1)}) + "\n" for i in range(400)))
    data = D.TokenData(P.prepare(src, tmp_path / "p", "byte", workers=1))
    x, y = data.get_batch("train", 4, 64, torch.Generator().manual_seed(3))
    x2, y2, d = data.get_batch("train", 4, 64, torch.Generator().manual_seed(3), docs=True)
    assert torch.equal(x, x2) and torch.equal(y, y2) and d.shape == (4, 64) and (d > 0).any()
    assert all(len(b) == 3 for b in data.eval_windows(64, 512, 4, docs=True))


def unprepared_docs(tmp_path):
    """A folder as prepare.py wrote it before document starts were recorded."""
    src = tmp_path / "c.txt"
    src.write_text("some text " * 200)
    out = P.prepare(src, tmp_path / "old", "byte", workers=1)
    meta = json.loads((out / "meta.json").read_text())
    for key in ("train_docs", "val_docs", "doc_index"):
        del meta[key]
    (out / "meta.json").write_text(json.dumps(meta))
    for split in ("train", "val"):
        (out / f"{split}.docs.npy").unlink()
    return out


def test_a_folder_without_starts_trains_but_refuses_the_mask(tmp_path, capsys):
    old = unprepared_docs(tmp_path)
    data = D.TokenData(old)
    assert data.docs is None
    data.check_windows(64, 64)
    flags = [a for a in FAST if a not in ("--max-tokens", "40960")] + ["--max-tokens", "1024", "--data", str(old)]
    fail(capsys, flags + ["--doc-mask", "--out", str(tmp_path / "r")], "prepared without document starts")
    fail(capsys, flags + ["--eval-doc-mask", "on", "--out", str(tmp_path / "r")], "prepare it again")
    assert not (tmp_path / "r").exists() and (old / "train.bin").exists()


def test_damaged_starts_are_one_error(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text("some text " * 200)
    out = P.prepare(src, tmp_path / "p", "byte", workers=1)
    np.save(out / "train.docs.npy", np.array([5], dtype=np.int64))       # not from 0
    with pytest.raises(D.DataError, match="train.docs.npy: not 1 increasing int64 document starts"):
        D.TokenData(out)
    (out / "train.docs.npy").write_bytes(b"junk")
    with pytest.raises(D.DataError, match="cannot read the document starts"):
        D.TokenData(out)


def random_docs(B, T, gen, n_cuts):
    """(B, T) document starts of random segmentations: documents of length 1 included."""
    d = torch.zeros(B, T, dtype=torch.int32)
    for b in range(B):
        for c in sorted(torch.randint(1, T, (n_cuts,), generator=gen).tolist()) + [T - 1, T - 2]:
            d[b, c:] = c
    return d


@pytest.mark.parametrize("backend", ["sdpa", "naive"])
def test_backends_apply_the_document_mask(backend):
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 50, 16, generator=gen) for _ in range(3))
    d = random_docs(2, 50, gen, 6)
    want = attention_ref(q.double(), k.double(), v.double(), doc_starts=d)
    torch.testing.assert_close(attention(q, k, v, backend, d).double(), want, atol=1e-5, rtol=1e-5)
    # spelled out: a query's output is attention over its own document's keys alone
    b, t = 1, 30
    s = int(d[b, t])
    alone = attention_ref(q[b:b + 1, :, s:t + 1].double(), k[b:b + 1, :, s:t + 1].double(), v[b:b + 1, :, s:t + 1].double())
    torch.testing.assert_close(want[b:b + 1, :, t], alone[:, :, -1])
    # no boundary in the window: plain causal attention
    none = torch.zeros(2, 50, dtype=torch.int32)
    torch.testing.assert_close(attention(q, k, v, backend, none), attention(q, k, v, backend), atol=1e-6, rtol=1e-6)


def test_a_document_is_blind_to_the_ones_before_it_in_the_model():
    torch.manual_seed(0)
    model = GPT(make_config("tiny"))
    idx = torch.randint(0, 256, (1, 40))
    d = torch.zeros(1, 40, dtype=torch.int32)
    d[:, 25:] = 25
    other = idx.clone()
    other[:, :25] = torch.randint(0, 256, (1, 25))            # another document before it
    a, b = model(idx, docs=d)[0], model(other, docs=d)[0]
    torch.testing.assert_close(a[:, 25:], b[:, 25:])
    assert not torch.allclose(a[:, :25], b[:, :25]) and not torch.allclose(model(idx)[0][:, 25:], a[:, 25:])


def test_doc_mask_trains_records_and_is_fixed_on_resume(tmp_path, capsys):
    short = [a for a in FAST if a not in ("--max-tokens", "40960")] + ["--max-tokens", "4096", "--stop-at-step", "2"]
    masked, plain = tmp_path / "masked", tmp_path / "plain"
    assert train.main(short + ["--doc-mask", "--out", str(masked)]) == 0
    cfg = records(masked, "config")[0]
    assert cfg["doc_mask"] is True and cfg["eval_doc_mask"] == "auto"
    assert torch.load(masked / "ckpt.pt", weights_only=False)["config"]["doc_mask"] is True
    assert train.main(["--resume", str(masked)]) == 0 and records(masked, "eval")[-1]["reason"] == "end"
    assert train.main(short + ["--out", str(plain)]) == 0
    capsys.readouterr()
    fail(capsys, ["--resume", str(plain), "--doc-mask"], "--doc-mask True differs from the checkpoint's False")


def test_validation_is_scored_masked_or_not(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"text": f"doc {i} " * (i % 9 + 1)}) + "\n" for i in range(400)))
    data = D.TokenData(P.prepare(src, tmp_path / "p", "byte", workers=1))
    torch.manual_seed(0)
    model = GPT(make_config("tiny"))
    off = torch.autocast("cpu", enabled=False)
    plain = train.evaluate(model, data, [64], 1024, "cpu", off)
    masked = train.evaluate(model, data, [64], 1024, "cpu", off, masked=True)
    assert plain.keys() == masked.keys() == {"64"} and plain != masked


def test_runs_recorded_before_the_flag_are_reused(tmp_path, fake):
    runs = ["tokens", "--runs", str(tmp_path / "exp"), "--max-tokens", "1000"]
    assert experiments.main(runs) == 0
    metrics = tmp_path / "exp" / "tokens" / "grow-s1" / "metrics.jsonl"
    first, *rest = metrics.read_text().splitlines()
    cfg = json.loads(first)
    del cfg["doc_mask"], cfg["eval_doc_mask"]      # recorded before --doc-mask existed: it ran unmasked
    metrics.write_text("\n".join([json.dumps(cfg), *rest]) + "\n")
    assert experiments.main(runs) == 0 and len(fake.calls) == 3
    assert experiments.main([*runs, "--extra", "--doc-mask"]) == 0 and len(fake.calls) == 6


def test_docmask_experiment_runs_its_eight_arms_and_says_what_masking_did(tmp_path, fake, monkeypatch):
    def both_ways(out, eval_tokens):        # fixed1024 is 0.10 worse unmasked, 0.04 worse masked
        worse = ("fixed1024" in out.name) * (0.04 if "masked" in out.name else 0.10)
        return {w: {str(T): 2.0 + worse for T in experiments.DOCMASK_EVAL} for w in ("unmasked", "masked")}
    monkeypatch.setattr(experiments, "both_ways", both_ways)
    monkeypatch.setattr(experiments, "doc_lengths_text", lambda folder: ["- (document lengths)"])
    monkeypatch.setattr(experiments.prepare, "resolve", lambda *a: tmp_path)
    assert experiments.main(["docmask", "--runs", str(tmp_path / "exp"), "--max-tokens", "1000"]) == 0
    assert len(fake.calls) == 8 and sum("--doc-mask" in c for c in fake.calls) == 4
    assert all("python-stdlib" in c for c in fake.calls)
    table = (tmp_path / "exp" / "docmask" / "results.md").read_text()
    assert "+0.1000 unmasked and +0.0400 masked: it shrinks under masking (-0.0600, 40% of the unmasked gap)" in table
    assert (tmp_path / "exp" / "docmask" / "figures" / "val_vs_context.png").is_file()


def test_warm_up_runs_the_document_masked_model():
    """On a GPU the warm-up compiles and autotunes before the clock: with --doc-mask, the masked
    kernels and graph training will run, not the unmasked ones."""
    from harness import device as hw
    model, calls = GPT(make_config("tiny")), []

    def step_model(x, y, *docs):
        calls.append([d.shape for d in docs])
        return model(x, y, *docs)
    off = torch.autocast("cpu", enabled=False)
    hw.warm_step(model, step_model, off, "cpu", True, 2, 16)
    hw.warm_step(model, step_model, off, "cpu", False, 2, 16)
    assert calls == [[(2, 16)], []]


def test_triton_backend_masks_as_sdpa_does_in_the_model():
    """--attn triton --doc-mask (the kernel under the interpreter) trains what --attn sdpa does:
    the same loss and gradients within fp32 tolerance, on windows crossing documents."""
    torch.manual_seed(0)
    model = GPT(make_config("tiny"))
    idx, targets = torch.randint(0, 256, (2, 2, 96))
    d = random_docs(2, 96, torch.Generator().manual_seed(4), 5)
    grads = {}
    for backend in ("sdpa", "triton"):
        model.zero_grad()
        model.set_attention(backend)
        _, loss = model(idx, targets, d)
        loss.backward()
        grads[backend] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(grads["triton"][0], grads["sdpa"][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(grads["triton"][1], grads["sdpa"][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
