"""The training data: one long token stream, read as random windows at the stage's length.

GrowLength needs no special data pipeline. The corpus is one long token stream (train.bin,
val.bin: token ids back to back, documents joined by a separator), and a batch at stage length
T is just B random windows of T+1 tokens: the first T are the inputs, the last T the targets,
shifted by one. Changing T changes only the slice width, so every stage reads the same data.

    data = TokenData("data/shakespeare-byte")
    x, y = data.get_batch("train", batch_size=64, seq_len=128)       # (64, 128) each

Documents are joined back to back, so a window may span several; prepare.py records where
each starts (train.docs.npy, val.docs.npy), and `get_batch(..., docs=True)` also returns each
position's document start within its window, for attention that stays inside its document
(train.py --doc-mask).

prepare.py writes those files (text -> tokens, streaming). The byte tokenizer, the course's
default, is below; harness/tokenizer.py has the ones read from files (GPT-2's, any Hugging Face
tokenizer.json) and `get_tokenizer(name)`, shared by preparation, training and sampling.
"""
import hashlib
import json
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A missing, truncated or mismatched data file; the message is one line."""


class TokenData:
    """The prepared token files of one corpus, memory-mapped (nothing is read until sliced).
    `fingerprint` names the data (meta.json's; older folders: a hash of their meta.json)."""

    def __init__(self, folder):
        self.folder = folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            raise DataError(f"{folder}: no meta.json (run: python prepare.py --input TEXT --out {folder})")
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
        # Folders prepared before document starts were recorded have none: masking is refused.
        self.docs = ({split: self._open_docs(split) for split in self.splits}
                     if "train_docs" in self.meta else None)

    def _open_docs(self, split: str):
        path, n = self.folder / f"{split}.docs.npy", len(self.splits[split])
        try:
            starts = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read the document starts ({e}); prepare the data again") from None
        if (starts.dtype != np.int64 or starts.ndim != 1 or len(starts) != self.meta[f"{split}_docs"]
                or not len(starts) or starts[0] != 0 or starts[-1] >= n or np.any(np.diff(starts) <= 0)):
            raise DataError(f"{path}: not {self.meta[f'{split}_docs']} increasing int64 document starts "
                            f"from 0 within {n:,} tokens (truncated?); prepare the data again")
        return starts

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

    def check_windows(self, train_len: int, eval_len: int, docs: bool = False):
        """Up front, not at the first batch: a window is T+1 tokens, so the longest stage must fit
        the training split and the longest eval length the validation split; docs: document
        starts are needed (--doc-mask)."""
        if docs and self.docs is None:
            raise DataError(f"{self.folder} was prepared without document starts, which --doc-mask needs: "
                            f"prepare it again (python prepare.py ... --force, or delete it if --data prepared it)")
        for split, T, what in (("train", train_len, "stage length"), ("val", eval_len, "eval length")):
            n = len(self.splits[split])
            if n < T + 1:
                raise DataError(f"{self.folder}: the {split} split has {n:,} tokens, fewer than one window "
                                f"at {what} {T}; use a larger corpus or shorter lengths")

    def get_batch(self, split: str, batch_size: int, seq_len: int, generator=None, device="cpu", docs=False):
        """B random windows of seq_len+1 tokens -> x (B, T), y (B, T) int64, y shifted by one;
        docs: and each position's document start within its window, (B, T) int32 (doc_starts)."""
        ids = self.splits[split]
        if len(ids) < seq_len + 1:
            raise DataError(f"{split} split has {len(ids)} tokens, fewer than a window of {seq_len + 1}")
        import torch    # here, not at the top: preparing data needs no torch, and it takes seconds to import
        starts = torch.randint(len(ids) - seq_len, (batch_size,), generator=generator).tolist()
        return self._windows(ids, starts, seq_len, device, self.docs[split] if docs else None)

    def eval_windows(self, seq_len: int, n_tokens: int, batch_size: int, device="cpu", docs=False):
        """Fixed, evenly spaced validation windows covering ~n_tokens: the same windows in every
        run and at every eval, so curves compare across runs. Yields (x, y) batches (docs: and
        their document starts, as get_batch)."""
        ids = self.splits["val"]
        n = max(1, min(n_tokens // seq_len, (len(ids) - 1) // seq_len))
        if len(ids) < seq_len + 1:
            raise DataError(f"val split has {len(ids)} tokens, fewer than an eval window of {seq_len + 1}")
        starts = np.linspace(0, len(ids) - seq_len - 1, n).astype(np.int64).tolist()
        for i in range(0, n, batch_size):
            yield self._windows(ids, starts[i:i + batch_size], seq_len, device, self.docs["val"] if docs else None)

    @staticmethod
    def _windows(ids, starts, seq_len, device, doc_index=None):
        import torch
        buf = torch.from_numpy(np.stack([ids[s:s + seq_len + 1] for s in starts]).astype(np.int64))
        if device != "cpu":
            buf = buf.pin_memory().to(device, non_blocking=True)
        if doc_index is None:
            return buf[:, :-1], buf[:, 1:]
        return buf[:, :-1], buf[:, 1:], doc_starts(doc_index, starts, seq_len).to(device)


def doc_starts(doc_index, starts, seq_len: int):
    """For windows at `starts` (token offsets), the start of each input position's document,
    counted from the window's start, 0 where it began before the window -> (B, T) int32. A
    query at t may attend to keys doc_starts[t] .. t (model.attention)."""
    import torch
    w = np.asarray(starts, dtype=np.int64)[:, None]
    pos = w + np.arange(seq_len)                                    # (B, T) absolute positions
    first = np.asarray(doc_index)[np.searchsorted(doc_index, pos, side="right") - 1]
    return torch.from_numpy(np.maximum(first - w, 0).astype(np.int32))


# ----------------------------------------------------------------------------- tokenizers

class ByteTokenizer:
    """UTF-8 bytes as tokens: vocab 256, no training, no files. The CPU course default: a
    256-row head keeps the model's cost in the transformer, where sequence length matters.
    It takes raw bytes too, so text that is not UTF-8 is kept byte for byte, not replaced."""
    name, vocab_size = "byte", 256
    takes_bytes = True
    separator = (10, 10)             # "\n\n" between documents: a blank line, as in plain text

    def encode(self, text):
        return list(text if isinstance(text, bytes) else text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def token_dtype(vocab_size: int):
    """The smallest unsigned type that holds every id: uint16 up to 65,536 ids, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2 ** 16 else np.uint32)
