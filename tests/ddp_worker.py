"""Run by torchrun in test_ddp.py: train, then save this rank's final weights for comparison."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train  # noqa: E402  (the repo root is not on the path of a script under tests/)
from model import GPT  # noqa: E402

models = []


class RecordingGPT(GPT):
    def __init__(self, cfg):
        super().__init__(cfg)
        models.append(self)


if __name__ == "__main__":
    train.GPT = RecordingGPT
    code = train.main(sys.argv[3:] if sys.argv[2] == "--" else sys.argv[2:])
    torch.save(models[0].state_dict(), os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.pt"))
    sys.exit(code)
