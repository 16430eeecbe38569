"""Generate text from a checkpoint, at any length (RoPE extrapolates past the trained length).

    python sample.py runs/<timestamp> --prompt "ROMEO:" --max-new-tokens 500
"""
import harness.boot  # noqa: F401  (first: Ctrl-C while torch imports is one line)

import math
import sys

import torch

from harness import cli, threads
from harness.checkpoint import load_checkpoint, model_from_checkpoint
from harness.cli import OneLineParser, UserError
from harness.tokenizer import get_tokenizer


def check_flags(args):
    """Every flag mistake, before the checkpoint is even read."""
    if args.max_new_tokens < 0 or args.num_samples < 1:
        raise UserError("--max-new-tokens must be >= 0 and --num-samples >= 1")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k {args.top_k}: must be >= 1 (for the single most likely token, use --temperature 0)")
    # A negative temperature would flip the distribution (the least likely token first): refused.
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UserError(f"--temperature {args.temperature}: must be a finite number >= 0 (0: greedy)")
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
    p.add_argument("run", help="run folder holding ckpt.pt")
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
    args = p.parse_args(argv)
    check_flags(args)
    device = check_device(args.device)
    ckpt = load_checkpoint(args.run)
    if "tokenizer" not in ckpt["config"]:
        raise UserError(f"{args.run}/ckpt.pt: its config names no tokenizer")
    tok = get_tokenizer(ckpt["config"]["tokenizer"])
    model = model_from_checkpoint(ckpt, args.run)
    prompt = tok.encode(args.prompt)
    if not prompt:
        raise UserError("--prompt is empty")
    model.to(device).eval()
    torch.manual_seed(args.seed)
    idx = torch.tensor([prompt] * args.num_samples, device=device)
    try:
        def probe():   # a few tokens of the same generation; its random draws are undone (quiet_rng)
            model.generate(idx, min(args.max_new_tokens, 16), temperature=args.temperature, top_k=args.top_k,
                           vocab_size=tok.vocab_size)
        threads.fit(args.threads, threads.quiet_rng(probe), device.type, verbose=False)
        out = model.generate(idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                             vocab_size=tok.vocab_size)
    except MemoryError as e:   # the KV cache for prompt + max_new_tokens, allocated up front
        raise UserError(f"{e}; lower --max-new-tokens or --num-samples") from None
    for row in out.tolist():
        print(tok.decode(row))
        print("---")
    return 0


if __name__ == "__main__":
    sys.exit(main())
