"""Files written all or nothing: a crash, a signal or a full disk mid-write keeps the old one."""
import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from harness.cli import UserError


class WriteError(UserError):
    """A write that could not complete (full disk, no permission); the previous file is intact."""


@contextmanager
def atomic_write(path, mode: str = "wb"):
    """Write `path` all or nothing: into a temp file beside it, fsync, then rename over it.

    A crash, Ctrl-C or full disk mid-write leaves the previous file (or none) and no temp
    file. torch.save reports a full disk as RuntimeError, not OSError; both become one
    WriteError line naming the path.
        with atomic_write(out / "ckpt.pt") as f:
            torch.save(state, f)
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)):
            raise write_failed(path, e) from None
        raise


def write_failed(path: Path, e: Exception) -> WriteError:
    """One line for a failed write; torch's writer says only "file write failed", so a full
    disk is recognised by errno, by message, or by looking at the disk ourselves."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left" in str(e):
        why = "No space left on device"
    elif isinstance(e, OSError):
        why = e.strerror or str(e)
    else:
        try:
            full = shutil.disk_usage(Path(path).parent).free < 16 * 2 ** 20
        except OSError:
            full = False
        why = "No space left on device" if full else str(e).strip().splitlines()[-1][:200]
    return WriteError(f"could not write {path} ({why}); the previous version, if any, is intact")
