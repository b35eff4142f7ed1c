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
TEXT_STUB = ["YOUR ANSWER HERE"]      # nbgrader's stub for a written (markdown) answer


def stub_for(cell) -> list[str]:
    return STUB if cell.cell_type == "code" else TEXT_STUB
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


def cleared(source: str, stub: list[str] = STUB) -> str:
    """The source with each solution region replaced by the stub, indented like its marker (written here
    independently of nbgrader)."""
    lines = source.split("\n")
    for start, end in reversed(solution_regions(source)):
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
        lines[start:end + 1] = [indent + line for line in stub]
    return "\n".join(lines)


def refilled(student: str, source: str, stub: list[str] = STUB) -> str:
    """The student cell with the source's solution regions put back in place of the stubs."""
    lines, source_lines = student.split("\n"), source.split("\n")
    for start, end in reversed(solution_regions(source)):
        # the stub starts where the region started, shifted by the regions before it
        shift = sum((e - s + 1) - len(stub) for s, e in solution_regions(source) if e < start)
        at = start - shift
        assert [line.strip() for line in lines[at:at + len(stub)]] == stub, f"no stub at line {at} of:\n{student}"
        lines[at:at + len(stub)] = source_lines[start:end + 1]
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
            assert released.source == cleared(original.source, stub_for(original))
            assert refilled(released.source, original.source, stub_for(original)) == original.source
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
            if solution_regions(cell.source) and cell.cell_type == "markdown":   # a written answer, graded by hand
                assert nbgrader.get("solution") is True and nbgrader.get("grade") is True and nbgrader.get(
                    "points", 0) > 0, f"a written answer in {name} is not a manually graded nbgrader cell with points"
            elif solution_regions(cell.source):
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


WITH_EXERCISES = [name for name, path in SOURCES.items()
                  if any(cell.cell_type == "code" and BEGIN in cell.source
                         for cell in nbformat.read(path, as_version=4).cells)]
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
        last = max(i for i, cell in enumerate(notebook.cells)
                   if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade"))
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
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade"):
            graded += 1
            assert errors, f"the check cell of student/{name} passes without a solution:\n{cell.source}"
    assert graded > 0


# ---- what the student sees: the Colab links, the exercises' text, the written questions ----

@pytest.mark.parametrize("name", SOURCES)
def test_the_colab_badge_and_cell_of_a_student_notebook_open_that_student_notebook(name, pairs):
    source, student, _ = pairs[name]
    text = "\n".join(cell.source for cell in student.cells)
    badges = re.findall(r"\(https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[^/\s)]+/([^\s)]+)\)", text)
    assert badges == [f"student/notebooks/{name}"], f"student/{name}: the Colab badge opens {badges}"
    folders = re.findall(r"%cd \{COURSE_DIR\}/(\S+)", text)
    assert folders == ["student/notebooks"], f"student/{name}: the Colab cell moves into {folders}"
    source_text = "\n".join(cell.source for cell in source.cells)
    assert re.findall(r"\(https://colab\.research\.google\.com/github/[^)]*/blob/[^/\s)]+/([^\s)]+)\)", source_text) == [
        f"notebooks/{name}"]


def written_answers(notebook) -> list[tuple[int, nbformat.NotebookNode]]:
    return [(i, cell) for i, cell in enumerate(notebook.cells) if cell.cell_type == "markdown"
            and cell.metadata.get("nbgrader", {}).get("solution") and cell.metadata["nbgrader"].get("grade")]


@pytest.mark.parametrize("name", SOURCES)
def test_every_notebook_asks_a_conceptual_question_before_its_summary(name, pairs):
    source, student, _ = pairs[name]
    summary = next(i for i, cell in enumerate(source.cells) if cell.cell_type == "markdown"
                   and cell.source.startswith("## Summary"))
    concept = [(i, cell) for i, cell in written_answers(source) if cell.metadata["nbgrader"]["grade_id"].startswith(
        "concept_")]
    assert concept, f"{name} has no conceptual question (a manually graded markdown answer cell)"
    for i, cell in concept:
        assert i < summary and "Question" in source.cells[i - 1].source, (
            f"{name}: the answer cell {cell.metadata['nbgrader']['grade_id']} is not right after its question, "
            f"before the Summary")
        assert solution_regions(cell.source) and student.cells[i].source.endswith("YOUR ANSWER HERE")


@pytest.mark.parametrize("name", SOURCES)
def test_the_end_of_notebook_exercises_have_model_answers(name, pairs):
    source, student, _ = pairs[name]
    for i, cell in enumerate(source.cells):
        if cell.cell_type == "markdown" and re.match(r"(## (More )?[Ee]xercises|\*\*Exercises\.\*\*)", cell.source):
            answer = source.cells[i + 1]
            assert answer in [c for _, c in written_answers(source)] and solution_regions(answer.source), (
                f"{name}: the exercises list is not followed by a manually graded answer cell")
            assert "Model answers." in answer.source and "Model answers." not in student.cells[i + 1].source


def test_every_written_answer_has_its_rubric_in_the_instructor_guide(pairs):
    guide = (ROOT / "docs" / "instructor_guide.md").read_text(encoding="utf-8")
    for name, (source, _, _) in pairs.items():
        for _, cell in written_answers(source):
            grade_id, points = cell.metadata["nbgrader"]["grade_id"], cell.metadata["nbgrader"]["points"]
            heading = re.search(rf"^#### .*`{grade_id}` \((\d+) points?\)\n(?P<body>(?:.*\n)+?)(?=####|## )",
                                guide, flags=re.M)
            assert heading, f"docs/instructor_guide.md has no '#### ... `{grade_id}` (N points)' rubric ({name})"
            assert int(heading.group(1)) == points, f"{grade_id}: {points} points in {name}, {heading.group(1)} in the guide"
            rubric = [int(p) for p in re.findall(r"^- \*\*(\d+) points?\*\*", heading.group("body"), flags=re.M)]
            assert sum(rubric) == points, f"{grade_id}: the rubric's points add up to {sum(rubric)}, not {points}"


# the reference expression of each exercise, as fragments written without spaces: none may appear in what the
# student sees of the exercise (its cell outside the solution, its instructions, its check cell)
FORMULAS = {
    "forward_sample": ("sqrt(alpha_bar", "sqrt(1-alpha_bar", ".sqrt()*x0", ".sqrt()*z", "alpha_bar[t].sqrt()",
                       "(1-alpha_bar_t).sqrt()", "alpha_bar_t.sqrt()"),
    "score_from_eps": ("-eps/", "1/sqrt", "sqrt(1-alpha_bar", "(1-alpha_bar_t).sqrt()", "-eps*"),
    "posterior_mean": ("sqrt(alpha_t)", "alpha_t.sqrt()", "sqrt(alpha_bar_prev)", "alpha_bar_prev.sqrt()",
                       "alpha_bar_t/alpha_bar_prev", "(1-alpha_bar_prev)/(1-alpha_bar_t)", "/(1-alpha_bar_t)"),
    "x0_hat_from_score": ("(1-alpha_bar_t)*score", "(1-alpha_bar_t)score", "/sqrt(alpha_bar", "/alpha_bar_t.sqrt()",
                          "1/sqrt", "x_t+(1-alpha_bar"),
    "ddpm_step_mine": ("alpha_bar_t/alpha_bar_prev", "sqrt(alpha_t)", "alpha_t.sqrt()", "sqrt(beta", ".sqrt()*z",
                       "(1-alpha_bar_prev)/(1-alpha_bar_t)", "clamp(-1,1)"),
    "sdedit_start": ("sqrt(alpha_bar", "sqrt(1-alpha_bar", ".sqrt()*y", ".sqrt()*z", "alpha_bar[t_start].sqrt()"),
    "score_ald_update": ("2A^H", "2*op.A_adjoint", "sigma_y^2+gamma_t^2", "sigma_y**2+gamma_t**2", "A^H(Ax_t-y)",
                         "1/(sigma_y"),
    "dps_update": ("zeta_t/(2", "(2sigma_y^2)", "2*sigma_y**2", "zeta_t/2"),
    "mixture_score": ("sqrt(a)m_k", "aC_k+(1-a)I", "alpha_bar_t.sqrt()*means", "alpha_bar_t*covs",
                      "(1-alpha_bar_t)*torch.eye", "Sigma^{-1}(x_t-mu", "Sigma_k^{-1}(x_t"),
    "component_posterior": ("CA^TS^{-1}", "ACA^T+sigma_y^2", "G(y-Am)", "C-GAC", "cov@A.T", "A@cov",
                            "@torch.linalg.inv(S)"),
    "training_loss": ("sqrt(alpha_bar", "sqrt(1-alpha_bar", ".sqrt()*x0", "(1-a).sqrt()", "(eps-eps_model",
                      "meanof(eps-", "eps_model(x_t,t))^2"),
    "ema_update": ("decay*ema+(1-decay)", "(1-decay)*theta", "(1-decay)*(ema-theta)", "ema-(1-decay)"),
}


def squeezed(text: str) -> str:
    return re.sub(r"\s+", "", text)


def exercises_of(notebook) -> dict[str, tuple[int, list[str]]]:
    """Each exercise function -> (index of its cell, the texts a student sees of it: the cell, the instructions at
    the end of the markdown cell before it from its 'Exercise' heading on, and its check cell)."""
    found = {}
    for i, cell in enumerate(notebook.cells):
        match = re.search(r"^def (\w+)\(", cell.source, flags=re.M)
        if cell.cell_type != "code" or not cell.metadata.get("nbgrader", {}).get("solution") or not match:
            continue
        texts = [cell.source]
        previous = notebook.cells[i - 1]
        if previous.cell_type == "markdown" and "Exercise" in previous.source:
            texts.append(previous.source[previous.source.rindex("Exercise"):])
        check = next(c for c in notebook.cells[i + 1:] if c.metadata.get("nbgrader", {}).get("grade"))
        texts.append(check.source)
        found[match.group(1)] = (i, texts)
    return found


@pytest.mark.parametrize("name", WITH_EXERCISES)
def test_what_the_student_sees_of_an_exercise_does_not_spell_out_its_formula(name, pairs):
    source, student, _ = pairs[name]
    for function, (i, texts) in exercises_of(student).items():
        assert function in FORMULAS, f"{name}: no formula fragments listed for the exercise {function}"
        fragments = FORMULAS[function]
        # the fragments are the reference expression: the source's solution region contains at least one of them
        lines = source.cells[i].source.split("\n")
        solution = squeezed("\n".join("\n".join(lines[start:end + 1])
                                      for start, end in solution_regions(source.cells[i].source)))
        assert any(fragment in solution for fragment in fragments), (
            f"{name}: none of {function}'s formula fragments is in its solution; update FORMULAS")
        for text in texts:
            shown = [fragment for fragment in fragments if fragment in squeezed(text)]
            assert not shown, f"student/{name}: what the student sees of {function} contains {shown}:\n{text}"
