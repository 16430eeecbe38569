"""What every entry point shares: a parser whose mistakes are one line, signals that end in one
line, and `run`, the one wrapper that turns any error a user can cause into one line and exit 2.

    if __name__ == "__main__":
        sys.exit(cli.run(main))
"""
import argparse
import os
import signal
import sys
from contextlib import contextmanager

from data import DataError
from harness.boot import SIGNALS, stopped
from schedule import ScheduleError

EXIT_USER = 2


class UserError(Exception):
    """Something the user can fix (a flag, a file, a folder); reported as one line, exit code 2."""
    every_rank = False      # under torchrun, rank 0 speaks for all (the checks agree across ranks)


class RankError(UserError):
    """A user error on one rank that no collective can report for it: that rank prints it."""
    every_rank = True


USER_ERRORS = (UserError, ScheduleError, DataError)


class NothingToDo(Exception):
    """Nothing to do (a finished run resumed with its own budget): one line saying so, exit 0."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (not the usage block) and exit code 2."""

    def error(self, message):
        # Under torchrun every rank parses the same flags: one of them says so.
        self.exit(EXIT_USER, f"error: {message} (see --help)\n" if is_rank0() else None)


def is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def say_error(e: Exception):
    if is_rank0() or getattr(e, "every_rank", False):
        print(f"error: {e}", file=sys.stderr, flush=True)


def stop(signum, _frame):
    """Ctrl-C, SIGTERM or SIGHUP once running: one line and exit 130/143, never a traceback. Raised as
    SystemExit, so that a file being written is cleaned up (harness.files.atomic_write)."""
    raise SystemExit(stopped(signum))


def stop_on_signals():
    """From here a signal raises SystemExit (see `stop`) wherever the program is."""
    for sig in SIGNALS:
        signal.signal(sig, stop)


def run(main, argv=None, handlers=None) -> int:
    """main(argv) -> exit code, with signals handled by `stop`, every user error one line and
    exit 2, and each exception type in `handlers` given to its function (-> the exit code).
    The previous signal handlers come back afterwards (tests call main in-process)."""
    handlers = handlers or {}
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    stop_on_signals()
    try:
        return main(argv)
    except USER_ERRORS as e:
        say_error(e)
        return EXIT_USER
    except NothingToDo as e:
        if is_rank0():
            print(e, flush=True)
        return 0
    except tuple(handlers) as e:
        return next(fn for kind, fn in handlers.items() if isinstance(e, kind))(e)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def interrupt_on_signals():
    """Python's own behaviour back: a signal raises KeyboardInterrupt where the program is."""
    for sig in SIGNALS:
        signal.signal(sig, signal.default_int_handler)


def say_now(line: str):
    """One line on stderr from a signal handler: os.write, as print could be mid-line already."""
    if is_rank0():
        try:
            os.write(2, (line + "\n").encode())
        except OSError:     # stderr's reader is gone (experiments.py killed): stop all the same, checkpoint
            pass


class StopRequest:
    """Once training: the first signal asks the loop to stop after the current step and write a
    checkpoint, and says so at once. A second one before that checkpoint begins quits at once
    (`stop`: one line, the last periodic checkpoint intact); while it is written (`final`), signals
    wait for it, so the first one's promise holds. --stop-at-step asks the same at a given step."""

    def __init__(self, at_step):
        self.at_step, self.signum = at_step, None
        self.previous = {s: signal.signal(s, self.on_signal) for s in SIGNALS}

    def on_signal(self, signum, _frame):
        self.signum = signum
        for s in SIGNALS:
            signal.signal(s, stop)
        again = "Ctrl-C again" if signum == signal.SIGINT else "a second signal"
        say_now(f"{signal.Signals(signum).name}: stopping after this step and writing a checkpoint "
                f"({again} quits at once, keeping only the last checkpoint)")

    @staticmethod
    def wait(signum, _frame):
        say_now(f"{signal.Signals(signum).name}: writing the checkpoint first; it stops right after")

    @contextmanager
    def final(self):
        """The run's last checkpoint: no signal can abandon it half-way (nor the promise above)."""
        before = {s: signal.signal(s, self.wait) for s in SIGNALS}
        try:
            yield
        finally:
            for s, handler in before.items():
                signal.signal(s, handler)

    def __call__(self, step: int) -> bool:
        return self.signum is not None or (self.at_step is not None and step >= self.at_step)

    def reason(self, step: int) -> str:
        if self.signum:
            return f"signal {signal.Signals(self.signum).name}"
        if self.at_step is not None and step >= self.at_step:
            return f"--stop-at-step {self.at_step}"
        return "a signal on another rank"

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


# ----------------------------------------------------------------------------- flag types

def auto_or_tokens(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of tokens, not {text!r}") from None


def compact(text: str) -> str:
    """A list flag without spaces: --schedule '32, 64' is --schedule 32,64 (on --resume, in experiments.py)."""
    return "".join(text.split())
