"""Which implementation of the exercises the course tests run against.

    pytest course/ -k lab2                                         # your files: course/exercises/
    GROWLENGTH_COURSE_IMPL=solutions pytest course/ -k lab2        # the reference solutions
    GROWLENGTH_COURSE_IMPL=/path/to/my_folder pytest course/       # any folder of labN_*.py files

The tests never import course/exercises/ directly: they ask `load("lab2_schedule")`, so the
same tests check the stub (where they must fail), the solution (where they must pass) and
the deliberately wrong versions in course/mutants/ (where at least one must fail per
function) -- tests/test_course.py runs all three.
"""
import importlib.util
import os
import sys
from pathlib import Path

COURSE = Path(__file__).resolve().parent
ENV = "GROWLENGTH_COURSE_IMPL"


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
    return sys.modules[key]
