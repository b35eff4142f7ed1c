"""Generate the student version of the notebooks: solutions replaced by a stub, outputs cleared, the rest unchanged.

    python scripts/make_student.py                    # notebooks/NN_*.ipynb -> student/notebooks/NN_*.ipynb
    python scripts/make_student.py --check            # regenerate in memory; exit 1 if student/ is out of date (CI)
    python scripts/make_student.py notebooks/03_single_step_denoising.ipynb --out /tmp/release

The work is done by nbgrader's own preprocessors, in the order ``nbgrader generate_assignment`` runs them, driven
through nbconvert's ``NotebookExporter``:

(1) ``CheckCellMetadata``: every solution and check cell carries valid nbgrader metadata (unique ``grade_id``,
    ``points`` on check cells), so the same notebooks work with nbgrader's autograder;
(2) ``LockCells``: check cells become read-only and undeletable, solution cells undeletable;
(3) ``ClearSolutions``: every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region becomes
    ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` (nbgrader's convention). The per-exercise hint is the
    ``# Hint:`` comment written just above ``### BEGIN SOLUTION`` in the source notebook, which survives;
(4) ``ClearOutput``: outputs, execution counts and execution timestamps removed;
then nbconvert's ``ClearMetadataPreprocessor`` drops the notebook-level widget state (it belongs to the cleared
outputs), and :class:`StudentPaths` points the "Open in Colab" badge and the Colab cell's ``%cd`` at
``student/notebooks``. Cell ids, cell metadata and every other cell stay as they are.

Without nbgrader's database this makes the release version only; an instructor who grades with nbgrader runs
``nbgrader generate_assignment`` on the source notebooks instead (docs/instructor_guide.md).
"""
from __future__ import annotations

import argparse
import pathlib
import re
import sys

import nbformat
from nbconvert.exporters import NotebookExporter
from nbconvert.preprocessors import ClearMetadataPreprocessor, Preprocessor
from nbgrader.preprocessors import CheckCellMetadata, ClearOutput, ClearSolutions, LockCells

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE_DIR = ROOT / "notebooks"
STUDENT_DIR = ROOT / "student" / "notebooks"
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
NOTEBOOK_METADATA_KEPT = {("jupytext",), ("kernelspec",), ("language_info",)}


class StudentPaths(Preprocessor):
    """Point the Colab badge (``.../blob/<branch>/notebooks/NN.ipynb``) and the Colab cell's ``%cd
    {COURSE_DIR}/notebooks`` at ``student/notebooks``, so that Colab opens and runs the student version."""

    def preprocess_cell(self, cell, resources, index):
        cell.source = re.sub(r"(colab\.research\.google\.com/github/[^\s)]*?/blob/[^/\s)]+/)notebooks/",
                             r"\1student/notebooks/", cell.source)
        cell.source = re.sub(r"(%cd \{COURSE_DIR\})/notebooks\b", r"\1/student/notebooks", cell.source)
        return cell, resources


def student_exporter() -> NotebookExporter:
    """nbconvert's notebook exporter with nbgrader's release preprocessors (see the module docstring)."""
    exporter = NotebookExporter()
    for preprocessor in (
        CheckCellMetadata(),
        LockCells(),
        ClearSolutions(code_stub={"python": CODE_STUB}, enforce_metadata=True),
        ClearOutput(remove_metadata_fields={"collapsed", "scrolled", "execution", "ExecuteTime"}),
        ClearMetadataPreprocessor(clear_cell_metadata=False, clear_notebook_metadata=True,
                                  preserve_nb_metadata_mask=NOTEBOOK_METADATA_KEPT),
        StudentPaths(),
    ):
        exporter.register_preprocessor(preprocessor, enabled=True)
    return exporter


def student_version(source: str | pathlib.Path, exporter: NotebookExporter | None = None) -> str:
    """The student version of the notebook at ``source``, as the text of an .ipynb file."""
    exporter = exporter or student_exporter()
    notebook = nbformat.read(source, as_version=4)
    text, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"path": str(pathlib.Path(source).parent)}})
    return text


def source_notebooks() -> list[pathlib.Path]:
    return sorted(SOURCE_DIR.glob("[0-9][0-9]_*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=pathlib.Path,
                        help="source notebooks (default: every notebooks/NN_*.ipynb)")
    parser.add_argument("--out", type=pathlib.Path, default=STUDENT_DIR, help=f"output folder (default: {STUDENT_DIR})")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a file in --out differs from what would be written")
    args = parser.parse_args(argv)
    sources = args.notebooks or source_notebooks()
    missing = [str(path) for path in sources if not path.is_file()]
    if missing:
        parser.error(f"notebooks must be existing .ipynb files; not found: {', '.join(missing)}")
    exporter = student_exporter()
    stale = []
    for source in sources:
        target = args.out / source.name
        text = student_version(source, exporter)
        if args.check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(str(target))
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"{source} -> {target}")
    if args.check:
        expected = {source.name for source in sources}
        extra = [] if args.notebooks else sorted(str(path) for path in args.out.glob("*.ipynb")
                                                 if path.name not in expected)
        if stale or extra:
            print("the student notebooks are out of date: " + ", ".join(stale + [f"{name} (no source)" for name in extra])
                  + ". Run `make student` and commit student/.", file=sys.stderr)
            return 1
        print(f"{len(sources)} student notebooks in {args.out} are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
