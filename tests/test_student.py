"""The student version (scripts/make_student.py, `make student`): up to date, valid, free of solutions, unchanged
elsewhere, and failing its checks with NotImplementedError when run as it is.

Test (a) of the teaching version is here; (b) and (c) are in test_exercises.py (the notebooks' own solutions pass
every check, wrong ones fail with their message) and in the round trip below (the student version with the
solutions put back is the source notebook, which nbval runs in full).
"""
from __future__ import annotations

import importlib.util
import inspect
import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient
from nbgrader.nbgraderformat import MetadataValidator

from helpers import exercises

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_student", ROOT / "scripts" / "make_student.py")
make_student = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_student)

SOURCES = {path.name: path for path in make_student.source_notebooks()}
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = make_student.CODE_STUB.split("\n")
CHECK_CALL = re.compile(r"exercises\.(check_\w+)\((\w+)")


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[nbformat.NotebookNode, nbformat.NotebookNode, str]]:
    """Every notebook: (source, freshly generated student version, its text)."""
    exporter = make_student.student_exporter()
    result = {}
    for name, path in SOURCES.items():
        text = make_student.student_version(path, exporter)
        result[name] = (nbformat.read(path, as_version=4), nbformat.reads(text, as_version=4), text)
    return result


def solution_regions(source: str) -> list[tuple[int, int]]:
    """(first, last) line numbers of each solution region, markers included."""
    lines, regions, start = source.split("\n"), [], None
    for i, line in enumerate(lines):
        if BEGIN in line:
            assert start is None, f"nested {BEGIN} in:\n{source}"
            start = i
        elif END in line:
            assert start is not None, f"{END} without {BEGIN} in:\n{source}"
            regions.append((start, i))
            start = None
    assert start is None, f"{BEGIN} without {END} in:\n{source}"
    return regions


def cleared(source: str) -> str:
    """The source with each solution region replaced by the stub, indented like its marker (written here
    independently of nbgrader)."""
    lines = source.split("\n")
    for start, end in reversed(solution_regions(source)):
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
        lines[start:end + 1] = [indent + stub for stub in STUB]
    return "\n".join(lines)


def refilled(student: str, source: str) -> str:
    """The student cell with the source's solution regions put back in place of the stubs."""
    lines, source_lines = student.split("\n"), source.split("\n")
    for start, end in reversed(solution_regions(source)):
        # the stub starts where the region started, shifted by the regions before it
        shift = sum((e - s + 1) - len(STUB) for s, e in solution_regions(source) if e < start)
        at = start - shift
        assert [line.strip() for line in lines[at:at + len(STUB)]] == STUB, f"no stub at line {at} of:\n{student}"
        lines[at:at + len(STUB)] = source_lines[start:end + 1]
    return "\n".join(lines)


def test_the_committed_student_notebooks_are_up_to_date(pairs):
    folder = make_student.STUDENT_DIR
    stale = [name for name, (_, _, text) in pairs.items()
             if not (folder / name).is_file() or (folder / name).read_text(encoding="utf-8") != text]
    extra = sorted(path.name for path in folder.glob("*.ipynb") if path.name not in SOURCES)
    assert not stale and not extra, (f"student/notebooks is out of date (differs: {stale}; no source: {extra}). "
                                     f"Run `make student` and commit student/.")


@pytest.mark.parametrize("name", SOURCES)
def test_a_student_notebook_is_valid_for_nbformat_and_nbgrader(name, pairs):
    _, student, _ = pairs[name]
    nbformat.validate(student)
    MetadataValidator().validate_nb(student)


@pytest.mark.parametrize("name", SOURCES)
def test_no_solution_line_is_left(name, pairs):
    source, student, text = pairs[name]
    assert BEGIN not in text and END not in text
    outside, inside = set(), set()
    for cell in source.cells:
        lines, regions = cell.source.split("\n"), solution_regions(cell.source)
        in_region = {i for start, end in regions for i in range(start, end + 1)}
        for i, line in enumerate(lines):
            (inside if i in in_region else outside).add(line.strip())
    solution_lines = {line for line in inside - outside if len(line) >= 8 and line not in (BEGIN, END)}
    student_lines = {line.strip() for cell in student.cells for line in cell.source.split("\n")}
    assert not solution_lines & student_lines, f"solution lines left in student/{name}"
    if any(solution_regions(cell.source) for cell in source.cells):
        assert solution_lines, f"{name} has solution regions but no solution line to look for"


@pytest.mark.parametrize("name", SOURCES)
def test_only_solutions_outputs_and_paths_change_and_the_solutions_round_trip(name, pairs):
    source, student, _ = pairs[name]
    assert [(c.get("id"), c.cell_type) for c in student.cells] == [(c.get("id"), c.cell_type) for c in source.cells]
    moved = 0
    for original, released in zip(source.cells, student.cells):
        if solution_regions(original.source):
            assert released.source == cleared(original.source)
            assert refilled(released.source, original.source) == original.source
        elif released.source != original.source:
            moved += 1   # the Colab badge and the Colab cell now point at student/notebooks
            assert "student/notebooks" in released.source
            assert released.source.replace("student/notebooks", "notebooks") == original.source
        if released.cell_type == "code":
            assert released.outputs == [] and released.execution_count is None
        kept = {key: value for key, value in original.metadata.items()
                if key not in ("execution", "ExecuteTime", "collapsed", "scrolled")}
        locks = {key: released.metadata[key] for key in ("deletable", "editable") if key in released.metadata}
        assert dict(released.metadata) == {**kept, **locks}
    assert moved <= 2
    assert "widgets" not in student.metadata and student.metadata.get("language_info") == source.metadata.get(
        "language_info")


def test_every_exercise_is_an_nbgrader_solution_with_a_hint_and_a_graded_check(pairs):
    calls = {}
    for name, (source, _, _) in pairs.items():
        defined_before = []
        for cell in source.cells:
            nbgrader = cell.metadata.get("nbgrader", {})
            if solution_regions(cell.source):
                assert nbgrader.get("solution") is True, f"a solution region outside a solution cell in {name}"
                lines = cell.source.split("\n")
                for start, _ in solution_regions(cell.source):
                    assert lines[start - 1].lstrip().startswith("#") and "Hint:" in "\n".join(lines[:start]), (
                        f"no '# Hint:' comment just above {BEGIN} in {name}")
                defined_before += re.findall(r"^def (\w+)\(", cell.source, flags=re.M)
            for check, function in CHECK_CALL.findall(cell.source):
                assert nbgrader.get("grade") is True and nbgrader.get("locked") is True and nbgrader.get("points", 0) > 0, (
                    f"the cell calling exercises.{check} in {name} is not a locked, graded nbgrader cell")
                assert function in defined_before, f"exercises.{check}({function}) in {name} comes before the exercise"
                calls[check] = name
    checks_in_helpers = {name for name, _ in inspect.getmembers(exercises, inspect.isfunction)
                         if name.startswith("check_")}
    assert set(calls) == checks_in_helpers, "every check in helpers.exercises is called once, after its exercise"


WITH_EXERCISES = [name for name, path in SOURCES.items() if BEGIN in path.read_text(encoding="utf-8")]
# between two notebooks in the shared kernel: a clean namespace (imported modules stay loaded), no open figures
RESET = "%reset -f\nimport matplotlib.pyplot\nmatplotlib.pyplot.close('all')"


@pytest.fixture(scope="module")
def executed() -> dict[str, list[nbformat.NotebookNode]]:
    """Each student notebook with exercises, run from the top to its last graded cell as a learner would, errors
    allowed, in student/notebooks; the Colab-only cell (skipped by nbval too) is left out. One kernel runs them all,
    one after the other with the namespace reset in between, so that torch and diffusers are imported only once."""
    run = nbformat.v4.new_notebook()
    spans = {}
    for name in WITH_EXERCISES:
        notebook = nbformat.read(make_student.STUDENT_DIR / name, as_version=4)
        last = max(i for i, cell in enumerate(notebook.cells) if cell.metadata.get("nbgrader", {}).get("grade"))
        cells = [cell for cell in notebook.cells[:last + 1]
                 if "colab" not in cell.metadata.get("tags", []) and "# NBVAL_SKIP" not in cell.source]
        run.cells.append(nbformat.v4.new_code_cell(RESET))
        spans[name] = (len(run.cells), len(run.cells) + len(cells))
        run.cells.extend(cells)
    NotebookClient(run, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(make_student.STUDENT_DIR)}}).execute()
    return {name: run.cells[start:end] for name, (start, end) in spans.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", WITH_EXERCISES)
def test_a_student_notebook_fails_its_checks_with_not_implemented_error(name, executed):
    graded = 0
    for cell in executed[name]:
        errors = [output for output in cell.get("outputs", []) if output.output_type == "error"]
        assert all(error.ename == "NotImplementedError" for error in errors), (
            f"a cell of student/{name} fails with something else than the unfilled exercise:\n{cell.source}\n"
            + "\n".join(f"{error.ename}: {error.evalue}" for error in errors))
        if cell.metadata.get("nbgrader", {}).get("grade"):
            graded += 1
            assert errors, f"the check cell of student/{name} passes without a solution:\n{cell.source}"
    assert graded > 0
