"""Generate text from a checkpoint, at any length (RoPE extrapolates past the trained length).

    python sample.py runs/<timestamp> --prompt "ROMEO:" --max-new-tokens 500
"""
import sys

import torch

import data as datalib
from model import GPT, GPTConfig
from train import USER_ERRORS, OneLineParser, UserError, load_checkpoint


def main(argv=None) -> int:
    p = OneLineParser(description="Generate text from a growlength checkpoint.")
    p.add_argument("run", help="run folder holding ckpt.pt")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max-new-tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    p.add_argument("--top-k", type=int, default=200)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    try:
        ckpt = load_checkpoint(args.run)
        if args.max_new_tokens < 0 or args.num_samples < 1:
            raise UserError("--max-new-tokens must be >= 0 and --num-samples >= 1")
        tok = datalib.get_tokenizer(ckpt["config"]["tokenizer"])
        # sdpa: generation runs anywhere; the trained weights do not depend on the backend.
        model = GPT(GPTConfig(**ckpt["model_config"], attn="sdpa"))
        model.load_state_dict(ckpt["model"])
        prompt = tok.encode(args.prompt)
        if not prompt:
            raise UserError("--prompt is empty")
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model.to(args.device).eval()
    torch.manual_seed(args.seed)
    idx = torch.tensor([prompt] * args.num_samples, device=args.device)
    out = model.generate(idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k)
    for row in out.tolist():
        print(tok.decode(row))
        print("---")
    return 0


if __name__ == "__main__":
    sys.exit(main())
