"""Generate text from a checkpoint, at any length (RoPE extrapolates past the trained length).

    python sample.py runs/<timestamp> --prompt "ROMEO:" --max-new-tokens 500
    python sample.py exported/ --prompt "ROMEO:"          # a Hugging Face GPT-NeoX folder: an export, a Pythia

Samples are drawn BATCH at a time and printed as they come, so --num-samples never holds more
than one batch's KV cache, logits and ids in memory.
"""
import harness.boot  # noqa: F401  (first: Ctrl-C while torch imports is one line)

import math
import sys
from pathlib import Path

import torch

from harness import cli, threads
from harness.checkpoint import load_checkpoint, model_from_checkpoint
from harness.cli import OneLineParser, UserError
from harness.hf import folder_tokenizer, run_tokenizer
from harness.tokenizer import get_tokenizer, tokenizer_flag
from model import GPT, GPTConfig

BATCH = 64      # samples per generate() call
MIN_TEMPERATURE = 1e-6      # below it logits / temperature overflow float32: use 0 (greedy)


def check_flags(args):
    """Every flag mistake, before the checkpoint is even read."""
    if args.max_new_tokens < 0 or args.num_samples < 1:
        raise UserError("--max-new-tokens must be >= 0 and --num-samples >= 1")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k {args.top_k}: must be >= 1 (for the single most likely token, use --temperature 0)")
    # A negative temperature would flip the distribution (the least likely token first): refused.
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UserError(f"--temperature {args.temperature}: must be a finite number >= 0 (0: greedy)")
    if 0 < args.temperature < MIN_TEMPERATURE:
        raise UserError(f"--temperature {args.temperature}: below {MIN_TEMPERATURE:g} the logits divided by it "
                        "overflow; use 0 for greedy")
    if not 0 <= args.seed < 2 ** 63:
        raise UserError(f"--seed {args.seed}: must be in 0 .. 2**63-1")
    try:
        args.prompt.encode("utf-8")
    except UnicodeEncodeError as e:   # e.g. a lone surrogate: bytes the shell could not decode
        raise UserError(f"--prompt is not valid text: character {e.start} is {args.prompt[e.start]!r}") from None


def check_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device name (cpu, cuda, cuda:1, mps, ...)") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"--device {name}: no such CUDA device on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: not supported here (cpu, cuda or mps)")
    return device


def main(argv=None) -> int:
    return cli.run(generate, argv)


def generate(argv=None) -> int:
    p = OneLineParser(description="Generate text from a growlength checkpoint.")
    p.add_argument("run", help="run folder holding ckpt.pt, or a Hugging Face GPT-NeoX folder (config.json + weights)")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max-new-tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8,
                   help="0: greedy; > 0 divides the logits (higher: more random); negative is refused")
    p.add_argument("--top-k", type=int, default=200, help="sample among the k most likely tokens (k >= 1)")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default %(default)s)")
    p.add_argument("--threads", type=threads.threads_flag, default="auto",
                   help="CPU threads: auto (default) times a few tokens at 1, 2, .. cores threads and keeps the fastest; N fixes it")
    p.add_argument("--tokenizer", type=tokenizer_flag, help="where the run's tokenizer.json is now, if it moved "
                   "(checked by identity); for a Hugging Face folder, its tokenizer if it ships none")
    args = p.parse_args(argv)
    check_flags(args)
    device = check_device(args.device)
    model, tok = load(args.run, args.tokenizer)
    prompt = tok.encode(args.prompt)
    if not prompt:
        raise UserError("--prompt is empty")
    model.to(device).eval()
    torch.manual_seed(args.seed)
    probe_idx = torch.tensor([prompt] * min(BATCH, args.num_samples), device=device)
    try:     # --threads auto: time a few tokens of the same generation, its random draws undone
        threads.fit(args.threads, threads.quiet_rng(lambda: model.generate(
            probe_idx, min(args.max_new_tokens, 16), temperature=args.temperature, top_k=args.top_k,
            vocab_size=tok.vocab_size)), device.type, verbose=False)
    except MemoryError as e:
        raise UserError(f"{e}; lower --max-new-tokens") from None
    for first in range(0, args.num_samples, BATCH):
        idx = torch.tensor([prompt] * min(BATCH, args.num_samples - first), device=device)
        try:
            out = model.generate(idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                 vocab_size=tok.vocab_size)
        except MemoryError as e:   # the KV cache for prompt + max_new_tokens, allocated up front
            raise UserError(f"{e}; lower --max-new-tokens") from None
        for row in out.tolist():
            print(tok.decode(row))
            print("---")
    return 0


def load(where: str, tokenizer=None) -> tuple:
    """(model, tokenizer) of a run folder (ckpt.pt) or of a Hugging Face GPT-NeoX folder."""
    folder = Path(where)
    if not (folder / "ckpt.pt").is_file() and (folder / "config.json").is_file():
        import export        # Hugging Face in: only for a Hugging Face folder
        shape, state = export.load_hf(folder)
        name = tokenizer or folder_tokenizer(folder)
        if name is None:
            raise UserError(f"{folder}: ships no tokenizer (tokenizer.json or vocab.json); give --tokenizer")
        model = GPT(GPTConfig(**shape))
        model.load_state_dict(state)
        return model, get_tokenizer(name)
    ckpt = load_checkpoint(where)
    tok = run_tokenizer(ckpt, where, tokenizer)
    return model_from_checkpoint(ckpt, where), tok

if __name__ == "__main__":
    sys.exit(main())
