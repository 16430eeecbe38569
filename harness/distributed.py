"""torchrun ranks and the few collectives the loop needs. Every helper returns at once for a
world of one, so a plain `python train.py` never touches torch.distributed."""
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from harness.cli import USER_ERRORS, RankError, UserError


@dataclass(frozen=True)
class Ranks:
    """Where this process sits in a torchrun job; a plain `python train.py` is a world of one."""
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Ranks:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    try:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    except dist.DistError as e:     # no other rank can speak for this one: every rank says it
        raise RankError(f"rank {os.environ.get('RANK', '?')}: cannot join the torchrun job "
                        f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return Ranks(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world)


def teardown_distributed():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def from_rank0(value: float, ranks: Ranks, device) -> float:
    """Every rank takes rank 0's reading: one clock decides stages, evals and checkpoints."""
    if ranks.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.item()


def any_rank(flag: bool, ranks: Ranks, device) -> bool:
    """True on every rank if it is true on any (a signal may reach only some ranks)."""
    if ranks.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def min_over_ranks(values: list, ranks: Ranks, device) -> list:
    if ranks.world == 1:
        return values
    t = torch.tensor(values, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t.tolist()


def mean_over_ranks(t: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    if ranks.world > 1:
        dist.all_reduce(t)            # SUM, then divide: gloo has no AVG
        t /= ranks.world
    return t


def agree(ranks: Ranks, fn, *args):
    """fn(*args) on this rank (None: nothing to do here), then a collective: if it failed on any
    rank, every rank stops with the first failure, so no rank waits forever for one that quit
    and the error is printed once (by rank 0, naming the rank it came from)."""
    result, error = None, None
    try:
        result = fn(*args) if fn is not None else None
    except USER_ERRORS as e:
        error = e
    if ranks.world == 1:
        if error is not None:
            raise error
        return result
    errors = [None] * ranks.world
    dist.all_gather_object(errors, None if error is None else str(error))
    failed = [(r, msg) for r, msg in enumerate(errors) if msg is not None]
    if failed:
        r, msg = failed[0]
        raise UserError(msg if r == 0 else f"rank {r}: {msg}")
    return result


def share_from_rank0(obj, ranks: Ranks):
    """Rank 0's value of a small picklable object (the run folder's name, say) on every rank."""
    if ranks.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_generators(gen: torch.Generator, ranks: Ranks) -> list:
    """Every rank's data-RNG state, so a resumed run draws exactly the windows it would have."""
    if ranks.world == 1:
        return [gen.get_state()]
    states = [None] * ranks.world
    dist.all_gather_object(states, gen.get_state())
    return states


def wrap_ddp(model, ranks: Ranks, device: str):
    if ranks.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[ranks.local_rank] if device.startswith("cuda") else None)


def peer_failed(error: RuntimeError) -> int:
    """A collective broke because another rank stopped (its own output says why, if it could)
    or died (kill -9, the OOM killer): one line from rank 0 instead of the backend's traceback,
    exit 1. Any other RuntimeError is a bug, and goes on as one."""
    lost = isinstance(error, dist.DistError) or any(m in str(error) for m in ("by peer", "remote worker"))
    if not (lost and dist.is_available() and dist.is_initialized()):
        raise error
    if dist.get_rank() == 0:
        print(f"error: rank 0: lost contact with another rank of the torchrun job; the last checkpoint, if any, "
              f"is intact ({str(error).splitlines()[0][:200]})", file=sys.stderr, flush=True)
    return 1
