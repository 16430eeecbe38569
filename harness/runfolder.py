"""A run's folder (`--out`): owned by one live run, and its metrics.jsonl kept true to its checkpoint."""
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Optional

from harness.cli import UserError
from harness.files import atomic_write, write_failed


class RunFolder:
    """The run's folder, owned by one live run: an exclusive flock on its `.lock` file. The
    kernel drops the lock when the process dies, so a run killed with -9 leaves none behind."""

    def __init__(self, path: Path, created: bool, fresh: bool, lock):
        # created: this run made the folder; fresh: a new run, so any metrics.jsonl in it is ours
        self.path, self.created, self.fresh, self.lock = path, created, fresh, lock

    @staticmethod
    def claim(out: Optional[str], ckpt_step: Optional[int]) -> "RunFolder":
        """`out` (or a new runs/<timestamp>) for a new run (ckpt_step None) or a resumed one."""
        path, created = RunFolder.make(out)
        try:
            lock = open(path / ".lock", "a+")
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"--out {path} is in use by another run (pid {(path / '.lock').read_text().strip()})") from None
        except OSError as e:
            raise UserError(f"--out {path}: cannot use the folder ({e.strerror})") from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        # A run killed while writing a checkpoint (kill -9, a second Ctrl-C) leaves its
        # temporary file (harness.files.atomic_write), as large as the model and optimizer:
        # the folder is ours now, so no live writer owns one.
        for stale in path.glob("*.tmp[0-9]*"):
            stale.unlink(missing_ok=True)
        folder = RunFolder(path, created, ckpt_step is None, lock)
        try:
            folder.check_history(ckpt_step)
        except BaseException:
            folder.release()
            raise
        return folder

    @staticmethod
    def make(out: Optional[str]):
        """(path, created): --out as given, or a new runs/<timestamp>[-n] nobody else has."""
        try:
            if out:
                path = Path(out)
                created = not path.exists()
                path.mkdir(parents=True, exist_ok=True)
                return path, created
            stamp = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
            for n in range(1, 1000):
                path = stamp if n == 1 else Path(f"{stamp}-{n}")
                try:
                    path.mkdir(parents=True)       # exclusive: two runs in one second get two folders
                    return path, True
                except FileExistsError:
                    continue
            raise UserError(f"{stamp}: too many runs started this second")
        except OSError as e:
            raise UserError(f"--out {out}: cannot create the folder ({e.strerror})") from None

    def check_history(self, ckpt_step: Optional[int]):
        """metrics.jsonl must tell the story of the checkpoint: a fresh run needs a fresh folder,
        and a resumed one forgets the records a crash left after its checkpoint."""
        metrics, ckpt = self.path / "metrics.jsonl", self.path / "ckpt.pt"
        if ckpt_step is None and ckpt.exists():
            raise UserError(f"--out {self.path} already holds a run; use --resume {self.path} or another --out")
        if ckpt_step is None and metrics.exists():
            raise UserError(f"--out {self.path} holds a metrics.jsonl but no checkpoint (an earlier run that "
                            f"never checkpointed?): remove it or choose another --out")
        if ckpt_step is not None and metrics.is_file():
            truncate_metrics(metrics, ckpt_step)

    def release(self):
        self.lock.close()

    def close(self, unused: bool):
        self.discard_if_unused() if unused else self.release()

    def discard_if_unused(self):
        """A new run that failed before its first step leaves nothing behind (its folder too,
        if it made it), so the same command, mended, can run again in the same --out."""
        self.release()
        if self.fresh:
            for name in (".lock", "metrics.jsonl"):
                (self.path / name).unlink(missing_ok=True)
        if self.created:
            try:
                self.path.rmdir()
            except OSError:
                pass


def truncate_metrics(path: Path, step: int):
    """Keep the records up to the checkpoint's step (and any whole line without one); a
    half-written last line from a crash goes too. Rewritten atomically."""
    try:
        lines = path.read_text().splitlines(keepends=True)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read it ({e})") from None
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        # jump records are written at the end from the whole run's losses: a resumed run that
        # trains on writes them anew, so they go with the other records of the old ending.
        if isinstance(record, dict) and record.get("step", 0) <= step and record.get("kind") != "jump" \
                and line.endswith("\n"):
            kept.append(line)
    if len(kept) != len(lines):
        with atomic_write(path, "w") as f:
            f.writelines(kept)


class Metrics:
    """metrics.jsonl: one JSON record a line, appended and flushed. A line is written whole or
    not at all: if the disk fills mid-line, the file is cut back to where it was. With no path
    (a rank other than 0) it writes nothing."""

    def __init__(self, path: Optional[Path]):
        self.path = path
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else None
        except OSError as e:
            raise write_failed(path, e) from None

    def write(self, kind: str, **record):
        if self.fd is None:
            return
        line = (json.dumps({"kind": kind, **record}) + "\n").encode()
        size = os.fstat(self.fd).st_size
        try:
            written = os.write(self.fd, line)
            if written != len(line):
                raise OSError(28, "No space left on device")   # a short write: the disk is full
        except OSError as e:
            os.ftruncate(self.fd, size)
            raise write_failed(self.path, e) from None

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
