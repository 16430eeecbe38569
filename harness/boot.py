"""Imported first by every entry point, before torch: `import harness.boot`.

Importing torch takes seconds, and a Ctrl-C meanwhile would end in an ImportError traceback.
While the program being run is one of this repo's top-level scripts, a SIGINT, SIGTERM or
SIGHUP (a closed terminal, a dropped ssh) during those imports exits at once with one line
(nothing is written yet, so nothing is lost). Each script's main() then installs its own
handling (harness.cli.run). Imported by anything else (pytest, `python -c`, another program)
it changes nothing.
"""
import os
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The signals that stop a program, handled alike by every entry point (harness.cli). One the
# program was started ignoring (`nohup` ignores SIGHUP, `cmd &` in a script SIGINT) stays ignored.
SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if signal.getsignal(s) != signal.SIG_IGN)


def stopped(signum: int) -> int:
    """Say which signal stopped us; -> the shell's exit code for it (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP)."""
    print(f"error: stopped by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
    return 128 + signum


def _quit_now(signum, _frame):
    os._exit(stopped(signum))


def _running_a_script_of_this_repo() -> bool:
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is not None and Path(main_file).resolve().parent == REPO


if _running_a_script_of_this_repo():
    for _sig in SIGNALS:
        signal.signal(_sig, _quit_now)
