"""prepare.py: streaming preparation, --data resolution, and its command line (bad input, a full
disk, Ctrl-C and kill: one line, nothing that looks prepared left behind)."""
import errno
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import data as D
from harness import tokenizer as tokenizers
import prepare as P
from harness.files import WriteError
from test_data import TEXT


def test_prepare_writes_uint16_files_and_meta(tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_text(TEXT)
    out = P.prepare(src, tmp_path / "prep", "byte", val_fraction=0.1)
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
    out = P.prepare(folder, tmp_path / "prep", "byte")
    data = D.TokenData(out)
    text = bytes(np.concatenate([data.splits["train"], data.splits["val"]]).astype(np.uint8)).decode()
    assert text.startswith("alpha") and text.endswith("beta ") and "\x00" not in text


def test_default_corpus_is_embedded_and_prepared_on_demand():
    folder = P.resolve("shakespeare", "byte")
    data = D.TokenData(folder)
    assert data.meta["train_tokens"] > 4_000_000
    assert "HAMLET" in tokenizers.get_tokenizer("byte").decode(data.splits["train"][:3_000_000])


def test_bad_sources(tmp_path):
    with pytest.raises(D.DataError, match="not 'shakespeare' or 'python-stdlib', a prepared folder"):
        P.resolve(str(tmp_path / "nope.txt"), "byte")
    (tmp_path / "bad.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(D.DataError, match="gzip"):
        P.prepare(tmp_path / "bad.txt.gz", tmp_path / "out", "byte")


def test_unwritable_output_is_one_error(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text(TEXT)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(D.DataError, match="cannot write the prepared data"):
        P.prepare(src, tmp_path / "blocker" / "out", "byte")


# ----------------------------------------------------------------------------- streaming preparation

ROOT = Path(__file__).resolve().parent.parent


def stdlib_sample(n=3):
    """A few real .py files: long whitespace runs are where a careless chunking changes tokens."""
    return [p.read_text() for p in P.stdlib_files()[100:100 + n] if P._is_utf8(p)]


def all_tokens(folder):
    data = D.TokenData(folder)
    return np.concatenate([data.splits["train"], data.splits["val"]]).astype(np.int64).tolist()


@pytest.mark.parametrize("workers", [1, 2])
def test_streaming_gpt2_equals_one_shot_encoding(tmp_path, monkeypatch, workers):
    docs = stdlib_sample() + [TEXT, "x" * 5000 + "\n   \n\t  y  ", "naïve café —\n\n\n  end"]
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, doc in enumerate(docs):
        (folder / f"{i:02d}.txt").write_text(doc)
    monkeypatch.setattr(P, "BLOCK", 97)       # every document is cut into many pieces
    out = P.prepare(folder, tmp_path / "p", "gpt2", workers=workers, batch_bytes=300)
    tok = tokenizers.get_tokenizer("gpt2")
    expected = []
    for doc in docs:                          # <|endoftext|> between documents, never inside one
        expected += ([tok.eot_token] if expected else []) + tok.encode(doc)
    assert all_tokens(out) == expected
    meta = json.loads((out / "meta.json").read_text())
    assert meta["documents"] == len(docs) and meta["val_split"] == "tail"
    assert meta["bytes"] == sum(len(d.encode()) for d in docs)


def test_streaming_byte_keeps_blank_line_separators_and_raw_bytes(tmp_path, monkeypatch):
    folder = tmp_path / "docs"
    folder.mkdir()
    raw = [b"first doc\n", "second — ünï\n".encode(), b"latin-1 caf\xe9 is not UTF-8"]
    for i, doc in enumerate(raw):
        (folder / f"{i}.txt").write_bytes(doc)
    monkeypatch.setattr(P, "BLOCK", 5)
    out = P.prepare(folder, tmp_path / "p", "byte", workers=2, batch_bytes=7)
    # today's behaviour kept: documents joined by a blank line; é in latin-1 stays byte 0xE9
    assert bytes(all_tokens(out)) == b"\n\n".join(raw)


def write_jsonl(path, docs, field="text"):
    lines = "".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs))
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(lines.encode()))
    else:
        path.write_text(lines)


def test_val_split_is_by_document_deterministic_and_disjoint(tmp_path):
    docs = [f"document {i}: " + "word " * (i % 17 + 1) for i in range(400)]
    write_jsonl(tmp_path / "c.jsonl", docs)
    a = P.prepare(tmp_path / "c.jsonl", tmp_path / "a", "byte", val_fraction=0.1, workers=2, batch_bytes=500)
    b = P.prepare(tmp_path / "c.jsonl", tmp_path / "b", "byte", val_fraction=0.1, workers=1)
    for split in ("train.bin", "val.bin"):
        assert (a / split).read_bytes() == (b / split).read_bytes()
    data = D.TokenData(a)
    train, val = (set(bytes(data.splits[s].tolist()).decode().split("\n\n")) for s in ("train", "val"))
    assert train.isdisjoint(val) and train | val == set(docs)
    assert val == {d for d in docs if P.document_split(P.Piece(d.encode(), True), 0.1) == "val"}
    assert 20 <= len(val) <= 60                                # ~40 of 400
    assert data.meta["val_split"] == "by document hash" and data.meta["documents"] == 400


def test_jsonl_gz_text_field_and_glob_inputs(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl.gz", ["one", "two"], field="body")
    (folder / "b.txt").write_text("three")
    (folder / "sub" / "c.md").write_text("four")
    (folder / "d.py").write_text("five = 5")
    out = P.prepare(folder, tmp_path / "p", "byte", text_field="body", val_fraction=0.2)
    assert bytes(all_tokens(out)) == b"one\n\ntwo\n\nthree\n\nfour"     # sorted by path, .py skipped
    out = P.prepare(folder, tmp_path / "q", "byte", glob="*.py", val_fraction=0.3)
    assert bytes(all_tokens(out)) == b"five = 5"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["files"] == 1 and meta["glob"] == "*.py"


class StubTokenizer:
    """A vocabulary past uint16: one id per character, offset to 65,000 and up."""
    name, vocab_size, takes_bytes, separator = "stub", 70_000, False, (69_999,)

    def encode(self, text):
        return [65_000 + ord(c) % 4_000 for c in text]


def test_large_vocabulary_is_stored_as_uint32(tmp_path):
    (tmp_path / "c.txt").write_text(TEXT)
    out = P.prepare(tmp_path / "c.txt", tmp_path / "p", StubTokenizer(), workers=1)
    meta = json.loads((out / "meta.json").read_text())
    n = meta["train_tokens"] + meta["val_tokens"]
    assert meta["dtype"] == "uint32" and n == len(TEXT)
    assert (out / "train.bin").stat().st_size + (out / "val.bin").stat().st_size == 4 * n
    data = D.TokenData(out)
    assert all_tokens(out) == StubTokenizer().encode(TEXT)
    x, y = data.get_batch("train", 4, 16, generator=torch.Generator().manual_seed(0))
    assert x.min() >= 65_000 and x.max() < 70_000


def test_meta_records_what_was_prepared(tmp_path):
    (tmp_path / "c.txt").write_text(TEXT)
    meta = json.loads((P.prepare(tmp_path / "c.txt", tmp_path / "p", "gpt2") / "meta.json").read_text())
    import hashlib
    assert meta["content_sha256"] == hashlib.sha256(TEXT.encode()).hexdigest()
    assert meta["documents"] == 1 and meta["bytes"] == len(TEXT.encode()) and meta["dtype"] == "uint16"
    assert meta["tokenizer"] == "gpt2" and meta["separator"] == [50256] and meta["source"].endswith("c.txt")
    assert D.TokenData(tmp_path / "p").fingerprint == meta["fingerprint"]


# ----------------------------------------------------------------------------- prepared data is the data asked for

def test_resolve_keys_the_cache_on_the_file_and_its_content(tmp_path):
    v1, v2 = tmp_path / "play.v1.txt", tmp_path / "play.v2.txt"
    v1.write_text("version one " * 50)
    v2.write_text("version two " * 50)
    f1, f2 = P.resolve(str(v1), "byte"), P.resolve(str(v2), "byte")
    assert f1 != f2 and b"one" in bytes(all_tokens(f1)) and b"two" in bytes(all_tokens(f2))
    fp = D.TokenData(f1).fingerprint
    assert P.resolve(str(v1), "byte") == f1 and D.TokenData(f1).fingerprint == fp     # cached
    v1.write_text("version three " * 50)                     # edited: prepared again
    os.utime(v1, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert P.resolve(str(v1), "byte") == f1
    assert b"three" in bytes(all_tokens(f1)) and D.TokenData(f1).fingerprint != fp


def test_python_stdlib_corpus(tmp_path, monkeypatch):
    files = P.stdlib_files()
    assert len(files) > 500 and not any("site-packages" in p.parts for p in files)
    monkeypatch.setattr(P, "stdlib_files", lambda: files[:30])     # the real one is 31 MB
    monkeypatch.setattr(P, "DATA_DIR", tmp_path)
    folder = P.resolve("python-stdlib", "byte")
    meta = D.TokenData(folder).meta
    assert folder == tmp_path / "python-stdlib-byte" and meta["source"] == "python-stdlib"
    assert meta["python_version"] == sys.version.split()[0] and meta["files"] == 30
    assert meta["bytes"] == sum(p.stat().st_size for p in files[:30])


def test_out_holding_another_corpus_is_refused_unless_force(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT)
    (tmp_path / "b.txt").write_text(TEXT.upper())
    out = P.prepare(tmp_path / "a.txt", tmp_path / "p", "byte")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert P.prepare(tmp_path / "a.txt", out, "byte") == out            # same inputs: up to date
    with pytest.raises(D.DataError, match="holds a corpus prepared from other inputs.*--force"):
        P.prepare(tmp_path / "b.txt", out, "byte")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    P.prepare(tmp_path / "b.txt", out, "byte", force=True)
    assert bytes(all_tokens(out)) == TEXT.upper().encode()
    (out / "notes.txt").write_text("mine")                                # never deleted, even with --force
    with pytest.raises(D.DataError, match="holds other files"):
        P.prepare(tmp_path / "a.txt", out, "byte", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "p"]


def test_a_file_inside_a_prepared_folder_is_refused(tmp_path):
    (tmp_path / "c.txt").write_text(TEXT)
    out = P.prepare(tmp_path / "c.txt", tmp_path / "p", "byte")
    (out / "notes.txt").write_text("put there by hand")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for name in ("train.bin", "val.bin", "meta.json", "notes.txt"):     # never trained on as text
        with pytest.raises(D.DataError, match=rf"--data .*{name} is inside the prepared folder "
                                              rf".*p: pass the folder itself \(--data .*p\)"):
            P.resolve(str(out / name), "byte")
    with pytest.raises(D.DataError, match="is inside the prepared folder"):
        P.prepare(tmp_path / "c.txt", out / "cache", "byte")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before     # no cache folder inside
    (tmp_path / "tokens.bin").write_bytes((out / "train.bin").read_bytes())
    with pytest.raises(D.DataError, match="a .bin file holds token ids, not text"):
        P.resolve(str(tmp_path / "tokens.bin"), "byte")
    assert P.resolve(str(out), "byte") == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "p", "tokens.bin"]


# ----------------------------------------------------------------------------- bytes that are not UTF-8

BAD = b"caf\xe9 au lait, \xff\xfe twice; it ends inside a character \xe2\x82"
CLEAN = "a clean document, naïve café — " * 20


def bad_utf8_corpus(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text(CLEAN)
    (folder / "b.txt").write_bytes(BAD)
    (folder / "c.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    return folder


def gpt2_stream(docs):
    tok = tokenizers.get_tokenizer("gpt2")
    ids = []
    for doc in docs:
        ids += ([tok.eot_token] if ids else []) + tok.encode(doc)
    return ids


def test_bad_utf8_is_replaced_by_default_and_counted(tmp_path, capsys):
    out = P.prepare(bad_utf8_corpus(tmp_path), tmp_path / "p", "gpt2", val_fraction=0.2, progress=True)
    # as bytes.decode(errors="replace") does it, the way the ecosystem reads such text
    replaced = BAD.decode("utf-8", "replace")
    assert all_tokens(out) == gpt2_stream([CLEAN, replaced, "fine", "caf\ufffd"])
    meta = json.loads((out / "meta.json").read_text())
    n = replaced.count("\ufffd") + 1
    assert (meta["bad_utf8"], meta["bad_utf8_documents"], meta["bad_utf8_replaced"]) == ("replace", 2, n)
    assert meta["documents"] == 4
    assert f"warning: 2 documents held invalid UTF-8: {n} invalid sequences replaced by U+FFFD " \
           f"(--bad-utf8 replace)" in capsys.readouterr().err


def test_bad_utf8_skip_drops_the_documents(tmp_path):
    out = P.prepare(bad_utf8_corpus(tmp_path), tmp_path / "p", "gpt2", val_fraction=0.2, bad_utf8="skip")
    assert all_tokens(out) == gpt2_stream([CLEAN, "fine"])
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["bad_utf8_documents"], meta["skipped_files"], meta["bad_utf8_replaced"]) == (2, 1, 0)
    assert meta["documents"] == 2


@pytest.mark.parametrize("name, message", [("b.txt", r"b.txt: not valid UTF-8 at byte 3 \(--bad-utf8 replace or skip"),
                                           ("c.jsonl", r"c.jsonl:2: not valid UTF-8 at byte 13 ")])
def test_bad_utf8_stop_is_one_error(tmp_path, name, message):
    folder = bad_utf8_corpus(tmp_path)
    with pytest.raises(D.DataError, match=message) as e:
        P.prepare(folder / name, tmp_path / "p", "gpt2", bad_utf8="stop")
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_bad_utf8_choice_is_part_of_the_preparation(tmp_path):
    folder = bad_utf8_corpus(tmp_path)
    out = P.prepare(folder, tmp_path / "p", "gpt2", val_fraction=0.2)
    replaced = D.TokenData(out).fingerprint
    with pytest.raises(D.DataError, match="prepared from other inputs or settings"):
        P.prepare(folder, out, "gpt2", val_fraction=0.2, bad_utf8="skip")
    P.prepare(folder, out, "gpt2", val_fraction=0.2, bad_utf8="skip", force=True)
    assert D.TokenData(out).fingerprint != replaced
    # A choice that changed nothing keeps the fingerprint: here, the one this corpus had before
    # --bad-utf8 existed (so checkpoints made then still resume on it).
    (tmp_path / "clean.txt").write_text("A clean corpus, naïve café —\n" * 40)
    for choice in P.BAD_UTF8:
        assert D.TokenData(P.prepare(tmp_path / "clean.txt", tmp_path / choice, "gpt2",
                                     bad_utf8=choice)).fingerprint == "837e120855e0cd71"


# ----------------------------------------------------------------------------- bad input: one line, nothing overwritten

@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "c.txt").write_text(""), "the corpus is empty"),
    (lambda d: (d / "c.jsonl").write_text("\n\n"), "the corpus is empty"),
    (lambda d: (d / "c.txt.gz").write_bytes(gzip.compress(TEXT.encode())[:-4]), "c.txt.gz: cannot read"),
    (lambda d: (d / "c.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n'), r"c.jsonl:2: bad jsonl line"),
    (lambda d: (d / "c.jsonl").write_text('{"text": "ok"}\n\n{"body": "x"}\n'), r"c.jsonl:3: bad jsonl line \(no 'text' field\)"),
    (lambda d: (d / "c.jsonl").write_text('{"text": 7}\n'), r"c.jsonl:1: bad jsonl line \('text' is int"),
])
def test_bad_input_is_one_error(tmp_path, make, message):
    src = tmp_path / "in"
    src.mkdir()
    make(src)
    with pytest.raises(D.DataError, match=message) as e:
        P.prepare(src, tmp_path / "out", "gpt2")
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]        # no output, no leftovers


def test_folder_without_matching_files(tmp_path):
    (tmp_path / "a.py").write_text("x = 1")
    with pytest.raises(D.DataError, match=r"folder holds no .txt/.md/.jsonl\(.gz\) files"):
        P.prepare(tmp_path, tmp_path / "out", "byte")
    with pytest.raises(D.DataError, match=r"folder holds no \*.rst files"):
        P.prepare(tmp_path, tmp_path / "out", "byte", glob="*.rst")


def test_unreadable_file(tmp_path, monkeypatch):
    import builtins
    (tmp_path / "c.txt").write_text(TEXT)
    real_open = builtins.open

    def guarded(path, *a, **k):               # root reads anything; refuse the way chmod 000 would
        if str(path).endswith("c.txt"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)
    monkeypatch.setattr(builtins, "open", guarded)
    with pytest.raises(D.DataError, match=r"c.txt: cannot read \(Permission denied\)"):
        P.prepare(tmp_path / "c.txt", tmp_path / "out", "byte")


def test_skip_bad_lines_counts_them(tmp_path):
    lines = ['{"text": "good %d"}' % i for i in range(5)] + ["not json", '{"title": "no text"}']
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    out = P.prepare(tmp_path / "c.jsonl", tmp_path / "p", "byte", skip_bad_lines=True)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["skipped_lines"] == 2 and meta["documents"] == 5


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, float("nan")])
def test_val_fraction_outside_0_1(tmp_path, fraction):
    (tmp_path / "c.txt").write_text(TEXT)
    with pytest.raises(D.DataError, match="--val-fraction"):
        P.prepare(tmp_path / "c.txt", tmp_path / "p", "byte", val_fraction=fraction)


def test_empty_data_argument():
    with pytest.raises(D.DataError, match="--data is empty"):
        P.resolve("", "byte")


def test_disk_full_keeps_the_previous_corpus(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text(TEXT)
    (tmp_path / "b.txt").write_text(TEXT * 3)
    out = P.prepare(tmp_path / "a.txt", tmp_path / "p", "byte")
    fingerprint = D.TokenData(out).fingerprint
    real = P._write_tokens

    def fills_the_disk(pieces, tok, files_out, *args):
        files_out["train"].write(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(P, "_write_tokens", fills_the_disk)
    with pytest.raises(WriteError, match="No space left on device"):
        P.prepare(tmp_path / "b.txt", out, "byte", force=True)
    monkeypatch.setattr(P, "_write_tokens", real)
    assert D.TokenData(out).fingerprint == fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "p"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MB filesystem (tmpfs), where the machine lets us mount one (root)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "--lazy", str(mnt)], check=True)


def test_real_full_disk_keeps_the_previous_corpus(tmp_path, tiny_disk):
    (tmp_path / "small.txt").write_text(TEXT)                            # ~4 KB of tokens
    (tmp_path / "big.txt").write_text(TEXT * 300)                        # ~1.2 MB: does not fit
    out = P.prepare(tmp_path / "small.txt", tiny_disk / "p", "byte")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(WriteError, match="No space left on device"):
        P.prepare(tmp_path / "big.txt", out, "byte", force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tiny_disk.iterdir()] == ["p"]               # no staging folder left


# ----------------------------------------------------------------------------- interruption, through the command line

# What `python prepare.py` runs, as `python -c` code (the test then patches prepare first).
PREPARE_CLI = "from harness import cli; sys.exit(cli.run(prepare.main, sys.argv[1:]))"


def slowed(entry: str) -> str:
    """`python -c` code that runs `entry` (e.g. PREPARE_CLI) with every tokenizing
    batch slowed to a second: a test that interrupts a preparation then always finds it in the
    middle of its work, however fast the machine (3 MB alone can take 0.1 s)."""
    return ("import sys, time, prepare\n"
            "fast = prepare._encode_batch\n"
            "def slow(texts, dtype):\n"
            "    time.sleep(1)\n"
            "    return fast(texts, dtype)\n"
            "prepare._encode_batch = slow\n" + entry + "\n")


def start_preparation(tmp_path, *extra, entry=PREPARE_CLI, out="out"):
    """prepare.py's command line on ~3 MB (3 slowed batches), in its own process group, once it
    has written some. `entry` may be another program that prepares tmp_path/c.txt into `out`."""
    src = tmp_path / "c.txt"
    src.write_text(TEXT * 600)
    args = ["--input", str(src), "--out", str(tmp_path / "out")] if entry == PREPARE_CLI else []
    cmd = [sys.executable, "-c", slowed(entry), *args, *extra]
    # SIGINT back to its default first: a shell starts background jobs with it ignored, and
    # Python then never raises KeyboardInterrupt (a CI runner may do that to this test).
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not any(p.stat().st_size for p in tmp_path.glob(f".{out}.partial-*/*.bin.tmp*")):   # written some
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    return proc


def running(group: int) -> list:
    """The pids of a process group that still run (a zombie has ended: it only awaits its reaper)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue                          # ended while we looked
        if int(pgrp) == group and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


def gone(group: int) -> list:
    """running(group) once it is empty, or after 15 s (a worker dies within a second of its parent)."""
    deadline = time.time() + 15
    while running(group) and time.time() < deadline:
        time.sleep(0.05)
    return running(group)


@pytest.fixture
def groups():
    """Process groups a test starts; whatever of them is left at its end is killed, pass or fail."""
    started = []
    yield started
    for group in started:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_killed_preparation_leaves_no_valid_looking_output(tmp_path):
    proc = start_preparation(tmp_path, "--workers", "1")
    proc.kill()                                                          # SIGKILL: no cleanup at all
    proc.wait()
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*/meta.json"))
    with pytest.raises(D.DataError, match="no meta.json"):
        D.TokenData(tmp_path / "out")
    P.prepare(tmp_path / "c.txt", tmp_path / "out", "byte")             # a new run clears the debris
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "out"]


# train.py preparing its --data on first use, stopped the same way
TRAIN_CLI = "import train; sys.exit(train.main(sys.argv[1:]))"


@pytest.mark.parametrize("program", ["prepare.py", "train.py"])
def test_killed_preparation_leaves_no_worker_behind(tmp_path, groups, program):
    if program == "prepare.py":
        proc = start_preparation(tmp_path, "--workers", "2")
    else:
        proc = start_preparation(tmp_path, "--data", str(tmp_path / "c.txt"), "--out", str(tmp_path / "run"),
                                 entry=TRAIN_CLI, out="c.txt-byte")
    groups.append(proc.pid)
    assert len(running(proc.pid)) >= 3                                   # it and its 2 workers
    proc.kill()                                                          # SIGKILL: it can clean nothing up
    proc.wait()
    assert gone(proc.pid) == []                                          # its workers died with it


def test_sigterm_stops_the_workers_and_removes_the_partial_folder(tmp_path, groups):
    proc = start_preparation(tmp_path, "--workers", "2")
    groups.append(proc.pid)
    proc.terminate()                                                     # the parent only, as `kill PID`
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.strip().splitlines() == ["error: stopped by SIGTERM"]
    assert gone(proc.pid) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


def test_workers_that_cannot_start_are_one_line_not_a_hang(tmp_path, groups):
    """A process limit (ulimit -u): the OS refuses a fork. Root is exempt from that limit, so the
    second fork is made to fail the way the kernel fails it."""
    src = tmp_path / "c.txt"
    src.write_text(TEXT * 50)
    refuse = ("import errno, os\n"
              "real_fork, forks = os.fork, []\n"
              "def fork():\n"
              "    forks.append(1)\n"
              "    if len(forks) > 1:\n"
              "        raise BlockingIOError(errno.EAGAIN, 'Resource temporarily unavailable')\n"
              "    return real_fork()\n"
              "os.fork = fork\n")
    proc = subprocess.Popen([sys.executable, "-c", "import sys, prepare\n" + refuse + PREPARE_CLI, "--input", str(src),
                             "--out", str(tmp_path / "out"), "--workers", "3"], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    groups.append(proc.pid)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err.strip().splitlines() == ["warning: cannot start 3 tokenizer workers (Resource temporarily "
                                        "unavailable); tokenizing in this process instead (slower)"]
    assert "MB/s, 1 worker) ->" in out, out         # the summary counts the process that did tokenize
    assert bytes(all_tokens(tmp_path / "out")) == (TEXT * 50).encode()
    assert gone(proc.pid) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "out"]


def test_two_preparations_of_one_out_take_turns(tmp_path, groups, capsys):
    proc = start_preparation(tmp_path, "--workers", "1")                 # holds out for a few seconds
    groups.append(proc.pid)
    (tmp_path / "other.txt").write_text(TEXT.upper())
    with pytest.raises(D.DataError, match="holds a corpus prepared from other inputs.*--force replaces it"):
        P.prepare(tmp_path / "other.txt", tmp_path / "out", "byte")      # waits, then sees the first one's
    assert "waiting for another preparation of" in capsys.readouterr().err
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert bytes(all_tokens(tmp_path / "out")) == (TEXT * 600).encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "other.txt", "out"]


def test_resolve_waits_for_the_same_preparation_in_progress(tmp_path, groups, monkeypatch):
    """Two train.py runs started together on a new corpus: one prepares it, the other waits."""
    proc = start_preparation(tmp_path, str(tmp_path / "c.txt"), entry="prepare.resolve(sys.argv[1], 'byte')",
                             out="c.txt-byte")
    groups.append(proc.pid)
    written, write = [], P._write_tokens
    monkeypatch.setattr(P, "_write_tokens", lambda *a: written.append(1) or write(*a))
    folder = P.resolve(str(tmp_path / "c.txt"), "byte")
    assert proc.wait(timeout=60) == 0 and written == []                 # up to date once it could look
    assert bytes(all_tokens(folder)) == (TEXT * 600).encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "c.txt-byte"]


def test_ctrl_c_is_one_line_exit_130_and_no_output(tmp_path):
    proc = start_preparation(tmp_path, "--workers", "2")
    os.killpg(proc.pid, signal.SIGINT)                                   # as the terminal does: every process
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines() == [f"error: interrupted; nothing was written to {tmp_path / 'out'}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


def dies(texts, dtype):
    os._exit(9)                               # as a worker the OS kills for memory


def test_a_dead_worker_is_one_error_not_a_hang(tmp_path, monkeypatch):
    (tmp_path / "c.txt").write_text(TEXT * 50)
    monkeypatch.setattr(P, "_encode_batch", dies)
    with pytest.raises(D.DataError, match="a tokenizing worker died"):
        P.prepare(tmp_path / "c.txt", tmp_path / "out", "byte", workers=2, batch_bytes=1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


def test_command_line_errors_are_one_line(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "prepare.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    r = run("--input", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.txt'}: no such file or folder"]
    (tmp_path / "c.txt").write_text(TEXT)
    r = run("--input", str(tmp_path / "c.txt"), "--out", str(tmp_path / "o"), "--val-fraction", "1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--val-fraction" in r.stderr
    r = run("--input", str(tmp_path / "c.txt"), "--out", str(tmp_path / "o"), "--workers", "0")
    assert r.returncode == 2 and r.stderr.strip() == "error: --workers 0: must be at least 1"


def test_bench_prepare_prints_a_row_per_worker_count(tmp_path):
    """bench.py prepare end to end on a tiny built corpus (its numbers are not checked)."""
    out = tmp_path / "t.md"
    r = subprocess.run([sys.executable, "bench.py", "prepare", "--gb", "0.001", "--workers", "1,2",
                        "--tokenizer", "byte", "--tmp", str(tmp_path), "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [line.split("|") for line in out.read_text().splitlines()[2:]]
    assert [row[3].strip() for row in rows] == ["1", "2"] and all(float(row[2]) >= 1 for row in rows)
    assert [p.name for p in tmp_path.iterdir()] == ["t.md"]             # the built corpus is deleted
