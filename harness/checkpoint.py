"""ckpt.pt: everything a run needs to continue as if never stopped, written all or nothing.

It holds the run's config, the model's shape (GPTConfig.shape(), RoPE-switch state included),
the weights, the optimizer, the training state (train.TrainState as a dict) and the data's
fingerprint. train.py resumes from it; sample.py, export.py and experiments.py read it.
"""
from pathlib import Path
from typing import Optional

import torch

from harness import report
from harness.cli import NothingToDo, UserError
from harness.files import atomic_write
from harness.tokenizer import TOKENIZERS, get_tokenizer
from model import GPT, GPTConfig

CKPT_FORMAT = "growlength-2"
# The shape fields a stage switch changes (GPT.switch_rope): a resumed run takes them from the
# checkpoint; every other shape field must equal the run's model.
ROPE_STATE = ("rope_orig_len", "rope_scale")


def save_checkpoint(path: Path, config: dict, model, opt, state: dict, data_fingerprint: str):
    """All or nothing (harness.files.atomic_write): a crash or a full disk mid-write keeps the old one."""
    ckpt = {"format": CKPT_FORMAT, "config": config, "model_config": model.cfg.shape(),
            "model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
            "data_fingerprint": data_fingerprint, "tokenizer_identity": identity(config.get("tokenizer"))}
    with atomic_write(path) as f:
        torch.save(ckpt, f)


def identity(tokenizer) -> str | None:
    """A tokenizer.json run's tokenizer by content (harness.tokenizer.tokenizer_identity), so that
    sample.py and export.py know an edited or other file (harness.hf.run_tokenizer); built-ins: None."""
    if tokenizer in TOKENIZERS or not isinstance(tokenizer, str):
        return None
    return get_tokenizer(tokenizer).identity      # cached: read when the run began


def load_checkpoint(folder: str, state_type=dict) -> dict:
    """FOLDER/ckpt.pt, checked for the parts every reader needs; one UserError line otherwise.
    Its `state` becomes state_type(**state) (train.py passes its TrainState)."""
    path = Path(folder) / "ckpt.pt"
    if not path.is_file():
        raise UserError(f"{folder}: no checkpoint (ckpt.pt) in that folder")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, unpickling error: all the same to the user
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        theirs = f"its format is {ckpt['format']!r}" if isinstance(ckpt, dict) and "format" in ckpt else "no format tag"
        raise UserError(f"{path}: not a growlength checkpoint of format {CKPT_FORMAT} ({theirs})")
    broken = [k for k in ("config", "model_config", "model", "optimizer", "state")
              if not isinstance(ckpt.get(k), dict)]
    if not broken:
        try:
            ckpt["state"] = state_type(**ckpt["state"])
        except TypeError:
            broken = ["state"]
    if broken:
        raise UserError(f"{path}: not a growlength checkpoint (missing or broken: {', '.join(broken)})")
    return ckpt


def model_shape(ckpt: dict) -> dict:
    """The checkpoint's model shape, a field it predates (written before the field existed: the
    RoPE-switch ones, say) taking its GPTConfig default, which is what that model computed."""
    return {**GPTConfig().shape(), **ckpt["model_config"]}


def check_shape(ckpt: dict, shape: dict, where: str):
    """The checkpoint's model must be the run's model (up to the RoPE state a switch set)."""
    saved = model_shape(ckpt)
    diff = [k for k in shape if k not in ROPE_STATE and saved.get(k) != shape[k]]
    if diff:
        raise UserError(f"{where}: checkpoint model differs in {', '.join(diff)}; cannot continue it with this model")


def load_optimizer(opt, ckpt: dict, where: str):
    try:
        opt.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(f"{where}: checkpoint optimizer does not fit the model ({str(e).splitlines()[0]})") from None


def check_data(ckpt: dict, fingerprint: str, where: str):
    """A run continues on the tokens it trained on: the data's fingerprint must not have changed."""
    if ckpt.get("data_fingerprint") not in (None, fingerprint):
        raise UserError(f"{where}: the data changed since the checkpoint (fingerprint "
                        f"{ckpt['data_fingerprint']} -> {fingerprint}); resuming would train on other tokens")


def check_unfinished(ckpt: dict, end, where: str):
    """A finished run resumed with its own budget (`end`, a schedule.Plan): nothing to do, nothing written."""
    if ckpt is not None and end.done(ckpt["state"].elapsed_s, ckpt["state"].tokens):
        raise NothingToDo(f"{where}: the run is finished (step {ckpt['state'].step}, budget {end.budget_point(1.0)}); "
                          f"nothing to do. To extend it, give a larger --budget or --max-tokens")


def model_from_checkpoint(ckpt: dict, where: str, attn: str = "sdpa") -> GPT:
    """The checkpoint's model with its weights, on the CPU. The attention backend is a runtime
    choice (sdpa runs anywhere); the weights do not depend on it."""
    try:
        model = GPT(GPTConfig(**model_shape(ckpt), attn=attn))
    except (ValueError, TypeError) as e:   # a config the model refuses (e.g. a rope_switch this version lacks)
        raise UserError(f"{where}: the checkpoint's model config cannot be built: {e}") from None
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise UserError(f"{where}: the checkpoint's weights do not fit its model config ({type(e).__name__})") from None
    return model


def data_generator(seed: int, ckpt: Optional[dict], ranks) -> torch.Generator:
    """This rank's data-window generator: fresh, or exactly where the checkpoint left off (with
    the global torch RNG too). Another world size cannot continue every rank's stream: reseeded."""
    seed = (seed * 1000 + ranks.rank) % 2 ** 64       # each rank draws its own windows
    gen = torch.Generator().manual_seed(seed)
    if ckpt is None:
        return gen
    state = ckpt["state"]
    if len(state.data_rng) == ranks.world:
        gen.set_state(state.data_rng[ranks.rank])
    else:
        gen.manual_seed((seed + 7919 * state.step) % 2 ** 64)
        report.world_changed(len(state.data_rng), ranks.world, ranks.master)
    if state.torch_rng is not None:
        torch.set_rng_state(state.torch_rng)
    return gen
