"""A run's folder (`--out`): owned by one live run, and its metrics.jsonl kept true to its checkpoint."""
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Optional

from harness.cli import UserError
from harness.files import atomic_write, write_failed


class RunFolder:
    """The run's folder, owned by one live run: an exclusive flock on its `.lock` file. The
    kernel drops the lock when the process dies, so a run killed with -9 leaves none behind."""

    def __init__(self, path: Path, created: bool, fresh: bool, lock, start_step: int):
        # created: this run made the folder; fresh: a new run (or a copy of one, see claim),
        # so its metrics.jsonl and ckpt.pt are ours to remove if it never trains a step
        self.path, self.created, self.fresh, self.lock, self.start_step = path, created, fresh, lock, start_step

    @staticmethod
    def claim(out: Optional[str], resume: Optional[str] = None, at: Optional[tuple] = None) -> "RunFolder":
        """`out` (or a new runs/<timestamp>) for a new run (at None), or for one resumed from the
        folder `resume` at its checkpoint's point `at` = (step, metrics_bytes). Resumed into
        another folder, the run continues there from copies of its ckpt.pt and metrics.jsonl:
        the folder it came from is never written."""
        if out and ((Path(out) / "meta.json").exists() or (Path(out) / "train.bin").exists()):
            raise UserError(f"--out {out} is a prepared data folder (meta.json, train.bin); "
                            f"a run needs a folder of its own")
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
        in_place = at is not None and path.resolve() == Path(resume).resolve()
        folder = RunFolder(path, created, not in_place, lock, at[0] if at else 0)
        try:
            folder.check_history(at if in_place else None)
        except BaseException:
            folder.release()        # refused: the folder's files are not ours
            raise
        if at is not None and not in_place:
            try:
                copy_run(Path(resume), path, at)
            except BaseException:
                folder.discard_if_unused()     # checked above: it held no run, so what is there we copied
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

    def check_history(self, at: Optional[tuple]):
        """metrics.jsonl must tell the story of the checkpoint: a new run needs a fresh folder,
        and a resumed one forgets the records a crash left after its checkpoint."""
        metrics, ckpt = self.path / "metrics.jsonl", self.path / "ckpt.pt"
        if at is None and ckpt.exists():
            raise UserError(f"--out {self.path} already holds a run; use --resume {self.path} or another --out")
        if at is None and metrics.exists():
            raise UserError(f"--out {self.path} holds a metrics.jsonl but no checkpoint (an earlier run that "
                            f"never checkpointed?): remove it or choose another --out")
        if at is not None and metrics.is_file():
            keep_history(metrics, metrics, *at)

    def release(self):
        self.lock.close()

    def close(self, failed: bool, step: int):
        """A run that failed before training a step of its own leaves the folder as it found it."""
        self.discard_if_unused() if failed and step == self.start_step else self.release()

    def discard_if_unused(self):
        """A new run that failed before its first step leaves nothing behind (its folder too,
        if it made it), so the same command, mended, can run again in the same --out."""
        self.release()
        if self.fresh:
            for name in (".lock", "metrics.jsonl", "ckpt.pt"):
                (self.path / name).unlink(missing_ok=True)
        if self.created:
            try:
                self.path.rmdir()
            except OSError:
                pass


def copy_run(source: Path, dest: Path, at: tuple):
    """A resumed run's ckpt.pt and metrics.jsonl (up to the checkpoint) into its new folder,
    with the source's lock held meanwhile, so that no run there writes them half-way."""
    try:
        lock = os.open(source / ".lock", os.O_RDONLY)
    except OSError:
        lock = None     # never locked: no run owns it
    try:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with atomic_write(dest / "ckpt.pt") as f, open(source / "ckpt.pt", "rb") as src:
            shutil.copyfileobj(src, f)
        if (source / "metrics.jsonl").is_file():
            keep_history(source / "metrics.jsonl", dest / "metrics.jsonl", *at)
    except BlockingIOError:
        raise UserError(f"--resume {source} is in use by another run; stop it (or wait for it) first") from None
    except OSError as e:
        raise UserError(f"--resume {source}: cannot copy it to {dest} ({e.strerror})") from None
    finally:
        if lock is not None:
            os.close(lock)


def keep_history(path: Path, dest: Path, step: int, size: Optional[int]):
    """Write to `dest` the records of `path` the checkpoint knows: the first `size` bytes (the
    file's length when it was written), or where a checkpoint predates that, the records up to its
    step. Records a crash left after the checkpoint go, and a half-written last line; so do the
    jump records, computed at the end from the whole run (a run that trains on writes them anew)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror})") from None
    known = data[:size] if size and len(data) >= size and data[size - 1:size] == b"\n" else data
    lines, kept = data.splitlines(keepends=True), []
    for line in known.splitlines(keepends=True):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step and record.get("kind") != "jump" \
                and line.endswith(b"\n"):
            kept.append(line)
    if kept != lines or dest != path:
        with atomic_write(dest) as f:
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

    def size(self) -> int:
        """The file's length: what a checkpoint written now knows of (keep_history)."""
        return os.fstat(self.fd).st_size if self.fd is not None else 0

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
