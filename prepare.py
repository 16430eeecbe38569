"""Text -> train.bin, val.bin and meta.json: the token files data.TokenData reads.

    python prepare.py --input my_corpus/ --out data/mine --tokenizer gpt2     # --workers, --glob, ...
    python prepare.py --input my_corpus/ --out data/neox --tokenizer pythia-70m/   # its tokenizer.json

Preparation streams: documents are read lazily, tokenized in batches by worker processes
and appended to the output as they come, so memory is bounded by the batch size, not the
corpus. The output folder appears (by a rename) only when it is complete.

train.py's --data goes through resolve(): a built-in corpus name or a text file is prepared
on first use (and again when its inputs change); a prepared folder is used as it is.
"""
import harness.boot  # first: a Ctrl-C during the imports below is one line
import array
import codecs
import ctypes
import fcntl
import gzip
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import sys
import sysconfig
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import numpy as np

from data import DataError, TokenData, token_dtype
from harness import cli
from harness.files import atomic_write
from harness.tokenizer import get_tokenizer, names, tokenizer_flag

ROOT = Path(__file__).resolve().parent
DATA_DIR = ROOT / "data"
# shakespeare: data/shakespeare.txt.gz, public domain (see data/README.md); python-stdlib: this Python's .py files
BUILTIN_CORPORA = ("shakespeare", "python-stdlib")
FORMAT = 2                           # meta.json layout; folders of an older format are re-prepared
# Document starts (train.docs.npy, val.docs.npy) came after format 2 and change no token, so they
# are not a new format (that would change every fingerprint, and refuse every --resume): they
# are part of the source key instead, so a folder prepared before them is prepared again.
DOC_INDEX = 1
PLAY_BREAK = b"\n\n\n"              # in shakespeare.txt.gz only between plays (data/README.md)


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


def source_key(files, tokenizer: str, options: dict, doc_break: bytes | None = None) -> str:
    """Identity of what a preparation would read: resolved paths, sizes, mtimes + settings.
    Cheap (no reading), so resolve() can tell at every start whether a cache is stale."""
    h = hashlib.sha256(json.dumps([FORMAT, DOC_INDEX, tokenizer, options]).encode())
    if doc_break:
        h.update(doc_break)
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
    skipped_files: int = 0           # text files skipped for invalid UTF-8 (--bad-utf8 skip)
    bad_utf8_documents: int = 0      # documents that held invalid UTF-8, whatever was done with them
    bad_utf8_replaced: int = 0       # invalid sequences replaced by U+FFFD (--bad-utf8 replace)
    tokens: dict = field(default_factory=lambda: {"train": 0, "val": 0})
    workers: int = 0                 # the processes that tokenized: 1 after a pool that could not start


@dataclass
class Piece:
    """Part of a document, small enough for one worker task. `first` marks a document start."""
    data: object                     # str for text tokenizers, bytes for the byte tokenizer
    first: bool
    split: str = "train"
    joined: bool = False             # a document start inside a file (doc_break): no separator added


# GPT-2's pre-tokenizer never joins a non-space to the whitespace after it, nor " " or "\n" to
# the non-space before it, so cutting a text before a " " or "\n" that sits between two
# non-spaces gives the same tokens as encoding it whole (tested against the one-shot encoding).
_LAST_SAFE_CUT = re.compile(r"(?s:.*)\S(?=[ \n]\S)")


# What a text tokenizer does with bytes that are not UTF-8 (--bad-utf8). The byte tokenizer
# never decodes a text file (it keeps raw bytes); jsonl is decoded for every tokenizer.
BAD_UTF8 = {"replace": "replace each invalid sequence by U+FFFD, as bytes.decode(errors='replace')",
            "skip": "drop the document (a text file, or a jsonl line)",
            "stop": "stop with an error naming the file and byte"}


class _Replaced:
    """A codecs error handler: exactly errors="replace" (the decoder hands it the same ranges),
    but counted, so a preparation can say how much it replaced."""
    count = 0

    @classmethod
    def handler(cls, e: UnicodeDecodeError):
        cls.count += 1
        return "\ufffd", e.end


codecs.register_error("prepare.replace", _Replaced.handler)


def _decode_errors(bad_utf8: str) -> str:
    # skip: the document was checked whole before any of it was used, so what is decoded is valid
    return "prepare.replace" if bad_utf8 == "replace" else "strict"


def _not_utf8(where: str, at: int) -> DataError:
    return DataError(f"{where}: not valid UTF-8 at byte {at} (--bad-utf8 replace or skip goes on, "
                     f"counted; --tokenizer byte keeps raw bytes)")


def _text_pieces(path: Path, blocks, bad_utf8: str, stats: Stats):
    """A text file as str pieces of about BLOCK characters, cut only where the tokens do not change.
    Invalid UTF-8 is replaced (counted) or, with --bad-utf8 stop, an error naming the byte offset."""
    decoder = codecs.getincrementaldecoder("utf-8")(_decode_errors(bad_utf8))
    carry, offset, replaced = "", 0, _Replaced.count
    for block in blocks:
        try:
            carry += decoder.decode(block)
        except UnicodeDecodeError as e:
            raise _not_utf8(str(path), offset + e.start) from None
        offset += len(block)
        m = _LAST_SAFE_CUT.match(carry) if len(carry) >= BLOCK else None
        cut = m.end() if m else (len(carry) if len(carry) > MAX_PIECE else 0)
        if cut:
            yield carry[:cut]
            carry = carry[cut:]
    try:
        carry += decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise _not_utf8(f"{path} (the file ends inside a character)", offset) from None
    if _Replaced.count > replaced:
        stats.bad_utf8_documents += 1
        stats.bad_utf8_replaced += _Replaced.count - replaced
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


def _jsonl_documents(path: Path, blocks, text_field: str, skip_bad: bool, stats: Stats, as_bytes: bool,
                     bad_utf8: str):
    """One document per line: the string under text_field. A bad line names file and line."""
    for lineno, line in _lines(blocks):
        if not line.strip():
            continue
        replaced = _Replaced.count
        try:
            decoded = line.decode("utf-8", _decode_errors(bad_utf8))
        except UnicodeDecodeError as e:
            if bad_utf8 == "stop":
                raise _not_utf8(f"{path}:{lineno}", e.start) from None
            stats.bad_utf8_documents += 1
            continue
        if _Replaced.count > replaced:
            stats.bad_utf8_documents += 1
            stats.bad_utf8_replaced += _Replaced.count - replaced
        try:
            # json.loads of the bytes (as before --bad-utf8) accepted a UTF-8 byte order mark
            text = json.loads(decoded.removeprefix("\ufeff") if lineno == 1 else decoded)[text_field]
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
                bad_utf8="replace", doc_break: bytes | None = None):
    """Every document of every file, in order, as Pieces. Documents: a whole text file, or one
    jsonl line; with doc_break, a text file is several, one after each occurrence of it.
    Empty documents are dropped. bad_utf8: see BAD_UTF8 (a text file to skip is
    read once more first, whole: its first pieces must not have been tokenized already)."""
    for path in files:
        stats.files += 1
        if _is_jsonl(path):
            for doc in _jsonl_documents(path, _blocks(path, content_hash), text_field, skip_bad,
                                        stats, tok.takes_bytes, bad_utf8):
                stats.documents += 1
                yield Piece(doc, True)
            continue
        if bad_utf8 == "skip" and not tok.takes_bytes and not _is_utf8(path):
            stats.skipped_files += 1
            stats.bad_utf8_documents += 1
            continue
        blocks = _counted(path, _blocks(path, content_hash), stats)
        for n, doc in itertools.groupby(_split_at(blocks, doc_break), key=lambda part: part[0]):
            doc = (block for _, block in doc)
            pieces = doc if tok.takes_bytes else _text_pieces(path, doc, bad_utf8, stats)
            first = True
            for piece in pieces:
                if first:
                    stats.documents += 1
                yield Piece(piece, first, joined=n > 0)
                first = False


def _split_at(blocks, mark: bytes | None):
    """(document number, bytes) of a file read in blocks: a new document after each `mark`. The
    mark ends its document, so the pieces hold the file's bytes unchanged: the byte tokenizer's
    tokens are the file's; GPT-2's too for PLAY_BREAK where, as in Shakespeare's file, no longer
    run of newlines holds it (tested). UTF-8-safe for an ASCII mark."""
    if not mark:
        yield from ((0, block) for block in blocks)
        return
    n, carry = 0, b""
    for block in blocks:
        *docs, carry = (carry + block).split(mark)
        for doc in docs:
            yield n, doc + mark
            n += 1
        keep = len(carry) - len(mark) + 1      # a mark may begin in this block's last bytes
        if keep > 0:
            yield n, carry[:keep]
            carry = carry[keep:]
    if carry:
        yield n, carry


def _counted(path, blocks, stats: Stats):
    for block in blocks:
        if b"\0" in block:     # text has no NUL byte; token ids (uint16: every id < 256 has one) have many
            raise DataError(f"{path}: holds NUL bytes, so it is binary data (token ids? a prepared train.bin "
                            "renamed?), not text; give text files, or --data the prepared folder itself")
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


def _worker_init(tok, parent: int):
    global _worker_tok
    _worker_tok = tok
    # Ctrl-C reaches every process of the terminal's group; the parent alone handles it
    # (cleans up, prints one line), so workers must not die printing a traceback. A SIGTERM
    # ends a worker silently (the parent's handler, inherited by fork, would print a line).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with(parent)


PR_SET_PDEATHSIG = 1                 # <linux/prctl.h>


def _die_with(parent: int):
    """End this worker when the process that started it dies, however it dies (kill -9 too): a
    worker waits for tasks forever, and one orphaned holds its memory (~190 MB under train.py)
    until someone finds it. Linux: the kernel sends SIGKILL (PR_SET_PDEATHSIG). Elsewhere a
    thread checks once a second whether the parent is still ours (an orphan is re-parented)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = sys.platform.startswith("linux") and libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        ok = False
    if not ok:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:       # it died before we asked to be told: nobody will send the signal
        os._exit(1)


def _watch_parent(parent: int):
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


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


def tokenized(pieces, tok, dtype, workers: int, batch_bytes: int, stats=None):
    """(piece, ids) in the input's order. With workers > 1 a process pool encodes batches;
    at most 2 batches per worker are in flight, which is what bounds memory."""
    if workers == 1:
        global _worker_tok
        _worker_tok = tok
        for batch in _batches(pieces, batch_bytes):
            yield from zip(batch, _encode_batch([p.data for p in batch], dtype))
        return
    pool = None
    try:
        pool = _start_pool(tok, workers)
        if pool is None:
            if stats is not None:
                stats.workers = 1
            yield from tokenized(pieces, tok, dtype, 1, batch_bytes)
            return
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
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _start_pool(tok, workers: int):
    """`workers` tokenizing processes, all started now; None (and one line) when the OS refuses
    to start them (a process limit: ulimit -u), and the caller tokenizes in this process."""
    before = set(multiprocessing.active_children())
    # concurrent.futures, not multiprocessing.Pool: when the OS kills a worker (out of memory)
    # the pool breaks and says so, where Pool would wait forever for the lost batch.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_worker_init, initargs=(tok, os.getpid()))
    try:
        pool.submit(int).result()    # a fork pool starts every worker at its first task
        return pool
    except BrokenProcessPool:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    except OSError as e:
        # The workers already started wait for tasks that never come, and Python waits for
        # them at exit: without this the program would never end.
        for worker in set(multiprocessing.active_children()) - before:
            worker.kill()
            worker.join()
        pool.shutdown(wait=True, cancel_futures=True)
        print(f"warning: cannot start {workers} tokenizer workers ({e.strerror or e}); "
              f"tokenizing in this process instead (slower)",
              file=sys.stderr, flush=True)
        return None


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


@contextmanager
def writer_lock(out_dir: Path):
    """Held by whoever writes out_dir, from checking it to putting the new folder in place: an
    flock on `.NAME.lock` beside it (the kernel drops it when its holder dies, even by kill -9).
    A second writer waits, saying so, and then sees the first one's result: the same inputs are
    up to date, other inputs are refused without --force. Waiting rather than refusing, because
    two train.py runs started together on a new corpus should both train on one preparation.
    The holder removes the file as it leaves, so a waiter that then locks a removed file
    starts over."""
    path = out_dir.with_name(f".{out_dir.name}.lock")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                print(f"waiting for another preparation of {out_dir} (pid {holder}) to finish",
                      file=sys.stderr, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def inside_prepared(path: Path):
    """The prepared folder that `path` is in (a token file, its meta.json, anything put there), or None."""
    parent = path.absolute().parent
    return parent if (parent / "meta.json").is_file() else None


def check_output(out_dir: Path, key: str, force: bool) -> bool:
    """True if out_dir already holds this very preparation. Refuses a folder holding a corpus
    prepared from other inputs (unless force) and, always, a folder holding anything else or
    inside a prepared folder (a prepared folder holds its three files and nothing more)."""
    if (owner := inside_prepared(out_dir)) is not None:
        raise DataError(f"--out {out_dir} is inside the prepared folder {owner}; choose a folder outside it")
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise DataError(f"--out {out_dir} is a file, not a folder")
    names = {p.name for p in out_dir.iterdir()}
    if not names:
        return False
    if not names <= {"meta.json", "train.bin", "val.bin", "train.docs.npy", "val.docs.npy"}:
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


def _split_tail(train_f, val_f, dtype, val_fraction: float, stats: Stats, starts: dict):
    """Move the last val_fraction of the token stream from train to val (a corpus of one or a
    few documents, which a hash cannot split fairly), a block at a time; the document starts
    with it (val's first token starts a document: nothing before it is in its split)."""
    n = stats.tokens["train"]
    cut = n - int(n * val_fraction)
    train = np.asarray(starts["train"], dtype=np.int64)
    starts["val"] = np.unique(np.concatenate([[0], train[train >= cut] - cut]))
    starts["train"] = train[train < cut]
    train_f.flush()
    train_f.seek(cut * dtype.itemsize)
    while block := train_f.read(BLOCK):
        val_f.write(block)
    train_f.truncate(cut * dtype.itemsize)
    stats.tokens = {"train": cut, "val": n - cut}


def _write_tokens(pieces, tok, files_out, stats: Stats, progress: Progress, workers, batch_bytes, starts):
    """Append each piece's ids to its split's file; the separator goes before every document
    but the first of its split (and one of a file's own documents: doc_break). Each document's
    first token's offset is appended to starts[split]: recorded, since no token marks it (the
    byte tokenizer's separator, a blank line, is in any text)."""
    dtype = token_dtype(tok.vocab_size)
    separator = np.asarray(tok.separator, dtype=dtype)
    # closing(): on an error here (a full disk) the worker pool stops now, not when the
    # traceback that still references this generator is finally dropped.
    stats.workers = workers
    with closing(tokenized(pieces, tok, dtype, workers, batch_bytes, stats)) as stream:
        for piece, ids in stream:
            f = files_out[piece.split]
            if piece.first and stats.tokens[piece.split] and not piece.joined:
                f.write(separator.tobytes())
                stats.tokens[piece.split] += len(separator)
            if piece.first:
                starts[piece.split].append(stats.tokens[piece.split])
            f.write(ids.tobytes())
            stats.tokens[piece.split] += len(ids)
            progress.update(stats)


def prepare(src, out_dir, tokenizer="byte", val_fraction: float = 0.1, *, workers: int | None = None,
            glob: str | None = None, text_field: str = "text", skip_bad_lines: bool = False,
            bad_utf8: str = "replace", force: bool = False, batch_bytes: int = BLOCK,
            progress: bool = False, files=None, source: str | None = None,
            extra_meta: dict | None = None, keep: str | None = None, doc_break: bytes | None = None) -> Path:
    """Tokenize `src` (a file or folder; or `files` for a built-in corpus) into
    out_dir/{train,val}.bin + meta.json, streaming. Validation: whole documents chosen by hash
    when there are many, else the last val_fraction of the tokens, so no window spans both.
    `tokenizer` is a name or a tokenizer object (tests pass stubs). keep: the fingerprint of the
    tokens out_dir holds for a resumed run; other tokens are refused, out_dir kept. doc_break: a
    byte string that ends a document inside a text file (Shakespeare's plays). Returns out_dir."""
    if not 0 < val_fraction < 1:
        raise DataError(f"--val-fraction {val_fraction}: must be between 0 and 1 (exclusive)")
    workers = available_cpus() if workers is None else workers
    if workers < 1:
        raise DataError(f"--workers {workers}: must be at least 1")
    if bad_utf8 not in BAD_UTF8:
        raise DataError(f"--bad-utf8 {bad_utf8}: choose one of {', '.join(BAD_UTF8)}")
    out_dir = Path(out_dir)
    src = Path(src) if src is not None else None
    files = files if files is not None else list_files(src, glob)
    tok = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    options = settings(tok, val_fraction, glob, text_field, skip_bad_lines, bad_utf8)
    key = source_key(files, tok.name, options, doc_break)
    with ExitStack() as held:
        try:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            held.enter_context(writer_lock(out_dir))
        except OSError as e:
            raise DataError(f"{out_dir}: cannot write the prepared data ({e.strerror or e})") from None
        if check_output(out_dir, key, force):
            if progress:
                print(f"{out_dir} is up to date: prepared from these very inputs and settings")
            return out_dir
        stats, seconds = _write_folder(out_dir, src, files, tok, options, key, workers, batch_bytes,
                                       progress, source, extra_meta, keep, doc_break)
    if progress:
        print(f"prepared {stats.documents:,} documents ({stats.bytes / 1e6:,.1f} MB) -> "
              f"{stats.tokens['train']:,} train + {stats.tokens['val']:,} val tokens in "
              f"{seconds:.1f}s ({stats.bytes / 1e6 / max(seconds, 1e-9):.1f} MB/s, "
              f"{stats.workers} worker{'s' * (stats.workers > 1)}) -> {out_dir}")
        if stats.bad_utf8_documents:
            print(f"warning: {bad_utf8_summary(stats.bad_utf8_documents, stats.bad_utf8_replaced, bad_utf8)}",
                  file=sys.stderr, flush=True)
    return out_dir


def settings(tok, val_fraction=0.1, glob=None, text_field="text", skip_bad_lines=False,
             bad_utf8="replace") -> dict:
    """The settings that change a preparation's tokens: part of its source key and meta.json."""
    return {"val_fraction": val_fraction, "glob": glob, "text_field": text_field,
            "skip_bad_lines": skip_bad_lines, "vocab_size": tok.vocab_size, "bad_utf8": bad_utf8}


def _write_folder(out_dir: Path, src, files, tok, options: dict, key: str, workers: int,
                  batch_bytes: int, progress: bool, source, extra_meta, keep=None, doc_break=None):
    """The preparation itself, into a staging folder renamed to out_dir when complete. Every
    way out (an error; Ctrl-C and SIGTERM, which raise here) stops the workers and removes the
    staging folder. -> (Stats, seconds)."""
    val_fraction = options["val_fraction"]
    by_document = count_documents(files, min_documents_for_hash_split(val_fraction)) >= \
        min_documents_for_hash_split(val_fraction)
    stats, content, bar = Stats(), hashlib.sha256(), Progress(progress)
    pieces = read_pieces(files, tok, stats, content, text_field=options["text_field"],
                         skip_bad=options["skip_bad_lines"], bad_utf8=options["bad_utf8"], doc_break=doc_break)
    if by_document:
        pieces = _assign_splits(pieces, val_fraction)
    dtype = token_dtype(tok.vocab_size)
    _remove_stale_staging(out_dir)
    stage = _staging(out_dir)
    try:
        stage.mkdir()
        with ExitStack() as stack:
            files_out = {split: stack.enter_context(atomic_write(stage / f"{split}.bin", "w+b"))
                         for split in ("train", "val")}
            starts = {"train": array.array("q"), "val": array.array("q")}    # 8 bytes a document
            _write_tokens(pieces, tok, files_out, stats, bar, workers, batch_bytes, starts)
            bar.close()
            if not by_document:
                _split_tail(files_out["train"], files_out["val"], dtype, val_fraction, stats, starts)
            _check_splits(stats, src or source, by_document)
        for split, offsets in starts.items():
            np.save(stage / f"{split}.docs.npy", np.asarray(offsets, dtype=np.int64))
        meta = _meta(tok, dtype, stats, key, content.hexdigest(), options, by_document,
                     source or str(src), {**(extra_meta or {}), "train_docs": len(starts["train"]),
                                          "val_docs": len(starts["val"]), "doc_index": DOC_INDEX,
                                          **({"doc_break": doc_break.decode()} if doc_break else {})})
        if keep and meta["fingerprint"] != keep:
            raise DataError(f"--data {src or source}: the data changed since the checkpoint (its tokens are now "
                            f"{meta['fingerprint']}, the run's {keep}); {out_dir} still holds the run's tokens: "
                            f"--resume with --data {out_dir}")
        if getattr(tok, "file", None):     # a tokenizer.json: the folder keeps the one its ids mean
            shutil.copyfile(tok.file, stage / "tokenizer.json")
        _write_meta(stage / "meta.json", meta)      # last: its presence marks a complete preparation
        _replace_folder(stage, out_dir)
    except OSError as e:
        raise DataError(f"{out_dir}: cannot write the prepared data ({e.strerror or e})") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return stats, bar.seconds()


def bad_utf8_summary(documents: int, replaced: int, choice: str) -> str:
    what = (f"{replaced:,} invalid sequences replaced by U+FFFD" if choice == "replace"
            else "skipped")
    return f"{documents:,} document{'s' * (documents != 1)} held invalid UTF-8: {what} (--bad-utf8 {choice})"


def _assign_splits(pieces, val_fraction: float):
    split = "train"
    for piece in pieces:
        if piece.first and not piece.joined:    # a file's own documents stay together
            split = document_split(piece, val_fraction)
        piece.split = split
        yield piece


def _check_splits(stats: Stats, src, by_document: bool):
    if stats.documents == 0 and stats.skipped_files:
        raise DataError(f"{src}: no text left: {stats.skipped_files:,} file(s) skipped for invalid UTF-8 "
                        "(--bad-utf8 skip); --bad-utf8 replace keeps them, --tokenizer byte keeps their raw bytes")
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
    named = {k: v for k, v in options.items() if k != "bad_utf8"}
    # --bad-utf8 names the data only where it changed tokens of hashed content (replaced bytes, a
    # skipped jsonl line; a skipped text file is not in content_sha256 at all): otherwise every
    # choice gives the same tokens, and data prepared before the option keeps its fingerprint.
    if stats.bad_utf8_documents > stats.skipped_files:
        named["bad_utf8"] = options["bad_utf8"]
    fingerprint = hashlib.sha256(json.dumps(
        [FORMAT, content_sha256, tok.name, tok.vocab_size, named, by_document]).encode()).hexdigest()[:16]
    return {"format": FORMAT, "fingerprint": fingerprint, "source": source, "source_key": key,
            "content_sha256": content_sha256, "tokenizer": tok.name, "vocab_size": tok.vocab_size,
            **({"tokenizer_sha256": tok.identity} if hasattr(tok, "identity") else {}),
            "dtype": dtype.name, "files": stats.files, "documents": stats.documents, "bytes": stats.bytes,
            "train_tokens": stats.tokens["train"], "val_tokens": stats.tokens["val"],
            "val_split": "by document hash" if by_document else "tail",
            "separator": list(tok.separator), "skipped_lines": stats.skipped_lines,
            "skipped_files": stats.skipped_files, "bad_utf8_documents": stats.bad_utf8_documents,
            "bad_utf8_replaced": stats.bad_utf8_replaced, **options, **(extra or {})}


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
        return [DATA_DIR / "shakespeare.txt.gz"], {"documents_are": "plays"}
    version = sys.version.split()[0]
    return stdlib_files(), {"python_version": version, "documents_are": "files"}


def resolve(data: str, tokenizer: str, keep: str | None = None, **options) -> Path:
    """--data to a prepared folder, preparing on first use and again whenever the inputs change:
    'shakespeare' | 'python-stdlib' (built in) | a prepared folder | a text file or folder.
    A text file's cache is the folder beside it named FILE-TOKENIZER (e.g. play.v2.txt-gpt2;
    a tokenizer.json gives FILE-hf-<its hash>). keep: train.py --resume's data fingerprint; a cache
    holding it is never prepared over (refused: the corpus changed), and a corpus not found is named."""
    if not data:
        raise DataError("--data is empty: give 'shakespeare', 'python-stdlib', a prepared folder or a text file")
    tok = get_tokenizer(tokenizer)     # its name, not a tokenizer.json's path, names the cache folder
    doc_break = PLAY_BREAK if data == "shakespeare" else None
    if data in BUILTIN_CORPORA:
        files, extra = builtin(data)
        out, src = DATA_DIR / f"{data}-{tok.name}", None
        # the standard library holds a few test files in other encodings on purpose
        options.setdefault("bad_utf8", "skip" if data == "python-stdlib" else "replace")
    else:
        src, extra = Path(data), None
        if (src / "meta.json").exists():
            return src
        if not src.exists() and keep:
            raise DataError(f"--data {data}: not found; if the corpus moved, --resume takes --data NEWPATH (the "
                            f"run continues if its tokens are the same: fingerprint {keep})")
        if not src.exists():
            raise DataError(f"--data {data}: not {' or '.join(map(repr, BUILTIN_CORPORA))}, "
                            f"a prepared folder, or a text file")
        _refuse_prepared_files(data, src)
        files, out = list_files(src, options.get("glob")), src.parent / f"{src.name}-{tok.name}"
    for name in names(tok):     # a folder prepared under a tokenizer.json's legacy name is still its data
        cached = out.with_name(out.name.removesuffix(tok.name) + name)
        if _prepared_key(cached) == source_key(files, name, settings(tok, **options), doc_break):
            return cached
    print(f"preparing {data} with the {tokenizer} tokenizer -> {out}", flush=True)
    keep = keep if _prepared_meta(out).get("fingerprint") == keep else None      # a resumed run's tokens
    return prepare(src, out, tok, files=files, source=data if src is None else None, force=True,
                   extra_meta=extra, progress=True, keep=keep, doc_break=doc_break, **options)


def _refuse_prepared_files(data: str, src: Path):
    """A prepared folder's files are token ids and its own bookkeeping, never text to prepare
    (nor a place for a cache folder): --data names the folder. Refused rather than taken to
    mean the folder, since `--data .../val.bin` may mean "train on val", which it would not."""
    if (folder := inside_prepared(src)) is not None:
        raise DataError(f"--data {data} is inside the prepared folder {folder}: pass the folder itself "
                        f"(--data {folder})")
    if src.is_file() and src.suffix == ".bin":
        raise DataError(f"--data {data}: a .bin file holds token ids, not text; pass the prepared "
                        f"folder that holds it with its meta.json")


def _prepared_key(out: Path):
    return _prepared_meta(out).get("source_key")


def _prepared_meta(out: Path) -> dict:
    try:
        meta = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


# ----------------------------------------------------------------------------- command line

def open_data(data: str, tokenizer: str) -> TokenData:
    """--data as a TokenData, prepared first if needed, refused if made with another tokenizer."""
    folder = resolve(data, tokenizer)
    tokens, tok = TokenData(folder), get_tokenizer(tokenizer)
    if tokens.tokenizer not in names(tok):
        want = tok.name
        named = "" if want == tokenizer else f" ({tokenizer})"
        raise DataError(f"{folder} was prepared with the {tokens.tokenizer} tokenizer, not {want}{named}")
    if tokens.vocab_size != tok.vocab_size:     # a hand-edited meta.json: the model is sized by it
        raise DataError(f"{folder}/meta.json: vocab_size {tokens.vocab_size} is not the {tok.name} tokenizer's "
                        f"{tok.vocab_size} (edited?); prepare the data again")
    return tokens


def main(argv=None) -> int:
    p = cli.OneLineParser(description="Tokenize text into train.bin/val.bin + meta.json, streaming.")
    p.add_argument("--input", required=True,
                   help="a text file or a folder (recursive): .txt/.md/.jsonl, each optionally .gz")
    p.add_argument("--out", required=True, help="output folder (created when complete)")
    p.add_argument("--tokenizer", default="byte", type=tokenizer_flag,
                   help="byte (default), gpt2, or a Hugging Face tokenizer.json or its folder (e.g. a released "
                        "Pythia's); a tokenizer.json is copied into --out and named by its hash in meta.json")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of documents (by hash; or of the tail, for few documents) kept for validation")
    p.add_argument("--workers", type=int, default=None, help="tokenizing processes (default: all cores)")
    p.add_argument("--glob", default=None, help="in a folder, read the files matching this instead, e.g. '*.py'")
    p.add_argument("--text-field", default="text", help="the field of each jsonl object holding its text")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip (and count) jsonl lines that are not JSON or lack the field, instead of stopping")
    p.add_argument("--bad-utf8", default="replace", choices=BAD_UTF8,
                   help="bytes that are not UTF-8 in a jsonl line, or in a text file for gpt2 (the byte "
                        "tokenizer keeps a text file's raw bytes); counted in meta.json. "
                        + "; ".join(f"{k}: {v}" for k, v in BAD_UTF8.items()))
    p.add_argument("--force", action="store_true", help="replace an --out holding a corpus from other inputs")
    p.add_argument("--batch-bytes", type=int, default=BLOCK, help="text per worker task (memory ~ 4 x workers x this)")
    args = p.parse_args(argv)
    if args.batch_bytes < 1:
        raise DataError(f"--batch-bytes {args.batch_bytes}: must be at least 1")
    # Ctrl-C gets its own line, which says what it means here: no --out was written.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        out = prepare(args.input, args.out, args.tokenizer, args.val_fraction, workers=args.workers,
                      glob=args.glob, text_field=args.text_field, skip_bad_lines=args.skip_bad_lines,
                      bad_utf8=args.bad_utf8, force=args.force, batch_bytes=args.batch_bytes, progress=True)
    except KeyboardInterrupt:
        print(f"error: interrupted; nothing was written to {args.out}", file=sys.stderr)
        return 130
    meta = json.loads((out / "meta.json").read_text())
    if meta["skipped_lines"]:
        print(f"warning: skipped {meta['skipped_lines']:,} bad jsonl lines", file=sys.stderr)
    print(f"tokenizer {meta['tokenizer']}, vocab {meta['vocab_size']:,}, {meta['dtype']} tokens; "
          f"everything else in {out / 'meta.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
