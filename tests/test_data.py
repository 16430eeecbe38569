"""Tokenizers, prepare, memmapped token files, get_batch, and every broken-file error."""
import json

import numpy as np
import pytest
import torch

import data as D

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll: Speak, speak. — ünïcödé\n" * 40


def test_byte_tokenizer_round_trip():
    tok = D.get_tokenizer("byte")
    ids = tok.encode(TEXT)
    assert tok.vocab_size == 256 and max(ids) < 256
    assert len(ids) == len(TEXT.encode("utf-8"))
    assert tok.decode(ids) == TEXT


def test_gpt2_tokenizer_offline_and_exact():
    tok = D.get_tokenizer("gpt2")
    assert tok.encode("hello world") == [31373, 995]     # GPT-2's own ids
    assert tok.encode(" the") == [262]
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert max(tok.encode(TEXT)) < tok.vocab_size


def test_unknown_tokenizer():
    with pytest.raises(D.DataError, match="unknown tokenizer"):
        D.get_tokenizer("sentencepiece")


def test_prepare_writes_uint16_files_and_meta(tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_text(TEXT)
    out = D.prepare(src, tmp_path / "prep", "byte", val_fraction=0.1)
    meta = json.loads((out / "meta.json").read_text())
    train = np.fromfile(out / "train.bin", dtype=np.uint16)
    val = np.fromfile(out / "val.bin", dtype=np.uint16)
    assert meta["tokenizer"] == "byte" and meta["vocab_size"] == 256
    assert meta["train_tokens"] == len(train) and meta["val_tokens"] == len(val)
    # Train then val is the whole text, in order: val is the tail, no overlap.
    assert bytes(np.concatenate([train, val]).astype(np.uint8)) == TEXT.encode("utf-8")
    assert 0.05 < len(val) / (len(train) + len(val)) < 0.15


def test_prepare_a_folder_and_gzip(tmp_path):
    import gzip
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha " * 100)
    (folder / "b.md.gz").write_bytes(gzip.compress(("beta " * 100).encode()))
    (folder / "skip.bin").write_bytes(b"\x00\x01")
    out = D.prepare(folder, tmp_path / "prep", "byte")
    data = D.TokenData(out)
    text = bytes(np.concatenate([data.splits["train"], data.splits["val"]]).astype(np.uint8)).decode()
    assert text.startswith("alpha") and text.endswith("beta ") and "\x00" not in text


def test_get_batch_windows_match_the_file(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text(TEXT)
    data = D.TokenData(D.prepare(src, tmp_path / "p", "byte"))
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
    data = D.TokenData(D.prepare(src, tmp_path / "p", "byte"))
    a = [x for x, _ in data.eval_windows(64, 1024, batch_size=3)]
    b = [x for x, _ in data.eval_windows(64, 1024, batch_size=3)]
    assert sum(len(x) for x in a) == 16 and all(torch.equal(p, q) for p, q in zip(a, b))


def test_default_corpus_is_embedded_and_prepared_on_demand():
    folder = D.resolve("shakespeare", "byte")
    data = D.TokenData(folder)
    assert data.meta["train_tokens"] > 4_000_000
    assert "HAMLET" in D.get_tokenizer("byte").decode(data.splits["train"][:3_000_000])


@pytest.fixture
def prepared(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text(TEXT)
    return D.prepare(src, tmp_path / "p", "byte")


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
    with pytest.raises(D.DataError, match="no meta.json"):
        D.TokenData(prepared)


def test_bad_sources(tmp_path):
    with pytest.raises(D.DataError, match="not 'shakespeare', a prepared folder"):
        D.resolve(str(tmp_path / "nope.txt"), "byte")
    (tmp_path / "bad.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(D.DataError, match="gzip"):
        D.prepare(tmp_path / "bad.txt.gz", tmp_path / "out", "byte")


def test_unwritable_output_is_one_error(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text(TEXT)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(D.DataError, match="cannot write the prepared data"):
        D.prepare(src, tmp_path / "blocker" / "out", "byte")
