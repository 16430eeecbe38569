"""The course in course/ (issue 21) is checked here, so that it cannot drift from the code:

- its exercise tests pass on course/solutions/, every one of them fails on the stubs in
  course/exercises/ (no test passes whatever the student writes), and each deliberately
  wrong function in course/mutants/ is caught by at least one test named after it;
- every exercise test has a time limit: functions that never return fail every test in
  seconds, each failure naming the lab and the function (course/adapters.py:limited);
- every reading reference "`file.py:Name` (N lines)" in the labs and teacher's notes names a
  function or class that exists in that file with exactly N lines;
- every command in the labs' code blocks uses only flags the script's --help lists, and none
  needs data preparation by hand or the parts of the code a restructure may move.

The course tests run in a subprocess (they are not collected here: testpaths = tests), once per
implementation folder, chosen with GROWLENGTH_COURSE_IMPL (course/adapters.py).
"""
import ast
import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "course"
LABS = sorted(COURSE.glob("lab[1-6]-*.md"))
DOCS = LABS + [COURSE / "README.md"] + sorted((COURSE / "teacher").glob("*.md"))
EXERCISES = sorted((COURSE / "exercises").glob("lab*.py"))

# `schedule.py:Plan.make` (27 lines)
REFERENCE = re.compile(r"`([\w/]+\.py):([\w.]+)` \((\d+) lines?\)")
# What the restructure (issue 17) keeps under these names; nothing else of train.py is cited.
TRAIN_NAMES = {"TrainState", "build", "train_step", "set_lr", "evaluate", "train", "train_loop", "finish"}
DATA_NAMES = {"TokenData", "ByteTokenizer", "token_dtype"}


# ----------------------------------------------------------------------------- the exercise tests

def run_course_tests(impls, tmp_path_factory) -> dict:
    """Run course/'s tests against each implementation folder, all at once (each is one mostly
    single-threaded process) -> {impl: {test id: passed|failed|skipped}}, and for the failures
    {impl: {test id: failure message}} under the key (impl, "messages"). impls: folder names
    under course/, or (label, folder path, extra environment)."""
    procs = {}
    for impl in impls:
        impl, folder, extra = impl if isinstance(impl, tuple) else (impl, impl, {})
        xml = tmp_path_factory.mktemp(impl) / "junit.xml"
        env = dict(os.environ, GROWLENGTH_COURSE_IMPL=str(folder), OMP_NUM_THREADS="1", **extra)
        procs[impl] = xml, subprocess.Popen(
            [sys.executable, "-m", "pytest", "course/", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
             f"--junitxml={xml}"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results = {}
    for impl, (xml, proc) in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert xml.exists(), f"{impl}: {out[-3000:]}"
        outcomes, messages = {}, {}
        for case in ET.parse(xml).iter("testcase"):
            kinds = {child.tag for child in case}
            outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
            test_id = f"{case.get('classname')}::{case.get('name')}"
            outcomes[test_id] = outcome
            messages[test_id] = " ".join(child.get("message") or "" for child in case)
        assert outcomes, f"no course test ran for {impl}:\n{out[-3000:]}"
        results[impl], results[impl, "messages"] = outcomes, messages
    return results


def endless_folder(path: Path) -> Path:
    """A folder of exercise modules whose every function loops forever (a student's bug). The
    loop sleeps so that ~100 timed-out tests cost no CPU; a loop that only computes is
    interrupted the same way (course/adapters.py:limited)."""
    path.mkdir()
    for stub in EXERCISES:
        body = "".join(f"\n\ndef {name}(*args, **kwargs):\n    while True:\n        time.sleep(0.01)\n"
                       for name in functions(stub))
        (path / stub.name).write_text(f'"""{stub.name}: no function ever returns."""\nimport time\n' + body)
    return path


@pytest.fixture(scope="module")
def course_runs(tmp_path_factory):
    # 0.3 s per call: the endless run fails its ~90 tests in well under a minute.
    endless = ("endless", endless_folder(tmp_path_factory.mktemp("course") / "endless"),
               {"GROWLENGTH_COURSE_LIMIT_S": "0.3"})
    return run_course_tests(["solutions", "exercises", "mutants", endless], tmp_path_factory)


@pytest.fixture(scope="module")
def solutions(course_runs):
    return course_runs["solutions"]


@pytest.fixture(scope="module")
def stubs(course_runs):
    return course_runs["exercises"]


@pytest.fixture(scope="module")
def mutants(course_runs):
    return course_runs["mutants"]


@pytest.fixture(scope="module")
def endless(course_runs):
    return course_runs["endless"], course_runs["endless", "messages"]


def functions(path: Path) -> dict:
    """Top-level functions of a file -> their argument names."""
    tree = ast.parse(path.read_text())
    return {n.name: [a.arg for a in n.args.args] for n in tree.body if isinstance(n, ast.FunctionDef)}


def lab_of(test_id: str) -> str:
    return re.search(r"test_(lab\d)", test_id).group(1)


def test_there_is_one_exercise_module_per_lab():
    assert [p.name[:4] for p in EXERCISES] == [f"lab{i}" for i in range(1, 7)]
    for stub in EXERCISES:
        for folder in ("solutions", "mutants"):
            other = COURSE / folder / stub.name
            assert other.exists(), other
        assert functions(COURSE / "solutions" / stub.name) == functions(stub), stub.name
        assert (COURSE / f"test_{stub.name[:4]}.py").exists()


def test_every_exercise_function_has_tests(solutions):
    for stub in EXERCISES:
        for name in functions(stub):
            named = [t for t in solutions if lab_of(t) == stub.name[:4] and f"test_{name}" in t]
            assert named, f"no test in course/test_{stub.name[:4]}.py is named after {name}"


def test_solutions_pass_every_course_test(solutions):
    failed = [t for t, outcome in solutions.items() if outcome != "passed"]
    assert not failed, failed
    assert {lab_of(t) for t in solutions} == {f"lab{i}" for i in range(1, 7)}


def test_every_course_test_fails_on_the_stubs(solutions, stubs):
    assert set(stubs) == set(solutions)
    passed = [t for t, outcome in stubs.items() if outcome != "failed"]
    assert not passed, f"these pass (or skip) on the unfilled stubs: {passed}"


def test_every_course_test_has_a_time_limit(solutions, endless):
    outcomes, messages = endless
    assert set(outcomes) == set(solutions)
    for test_id, outcome in outcomes.items():
        lab = lab_of(test_id)
        assert outcome == "failed", f"{test_id} passes with functions that never return"
        assert f"lab {lab[3:]}, " in messages[test_id] and "no answer after 0.3 s" in messages[test_id], \
            f"{test_id}: the failure does not name the lab and the function that hung: {messages[test_id]!r}"


def test_a_loop_that_only_computes_is_stopped(monkeypatch):
    from course.adapters import ExerciseTimeout, limited
    monkeypatch.setenv("GROWLENGTH_COURSE_LIMIT_S", "0.2")

    def spin():
        n = 0
        while True:
            n += 1
    with pytest.raises(ExerciseTimeout, match=r"lab 9, spin: no answer after 0.2 s"):
        limited(spin, "lab 9, spin")()


def test_every_wrong_function_is_caught(solutions, mutants):
    assert set(mutants) == set(solutions)
    for path in sorted((COURSE / "mutants").glob("lab*.py")):
        tree = ast.parse(path.read_text())
        mutated = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                       and any(getattr(t, "id", None) == "MUTATED" for t in n.targets))
        assert set(mutated) == set(functions(COURSE / "exercises" / path.name)), path.name
        for name in mutated:
            caught = [t for t, outcome in mutants.items()
                      if lab_of(t) == path.name[:4] and f"test_{name}" in t and outcome == "failed"]
            assert caught, f"course/mutants/{path.name}: the wrong {name} passes every test named after it"


# ----------------------------------------------------------------------------- reading references

def definitions(path: Path) -> dict:
    """'Name' and 'Class.method' -> line count (decorators included) of every def and class."""
    out = {}

    def walk(body, prefix):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                out[prefix + node.name] = node.end_lineno - first + 1
                if isinstance(node, ast.ClassDef):
                    walk(node.body, prefix + node.name + ".")
    walk(ast.parse(path.read_text()).body, "")
    return out


def references():
    for doc in DOCS:
        for file, name, n in REFERENCE.findall(doc.read_text()):
            yield doc.relative_to(ROOT), file, name, int(n)


def test_every_lab_cites_the_code():
    assert len(LABS) == 6, LABS
    for lab in LABS:
        assert REFERENCE.search(lab.read_text()), f"{lab.name} has no `file.py:name` (N lines) reference"


def test_reading_references_match_the_code():
    wrong = []
    for doc, file, name, n in references():
        path = ROOT / file
        if not path.exists():
            wrong.append(f"{doc}: {file} does not exist")
            continue
        found = definitions(path).get(name)
        if found is None:
            wrong.append(f"{doc}: {file} has no {name}")
        elif found != n:
            wrong.append(f"{doc}: `{file}:{name}` is {found} lines, not {n}")
    assert not wrong, "\n".join(wrong)


def test_references_cite_only_what_the_restructure_keeps():
    for doc, file, name, _ in references():
        assert file != "cli.py", f"{doc}: cites cli.py, which moves to harness/"
        if file == "train.py":
            assert name.split(".")[0] in TRAIN_NAMES, f"{doc}: train.py:{name} may not survive issue 17"
        if file == "data.py":
            assert name.split(".")[0] in DATA_NAMES, f"{doc}: data.py:{name} moves to prepare.py"


# ----------------------------------------------------------------------------- the labs' commands

def commands():
    """(lab, tokens) of every `python X.py ...` line in the labs' and README's code blocks."""
    for doc in LABS + [COURSE / "README.md"]:
        blocks = re.findall(r"```[a-z]*\n(.*?)```", doc.read_text(), flags=re.S)
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                try:
                    tokens = shlex.split(line, comments=True)
                except ValueError:
                    continue
                while tokens and (re.fullmatch(r"\w+=\S*", tokens[0]) or tokens[0] in ("time", "$")):
                    tokens = tokens[1:]
                if tokens[:3] == ["nice", "-n", "10"]:
                    tokens = tokens[3:]
                if len(tokens) >= 2 and tokens[0] == "python" and tokens[1].endswith(".py"):
                    yield doc.name, tokens[1:]


def help_texts(keys) -> dict:
    """(script, subcommand or None) -> its --help text; the scripts start (import torch) at once."""
    procs = {key: subprocess.Popen([sys.executable, key[0]] + ([key[1]] if key[1] else []) + ["--help"],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for key in keys}
    texts = {}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{key}: {err[-2000:]}"
        texts[key] = out
    return texts


def test_lab_commands_use_flags_that_exist():
    found = list(commands())
    assert {doc for doc, _ in found} >= {lab.name for lab in LABS if not lab.name.startswith("lab4")}
    for doc, tokens in found:
        assert tokens[0] not in ("data.py", "prepare.py", "cli.py"), f"{doc}: {' '.join(tokens)}"
        assert (ROOT / tokens[0]).exists(), f"{doc}: no {tokens[0]}"
    key_of = lambda tokens: (tokens[0], tokens[1] if tokens[0] == "bench.py" else None)
    helps = help_texts({key_of(tokens) for _, tokens in found})
    for doc, tokens in found:
        script, sub = key = key_of(tokens)
        for flag in (t.split("=")[0] for t in tokens if t.startswith("--")):
            assert re.search(rf"(^|\s|\[){re.escape(flag)}(?![\w-])", helps[key]), \
                f"{doc}: `python {' '.join(tokens)}` uses {flag}, which {script} {sub or ''} --help does not list"
