"""What every entry point shares: a parser whose mistakes are one line, and signals that end
in one line. No torch here: an entry point imports this first, before its slow imports.

    import cli
    if __name__ == "__main__":
        cli.quit_on_signals()      # while torch imports (seconds): Ctrl-C leaves at once
    import torch ...
"""
import argparse
import os
import signal
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (not the usage block) and exit code 2."""

    def error(self, message):
        # Under torchrun every rank parses the same flags: one of them says so.
        self.exit(2, f"error: {message} (see --help)\n" if os.environ.get("RANK", "0") == "0" else None)


def stopped(signum: int) -> int:
    """Say which signal stopped us; -> the shell's exit code for it (130 Ctrl-C, 143 SIGTERM)."""
    print(f"error: stopped by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
    return 128 + signum


def stop(signum, _frame):
    """Ctrl-C or SIGTERM once running: one line and exit 130/143, never a traceback. Raised as
    SystemExit, so that a file being written is cleaned up (data.atomic_write)."""
    raise SystemExit(stopped(signum))


def _quit_now(signum, _frame):
    os._exit(stopped(signum))


def quit_on_signals():
    """While imports run nothing is written yet, so leave at once; an exception raised inside
    a compiled module's start-up would surface as an ImportError traceback instead."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _quit_now)


def stop_on_signals():
    """After the imports: a signal raises SystemExit (see `stop`) wherever the program is."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
