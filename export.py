"""Hugging Face in and out: a run as a GPT-NeoX model folder, and a local GPT-NeoX folder as our weights.

    python export.py runs/<timestamp> exported/        # --dtype bfloat16 | float16, --tokenizer MOVED.json

    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained("exported")                  # the run's tokenizer, byte runs too
    model = AutoModelForCausalLM.from_pretrained("exported", dtype="auto")
    out = model.generate(tok("ROMEO:", return_tensors="pt").input_ids, max_new_tokens=100, do_sample=True)
    print(tok.decode(out[0]))

    lm_eval --model hf --model_args pretrained=exported,prefix_token_id=10 --tasks wikitext   # byte runs: see README

Our model is GPT-NeoX (tests/test_neox.py: the same logits as GPTNeoXForCausalLM to 1e-5), so
exporting is renaming: our parameter names are NeoX's without the `gpt_neox.` prefix. Offline;
only `safetensors` and `tokenizers` (installed with transformers) are needed beyond torch.

- config.json uses Pythia's own keys (`rotary_pct`, `rotary_emb_base`, ...) and transformers'
  `rope_scaling` (read by transformers 4) and `rope_parameters` (5); `max_position_embeddings`
  is the longest length trained (below; RoPE runs past it, ours and theirs). Every GPTConfig field is
  mapped in `hf_config` or the export stops in one line, so a field added later cannot be
  silently dropped.
- Every `--rope-switch` exports (tests/test_export.py: transformers' logits equal ours to 1e-5,
  past the trained length too). With s = current stage / first stage: `ntk` only enlarges the
  base, so it is a plain `rope_theta`; `pi` is rope_type "linear", factor s; `yarn` is rope_type
  "yarn", factor s, original_max_position_embeddings = the first stage's length, its parameters
  written out (model.rope_frequencies computes transformers' YaRN, which ramps over the dim index,
  not the paper's ramp in rotations). A scaled run's max_position_embeddings is the length its
  RoPE is scaled to (transformers 4 derives yarn's factor from it). `growlength_rope` keeps our
  four RoPE fields, which transformers' do not all carry (ntk's base, the first length), so an
  import gives back the run's shape; it must agree with transformers' fields.
- The folder holds model.safetensors in --dtype (default: the dtype of the weights the run started
  from, config.json's of an --init-from folder, else float32; config.json's `dtype`/`torch_dtype`
  say it, so dtype="auto" loads it as written), the run's tokenizer as transformers loads it
  (harness/hf.py: byte runs a byte-level tokenizer.json whose id is the byte; gpt2 runs GPT-2's
  vocab.json/merges.txt, the head keeping the padded 50,304 rows; a tokenizer.json run its file),
  generation_config.json (end-of-text as bos/eos/pad, the head's padding rows suppressed) and a
  model card README.md (harness/card.py). tests/test_hf.py: AutoTokenizer gives our ids, a
  pipeline generates our greedy tokens, and lm-eval's rolling log-likelihood equals ours.
- max_position_embeddings (and the tokenizer's model_max_length) is the longest length the weights
  were ever trained at: the --init-from folder's and every stage since (`lineage`).
- The run's tokenizer is checked by identity (harness.tokenizer.tokenizer_identity: what defines its
  encoding, not the JSON's bytes): an edited file is one line; a moved one is found in the prepared
  data folder (DATA/tokenizer.json) or given with --tokenizer (harness.hf.run_tokenizer).
- The output folder must be new or empty; config.json is written last, so an interrupted
  export never loads as a model.

The other way, `load_hf(folder)` reads a local GPT-NeoX folder (config.json in transformers 4
or 5 keys + model.safetensors or pytorch_model.bin, loaded with weights_only) into our names and
shape: RoPE as transformers reads it (default, linear = pi, yarn with model.py's parameters; any
other type or yarn variant is one line), or our growlength_rope record where there is one.
`train.py --init-from DIR` continues such a folder, a released Pythia as EleutherAI publishes it:

    python train.py --init-from pythia-160m/ --data my_corpus/ --schedule 2048,4096,8192 --rope-switch yarn

- The flags not given are the folder's (`init_defaults`): --preset whose layers it has,
  --tokenizer its tokenizer.json (GPT-NeoX-20B's for Pythia: same padded size as our gpt2, other
  ids) or gpt2 for GPT-2's vocab.json, --rope-switch the method its RoPE is already scaled by.
- `init_state` checks the folder against the run: its tokenizer must be the data's (a
  tokenizer.json of the same identity, harness.tokenizer.tokenizer_identity), its layers the preset's; one
  line naming the field otherwise. The run starts with the folder's RoPE, so the first eval is
  the folder's own loss (tests/test_pythia.py: transformers' loss on the same windows). A
  --rope-switch then scales from the length the weights were trained at, config.json's
  max_position_embeddings (2048 for Pythia), or the original length of a RoPE already scaled:
  a stage of length L uses s = max(1, L / that length) (model.GPT.switch_rope).
- Only the weights and RoPE come from the folder; schedule, optimizer and clock start fresh.
"""
import harness.boot  # noqa: F401  (first: Ctrl-C while torch imports is one line)

import json
import math
import sys
from pathlib import Path

import torch

import schedule as sched
from harness import cli
from harness.card import model_card
from harness.checkpoint import load_checkpoint
from harness.cli import OneLineParser, UserError
from harness.files import atomic_write
from harness.hf import (byte_identity, data_folder, folder_tokenizer, generation_config, run_tokenizer, write_json,
                        write_tokenizer)
from harness.tokenizer import get_tokenizer, gpt2_files, tokenizer_flag, tokenizer_identity
from model import (GPT, GPTConfig, PRESETS, ROPE_SWITCHES, YARN_ALPHA, YARN_BETA, make_config, ntk_base,
                   rope_frequencies, yarn_attention_factor)


class ExportError(UserError):
    """A model or folder that cannot be converted; the message is one line."""


# ----------------------------------------------------------------------------- names

def to_hf_names(state: dict) -> dict:
    """Our names are GPT-NeoX's inside GPTNeoXForCausalLM, less the `gpt_neox.` prefix of the body."""
    return {k if k == "embed_out.weight" else "gpt_neox." + k: v for k, v in state.items()}


# Buffers older GPT-NeoX files store beside the weights (causal mask, RoPE frequencies); we rebuild them.
HF_BUFFERS = (".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq")


def from_hf_names(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        if k.endswith(HF_BUFFERS):
            continue
        k = "embed_out.weight" if k == "lm_head.weight" else k    # the head's in-memory name in transformers 5
        out[k.removeprefix("gpt_neox.")] = v
    return out


# ----------------------------------------------------------------------------- config.json

# Our RoPE state (GPTConfig.rope_switch/rope_base/rope_orig_len/rope_scale) as written into config.json,
# beside transformers' own fields: ntk is a plain rope_theta there, so only this record gives the
# shape back on import. It is checked against the fields transformers reads (rope_from_hf).
RECORD = "growlength_rope"
ROPE_FIELDS = ("rope_switch", "rope_base", "rope_orig_len", "rope_scale")


def rot_dims(shape: dict) -> int:
    return int(shape["n_embd"] // shape["n_head"] * shape["rotary_pct"])    # as model.CausalSelfAttention


def hf_rope(shape: dict, max_len: int) -> dict:
    """Our RoPE state -> the config.json keys from which transformers computes our tables.

    none (or a switch still at s = 1): plain RoPE. ntk: model.ntk_base as rope_theta. pi: "linear",
    factor s (both divide the frequencies by s). yarn: "yarn" with every parameter written out,
    though each is transformers' default (beta_fast = our beta 32, beta_slow = our alpha 1,
    truncate = whole-dim ramp ends, attention factor 0.1 ln s + 1), so that a later change of its
    defaults cannot move the positions. Both key styles: transformers 5 reads `rope_parameters`,
    4 `rope_scaling` with `rotary_emb_base`/`rotary_pct` (5 takes rope_scaling first; they agree)."""
    method, s, orig = shape["rope_switch"], shape["rope_scale"], shape["rope_orig_len"]
    theta, scaling = shape["rope_base"], None
    if method != "none" and s != 1.0:
        # the current stage (or a longer one trained before, for pi/ntk); transformers 4 takes yarn's
        # factor as max_position_embeddings / orig, so there it is the current stage
        max_len = round(orig * s) if method == "yarn" else max(max_len, round(orig * s))
        if method == "ntk":
            theta = ntk_base(shape["rope_base"], rot_dims(shape), s)
        elif method == "pi":
            scaling = {"rope_type": "linear", "factor": s}
        else:
            scaling = {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": orig,
                       "beta_fast": YARN_BETA, "beta_slow": YARN_ALPHA, "truncate": True,
                       "attention_factor": yarn_attention_factor(s)}
    keys = {"rotary_pct": shape["rotary_pct"], "rotary_emb_base": theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": theta,
                                "partial_rotary_factor": shape["rotary_pct"], **(scaling or {})},
            "max_position_embeddings": max_len}
    if scaling:
        keys["rope_scaling"] = scaling
    if method != "none":
        keys[RECORD] = {k: shape[k] for k in ROPE_FIELDS}
    return keys


def hf_config(shape: dict, max_len: int, eos_id) -> dict:
    """GPTConfig.shape() -> GPT-NeoX config.json, in the keys Pythia's own files use (read by
    transformers 4 and 5). Every shape field is either mapped here or refused: a field added to
    GPTConfig later cannot be silently dropped."""
    mapped = {"vocab_size", "n_layer", "n_head", "n_embd", "rotary_pct", "parallel_residual",
              "layer_norm_eps", "bias", *ROPE_FIELDS}
    unknown = sorted(set(shape) - mapped)
    if unknown:
        raise ExportError(f"GPTConfig field {unknown[0]}={shape[unknown[0]]!r} has no config.json mapping "
                          "in export.hf_config; add one before exporting")
    if not shape["bias"]:
        raise ExportError("bias=False cannot be exported: GPT-NeoX's MLP always has biases")
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "vocab_size": shape["vocab_size"],
        "hidden_size": shape["n_embd"],
        "num_hidden_layers": shape["n_layer"],
        "num_attention_heads": shape["n_head"],
        "intermediate_size": 4 * shape["n_embd"],
        "hidden_act": "gelu",                          # exact (erf) GELU, as model.MLP
        "use_parallel_residual": shape["parallel_residual"],
        "layer_norm_eps": shape["layer_norm_eps"],
        "attention_bias": True,
        "tie_word_embeddings": False,
        # the longest trained length, or the scaled one (hf_rope); RoPE runs past it, ours and theirs
        **hf_rope(shape, max_len),
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "use_cache": True,
    }


def mscale(s: float, k: float) -> float:
    """transformers' yarn get_mscale: 0.1 k ln s + 1 for s > 1."""
    return 0.1 * k * math.log(s) + 1.0 if s > 1 else 1.0


def rope_from_hf(cfg: dict, where: str) -> dict:
    """The RoPE that transformers computes from a GPT-NeoX config.json, as our shape's RoPE fields;
    one line for what model.py does not compute."""
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}    # transformers 5's precedence
    if not isinstance(rope, dict):
        raise ExportError(f"{where}: rope_scaling/rope_parameters is not a JSON object")
    kind = rope.get("rope_type", rope.get("type", "default"))
    base = float(rope.get("rope_theta", cfg.get("rotary_emb_base", 10000.0)))
    plain = {"rope_switch": "none", "rope_base": base, "rope_orig_len": 0, "rope_scale": 1.0}
    if kind == "default":
        return plain
    if kind not in ("linear", "yarn"):
        raise ExportError(f"{where}: RoPE type {kind!r} is not computed by model.py (it has default, "
                          "linear = --rope-switch pi, yarn; ntk is a plain rope_theta)")
    s = rope.get("factor")
    if isinstance(s, bool) or not isinstance(s, (int, float)) or s < 1:
        raise ExportError(f"{where}: RoPE {kind} factor {s!r} is not a number >= 1")
    s = float(s)
    if kind == "linear":    # the first length is not in the file: ours write max_position_embeddings = it * s
        return {**plain, "rope_switch": "pi", "rope_scale": s,
                "rope_orig_len": round(cfg.get("max_position_embeddings", 0) / s)}
    # transformers: a top-level original_max_position_embeddings wins, then rope's, then max_position_embeddings
    orig = cfg.get("original_max_position_embeddings",
                   rope.get("original_max_position_embeddings", cfg.get("max_position_embeddings")))
    if not isinstance(orig, int) or orig < 1:
        raise ExportError(f"{where}: yarn's original_max_position_embeddings {orig!r} is not a positive integer")
    # transformers' attention factor: given, or from mscale/mscale_all_dim, or 0.1 ln s + 1 (model.py's only one)
    factor, m, m_all = rope.get("attention_factor"), rope.get("mscale"), rope.get("mscale_all_dim")
    if factor is None:
        factor = mscale(s, m) / mscale(s, m_all) if m and m_all else mscale(s, 1)
    theirs = {"beta_fast": rope.get("beta_fast") or 32, "beta_slow": rope.get("beta_slow") or 1,
              "truncate": rope.get("truncate", True), "attention_factor": factor}
    ours = {"beta_fast": YARN_BETA, "beta_slow": YARN_ALPHA, "truncate": True,
            "attention_factor": yarn_attention_factor(s)}
    for key, want in ours.items():
        got = theirs[key]
        if not (got == want or isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-9)):
            raise ExportError(f"{where}: yarn {key} {got!r} differs from model.py's YaRN ({want!r})")
    return {**plain, "rope_switch": "yarn", "rope_orig_len": orig, "rope_scale": s}


def rope_fields(cfg: dict, rot_dim: int, where: str) -> dict:
    """Our RoPE fields of a config.json: the growlength record if the file has one (ours: it keeps
    ntk's base and the first length), checked to give the tables transformers computes from the
    file; else what transformers computes (rope_from_hf)."""
    theirs = rope_from_hf(cfg, where)
    record = cfg.get(RECORD)
    if record is None:
        return theirs
    try:
        ours = {"rope_switch": str(record["rope_switch"]), "rope_base": float(record["rope_base"]),
                "rope_orig_len": int(record["rope_orig_len"]), "rope_scale": float(record["rope_scale"])}
    except (KeyError, TypeError, ValueError):
        raise ExportError(f"{where}: {RECORD} is not a record of {', '.join(ROPE_FIELDS)}") from None
    if (ours["rope_switch"] not in ROPE_SWITCHES or ours["rope_scale"] < 1
            or ours["rope_scale"] != 1 and ours["rope_orig_len"] < 1):
        raise ExportError(f"{where}: {RECORD} {record} is not a RoPE state model.py builds")

    def tables(f):
        inv_freq = 1.0 / (f["rope_base"] ** (torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim))
        return rope_frequencies(inv_freq, f["rope_base"], f["rope_switch"], f["rope_orig_len"], f["rope_scale"])
    (a, fa), (b, fb) = tables(ours), tables(theirs)
    if not (torch.allclose(a, b, rtol=1e-6, atol=0) and math.isclose(fa, fb, rel_tol=1e-9)):
        raise ExportError(f"{where}: {RECORD} ({ours['rope_switch']}, s={ours['rope_scale']:g}) and the RoPE "
                          "fields transformers reads give different positions; edit both or remove " + RECORD)
    return ours


def shape_from_hf(cfg: dict, where: str) -> dict:
    """GPT-NeoX config.json (transformers 4 or 5 keys) -> GPTConfig.shape(), refusing what our
    model does not compute."""
    if cfg.get("model_type") != "gpt_neox":
        raise ExportError(f"{where}: model_type is {cfg.get('model_type')!r}, not 'gpt_neox'")
    rope = cfg.get("rope_parameters") or {}                 # transformers 5 nests the RoPE settings
    refuse = {"hidden_act": (cfg.get("hidden_act", "gelu"), "gelu"),
              "intermediate_size": (cfg.get("intermediate_size"), 4 * cfg.get("hidden_size", 0)),
              "tie_word_embeddings": (cfg.get("tie_word_embeddings", False), False),
              "attention_bias": (cfg.get("attention_bias", True), True)}
    for key, (got, ours) in refuse.items():
        if got != ours:
            raise ExportError(f"{where}: {key} is {got!r}; model.py computes only {ours!r}")
    try:
        shape = {"vocab_size": cfg["vocab_size"], "n_layer": cfg["num_hidden_layers"],
                 "n_head": cfg["num_attention_heads"], "n_embd": cfg["hidden_size"],
                 "rotary_pct": rope.get("partial_rotary_factor", cfg.get("rotary_pct", 0.25)),
                 "parallel_residual": cfg.get("use_parallel_residual", True),
                 "layer_norm_eps": cfg.get("layer_norm_eps", 1e-5), "bias": True}
    except KeyError as e:
        raise ExportError(f"{where}: config.json has no {e.args[0]}") from None
    if shape["n_head"] < 1 or shape["n_embd"] % shape["n_head"]:
        raise ExportError(f"{where}: hidden_size {shape['n_embd']} is not a multiple of "
                          f"num_attention_heads {shape['n_head']}")
    return {**shape, **rope_fields(cfg, rot_dims(shape), where)}


# ----------------------------------------------------------------------------- export

def safetensors_torch():
    try:
        import safetensors.torch
    except ImportError:
        raise ExportError("export.py needs the safetensors package: pip install -r requirements.txt") from None
    return safetensors.torch


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def lineage(config: dict, where) -> tuple:
    """(context, dtype) of the --init-from folder a run started from: the longest length its weights
    had been trained at (config.json's max_position_embeddings) and their dtype; (0, "float32") for a
    run from scratch. The folder gone: (0, float32) and a note, the run's own stages still count."""
    folder = config.get("init_from")
    if not folder:
        return 0, "float32"
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        print(f"note: {where} started from {folder}, which is gone: max_position_embeddings counts only the "
              "run's own stages, and the weights are written in float32 unless --dtype says otherwise")
        return 0, "float32"
    context = cfg.get("max_position_embeddings")
    dtype = cfg.get("dtype", cfg.get("torch_dtype"))
    return (context if isinstance(context, int) and not isinstance(context, bool) else 0,
            dtype if dtype in DTYPES else "float32")


def trained_lengths(ckpt: dict) -> list:
    """The stage lengths the weights have been trained at (all the schedule's, for a checkpoint
    without per-stage stats)."""
    stats = ckpt["state"].get("stage_stats") if isinstance(ckpt["state"], dict) else None
    return [int(T) for T in stats] if stats else sched.parse_schedule(ckpt["config"]["schedule"])


def export(run_dir, out_dir, dtype=None, tokenizer=None) -> list:
    """RUN_DIR/ckpt.pt -> a GPTNeoXForCausalLM folder: config.json, model.safetensors (in `dtype`;
    default: the dtype of the weights the run started from), the run's tokenizer as Hugging Face
    files (harness.hf; `tokenizer`: where a moved tokenizer.json now is), generation_config.json
    and a model card (README.md). Returns the names written."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: exists and is not an empty folder; export into a new one (nothing was written)")
    ckpt = load_checkpoint(run_dir)
    try:
        shape, schedule = ckpt["model_config"], ckpt["config"]["schedule"]
    except KeyError as e:
        raise ExportError(f"{run_dir}/ckpt.pt: the checkpoint has no {e.args[0]}") from None
    tok = run_tokenizer(ckpt, run_dir, tokenizer)       # a tokenizer gone or edited: one line, nothing written
    sched.parse_schedule(schedule)                      # a broken one: one line, before anything is written
    context, start_dtype = lineage(ckpt["config"], run_dir)
    max_len = max(context, *trained_lengths(ckpt))      # the weights' whole history, not only this run
    dtype = dtype or start_dtype
    config = {**hf_config(shape, max_len, getattr(tok, "eot_token", None)),   # refuses first, before any write
              "dtype": dtype, "torch_dtype": dtype}     # transformers 5's key and 4's: dtype="auto" loads this
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"{out}: cannot create the folder ({e.strerror or e})") from None
    # safetensors stores dense tensors
    tensors = {k: v.to(DTYPES[dtype]).contiguous() for k, v in to_hf_names(ckpt["model"]).items()}
    with atomic_write(out / "model.safetensors") as f:
        f.write(safetensors_torch().save(tensors, metadata={"format": "pt"}))
    write_tokenizer(out, tok, config["max_position_embeddings"])
    write_json(out / "generation_config.json", generation_config(tok, shape["vocab_size"]))
    with atomic_write(out / "README.md", "w") as f:
        f.write(model_card(Path(run_dir), out, ckpt, tok, config["max_position_embeddings"], dtype,
                           data_folder(ckpt)))
    # config.json last: a folder left half-written (Ctrl-C, full disk) does not load as a model.
    write_json(out / "config.json", config)
    return sorted(p.name for p in out.iterdir())


# ----------------------------------------------------------------------------- import

def read_weights(folder: Path) -> dict:
    st, bin_ = folder / "model.safetensors", folder / "pytorch_model.bin"
    if st.is_file():
        load_file = safetensors_torch().load_file     # first: one line if safetensors is missing
        from safetensors import SafetensorError
        try:
            return load_file(st)
        except (SafetensorError, OSError) as e:
            raise ExportError(f"{st}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None
    if bin_.is_file():
        try:
            state = torch.load(bin_, map_location="cpu", weights_only=True)
        except Exception as e:   # truncated zip, pickle error, not a torch file: the same to the user
            raise ExportError(f"{bin_}: not a readable checkpoint ({type(e).__name__})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ExportError(f"{bin_}: not a state dict (a mapping of names to tensors)")
        return state
    if (folder / "model.safetensors.index.json").is_file():
        raise ExportError(f"{folder}: sharded weights are not supported (one model.safetensors, up to ~1B params)")
    raise ExportError(f"{folder}: no model.safetensors or pytorch_model.bin")


def read_config(folder: Path) -> tuple:
    """FOLDER/config.json -> (the JSON, GPTConfig.shape() of the model it describes, that model's
    parameter names and shapes)."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ExportError(f"{folder}: no config.json (a Hugging Face model folder holds config.json and weights)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (ValueError, OSError) as e:
        raise ExportError(f"{cfg_path}: not a readable JSON file ({e})") from None
    try:        # a hand-edited config.json: a value of another type, or a list where a dict was
        shape = shape_from_hf(cfg, str(cfg_path))
        # Names and shapes only, no memory. RoPE's scaling is no weight (and meta tensors have no values to scale).
        with torch.device("meta"):
            expected = GPT(GPTConfig(**{**shape, "rope_switch": "none"})).state_dict()
    except (TypeError, ValueError, AttributeError) as e:
        why = (str(e) or type(e).__name__).splitlines()[0]
        raise ExportError(f"{cfg_path}: not a GPT-NeoX config our model can build ({why})") from None
    return cfg, shape, expected


def load_hf(folder) -> tuple:
    """A local GPT-NeoX folder -> (GPTConfig shape dict, state_dict in our names). Never downloads.

    Every tensor is checked by name and shape against the model that shape builds, so a
    loaded state_dict fits GPT(GPTConfig(**shape)).load_state_dict as is."""
    folder = Path(folder)
    _, shape, expected = read_config(folder)
    return shape, checked_weights(folder, expected)


def checked_weights(folder: Path, expected: dict) -> dict:
    """The folder's weights in our names, each checked against `expected` (read_config's)."""
    state = from_hf_names(read_weights(folder))
    for name, t in expected.items():
        if name not in state:
            raise ExportError(f"{folder}: weights lack {name}")
        if state[name].shape != t.shape:
            raise ExportError(f"{folder}: {name} has shape {tuple(state[name].shape)}, config.json implies {tuple(t.shape)}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ExportError(f"{folder}: unexpected weight {extra[0]} (not a GPT-NeoX model?)")
    return state


# What the weights do not decide: the vocabulary is the tokenizer's (padded), RoPE a property of positions.
NOT_THE_BODY = ("vocab_size", *ROPE_FIELDS)


def presets_fitting(shape: dict) -> list:
    """The presets whose layers have this shape (their vocabulary and RoPE aside)."""
    return [n for n in PRESETS if all(make_config(n).shape()[k] == shape[k]
                                      for k in shape if k not in NOT_THE_BODY)]


def check_matches(shape: dict, wanted: dict, folder) -> None:
    """One line naming the first field where a loaded shape differs from the run's model
    (GPTConfig.shape() of the chosen preset, vocab padded for the tokenizer). RoPE is not
    compared: the run takes the folder's (init_state)."""
    for field, want in wanted.items():
        if field not in ROPE_FIELDS and shape.get(field) != want:
            fits = presets_fitting(shape)
            hint = f"; it matches --preset {fits[0]}" if fits else ""
            if field == "vocab_size" and any((Path(folder) / n).is_file() for n in ("tokenizer.json", "vocab.json")):
                hint = (f"; the run's tokenizer needs {want!r} rows (padded to 128), so it is not the tokenizer "
                        "these weights were trained with (the folder's tokenizer file holds more ids than its model)")
            elif field == "vocab_size":
                hint = "; give --tokenizer the tokenizer its ids mean (the folder ships no tokenizer.json)"
            raise ExportError(f"{folder}: {field} is {shape.get(field)!r}, the run's model has {want!r}{hint}")


def check_tokenizer(folder, tokenizer: str) -> None:
    """Same vocab size is not the same vocabulary: a released Pythia pads GPT-NeoX-20B's
    tokenizer to 50304, as we pad GPT-2's, with different ids. If the folder ships a
    tokenizer, it must be the run's: a tokenizer.json of the same identity
    (tokenizer_identity), or for a gpt2 run GPT-2's own vocabulary. Bytes ship none."""
    folder, run = Path(folder), get_tokenizer(tokenizer)
    for name in ("tokenizer.json", "vocab.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            text = path.read_text()
            mine = name == "tokenizer.json" and tokenizer_identity(text)
            same = mine in (getattr(run, "identity", None), tokenizer == "byte" and byte_identity())
            if tokenizer == "gpt2" and not same:
                vocab = json.loads(text)
                vocab = vocab["model"]["vocab"] if name == "tokenizer.json" else vocab
                same = vocab == json.loads((gpt2_files() / "encoder.json").read_text())
        except (ValueError, OSError, KeyError, TypeError):
            raise ExportError(f"{path}: not a readable tokenizer file") from None
        if not same:
            use = f"; --tokenizer {folder} (or none) trains with it" if name == "tokenizer.json" else ""
            raise ExportError(f"{path}: its tokenizer is not the run's {run.name} tokenizer (the same ids "
                              f"would mean other tokens){use}")
        return


def init_defaults(cfg, explicit: set):
    """train.py --init-from DIR: the flags the folder decides when they are not given. --preset: the
    one whose layers the folder's have; --tokenizer: its tokenizer.json, if it has one; --rope-switch:
    the method its RoPE is already scaled by (continuing it with another is refused: init_state).
    -> cfg, changed in place (as it is without --init-from)."""
    if not cfg.init_from:
        return cfg
    folder = Path(cfg.init_from)
    _, shape, _ = read_config(folder)
    if "preset" not in explicit:
        fits = presets_fitting(shape)
        if not fits:
            raise ExportError(f"{folder}: {shape['n_layer']} layers of width {shape['n_embd']} and "
                              f"{shape['n_head']} heads fit no --preset ({', '.join(PRESETS)}; model.PRESETS)"
                              + nearest_preset(shape))
        cfg.preset = fits[0]
    if "tokenizer" not in explicit and (folder / "tokenizer.json").is_file():
        # our byte export's tokenizer.json is the byte tokenizer (harness.hf.byte_tokenizer_json)
        mine = (folder / "tokenizer.json").resolve()
        cfg.tokenizer = "byte" if folder_tokenizer(folder) == "byte" else str(mine)
    elif "tokenizer" not in explicit and (folder / "vocab.json").is_file():
        cfg.tokenizer = "gpt2"      # GPT-2's files, as export writes them (check_tokenizer compares them)
    if "rope_switch" not in explicit and shape["rope_scale"] != 1:
        cfg.rope_switch = shape["rope_switch"]
    trained = shape["rope_orig_len"] if shape["rope_scale"] != 1 else cfg_length(folder)
    if cfg.rope_switch != "none" and trained and max(sched.parse_schedule(cfg.schedule)) <= trained:
        print(f"note: --rope-switch {cfg.rope_switch} is inactive: every stage of {cfg.schedule} is within the "
              f"{trained} tokens {folder} was trained at (it scales from that length)")
    return cfg


def cfg_length(folder: Path):
    """config.json's max_position_embeddings: the longest length a folder's weights were trained at."""
    n = json.loads((folder / "config.json").read_text()).get("max_position_embeddings")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def nearest_preset(shape: dict) -> str:
    """'; nearest ...: FIELD is X, the preset's Y' for the preset differing from `shape` in the fewest
    layer fields (a use_parallel_residual: false folder, say: no preset computes that)."""
    def diff(name):
        preset = make_config(name).shape()
        return [(k, shape[k], preset[k]) for k in shape if k not in NOT_THE_BODY and preset[k] != shape[k]]
    best = min(PRESETS, key=lambda n: len(diff(n)))
    return f"; nearest --preset {best}: " + ", ".join(f"{k} is {v!r}, the preset's {w!r}" for k, v, w in diff(best))


def init_state(folder, model_shape: dict, tokenizer: str) -> tuple:
    """train.py --init-from: -> (the run's model shape with the folder's RoPE, the folder's weights),
    or one ExportError line on any mismatch. The run starts with the RoPE the weights were trained
    with; a --rope-switch then scales it from the length they were trained at (model.switch_rope):
    config.json's max_position_embeddings, or the original length of a RoPE already scaled."""
    folder = Path(folder)
    cfg, shape, expected = read_config(folder)
    check_tokenizer(folder, tokenizer)      # first: another vocabulary is the deeper mismatch
    check_matches(shape, model_shape, folder)
    state = checked_weights(folder, expected)       # last: the weights may be gigabytes
    switch, rope = model_shape["rope_switch"], {k: shape[k] for k in ROPE_FIELDS if k != "rope_switch"}
    if shape["rope_scale"] != 1 and switch != shape["rope_switch"]:
        raise ExportError(f"{folder}: its RoPE is scaled by {shape['rope_switch']} (s={shape['rope_scale']:g}); "
                          f"continue it with --rope-switch {shape['rope_switch']}, or leave the flag out")
    if shape["rope_scale"] == 1 and switch != "none":
        trained = cfg.get("max_position_embeddings")
        if isinstance(trained, bool) or not isinstance(trained, int) or trained < 1:
            raise ExportError(f"{folder}: config.json's max_position_embeddings {trained!r} is not a length; "
                              f"--rope-switch {switch} scales from the length the weights were trained at")
        rope["rope_orig_len"] = trained
    return {**model_shape, **rope}, state


def init_model(folder, mcfg: GPTConfig, tokenizer: str) -> GPT:
    """train.py --init-from: the run's model (mcfg) with the folder's weights and RoPE (init_state)."""
    shape, state = init_state(folder, mcfg.shape(), tokenizer)
    model = GPT(GPTConfig(**shape, attn=mcfg.attn))
    model.load_state_dict(state)
    return model


# ----------------------------------------------------------------------------- command line

def main(argv=None) -> int:
    return cli.run(export_command, argv)


def export_command(argv=None) -> int:
    p = OneLineParser(description="Export a growlength run as a Hugging Face GPTNeoXForCausalLM folder.")
    p.add_argument("run", help="run folder holding ckpt.pt")
    p.add_argument("out", help="new (or empty) folder to write config.json, model.safetensors, tokenizer files")
    p.add_argument("--dtype", choices=list(DTYPES), help="the weights' dtype (default: the dtype of the weights "
                   "the run started from: float32 for a run from scratch, a released Pythia's own for --init-from)")
    p.add_argument("--tokenizer", type=tokenizer_flag, help="where the run's tokenizer.json is now, if it moved "
                   "(default: where the run found it, else the copy in its prepared data folder); checked by identity")
    args = p.parse_args(argv)
    # A signal: one line, exit 130/143, the file being written removed (harness.files.atomic_write).
    # A folder left without config.json (written last) does not load as a model.
    written = export(args.run, args.out, args.dtype, args.tokenizer)
    print(f"wrote {args.out}: {', '.join(written)}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
