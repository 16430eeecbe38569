"""Which implementation of the exercises the course tests run against.

    pytest course/ -k lab2                                         # your files: course/exercises/
    GROWLENGTH_COURSE_IMPL=solutions pytest course/ -k lab2        # the reference solutions
    GROWLENGTH_COURSE_IMPL=/path/to/my_folder pytest course/       # any folder of labN_*.py files

The tests never import course/exercises/ directly: they ask `load("lab2_schedule")`, so the
same tests check the stub (where they must fail), the solution (where they must pass) and
the deliberately wrong versions in course/mutants/ (where at least one must fail per
function) -- tests/test_course.py runs all three.

Every exercise function comes back wrapped in a time limit (`limited`): an infinite loop in
your code fails its test after GROWLENGTH_COURSE_LIMIT_S seconds (default 5), naming the
function, instead of hanging `pytest course/`; the function's later tests then fail at once.
"""
import functools
import importlib.util
import os
import signal
import sys
import threading
import types
from pathlib import Path

COURSE = Path(__file__).resolve().parent
ENV = "GROWLENGTH_COURSE_IMPL"
LIMIT_ENV = "GROWLENGTH_COURSE_LIMIT_S"


def impl_folder() -> Path:
    """course/<name> for a bare name (exercises, solutions, mutants), else the path as given."""
    choice = os.environ.get(ENV, "exercises").strip() or "exercises"
    folder = COURSE / choice if os.sep not in choice and "/" not in choice else Path(choice)
    if not folder.is_dir():
        raise FileNotFoundError(f"{ENV}={choice!r}: no folder {folder}")
    return folder


def load(name: str):
    """The module `name` (e.g. "lab2_schedule") from the chosen folder, loaded by path so two
    folders' modules of the same name never meet in sys.modules."""
    path = impl_folder() / f"{name}.py"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    key = f"_course_impl_{abs(hash(str(path)))}_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    module = sys.modules[key]
    # A plain namespace of wrapped functions: the module itself stays unwrapped, so the
    # student's functions calling each other are timed once, by the outermost call.
    lab = name.split("_")[0]
    return types.SimpleNamespace(**{
        attr: limited(value, f"{lab[:3]} {lab[3:]}, {attr}") if isinstance(value, types.FunctionType) else value
        for attr, value in vars(module).items() if not attr.startswith("__")})


class ExerciseTimeout(AssertionError):
    """An exercise function that ran past its limit: a failed test, not an error of the tests."""


_EXPIRED = set()   # labels of functions that ran past their limit in this pytest run


def limited(fn, label: str):
    """fn, failing after GROWLENGTH_COURSE_LIMIT_S seconds of one call.

    SIGALRM interrupts a Python loop between bytecodes, which is where an infinite loop in an
    exercise spends its time. Signals reach only the main thread, and only where SIGALRM
    exists (Linux, macOS): elsewhere the call runs unlimited. A deadline already running (a
    nested limited call) is kept, not replaced. Once a function has run past its limit, its
    later calls fail at once: ten tests of one endless function cost one limit, not ten."""
    seconds = float(os.environ.get(LIMIT_ENV, "5"))

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if label in _EXPIRED:
            raise ExerciseTimeout(f"{label}: no answer after {seconds:g} s in an earlier test (an infinite loop?)")
        if (not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread()
                or signal.getitimer(signal.ITIMER_REAL)[0] > 0):
            return fn(*args, **kwargs)

        def expire(signum, frame):
            _EXPIRED.add(label)
            raise ExerciseTimeout(f"{label}: no answer after {seconds:g} s (an infinite loop?)")
        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return call
