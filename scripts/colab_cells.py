"""Write the "Open in Colab" badge and the Colab-only install cell into every notebook.

Both come from one place, the ``Repository`` URL in ``pyproject.toml``'s ``[project.urls]``: a fork that publishes
the course elsewhere changes that line and runs ``make colab``. The badge goes on the line under each notebook's
title; the install cell is the notebook's first code cell, tagged ``colab`` and marked ``# NBVAL_SKIP`` so that
nbval never runs it. Outside Colab the cell does nothing.

    python scripts/colab_cells.py          # rewrite the notebooks where they differ
    python scripts/colab_cells.py --check  # exit 1 and name the notebooks that differ (tests/test_notebooks.py)
"""
from __future__ import annotations

import argparse
import pathlib
import re
import sys
import tomllib

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TAG = "colab"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_PATTERN = re.compile(r"^\[!\[Open In Colab\]\(.*\)\]\(.*\)$", re.MULTILINE)

INSTALL_CELL = """\
# NBVAL_SKIP
# Google Colab only (elsewhere this cell does nothing): fetch the course, install its `helpers` package and move
# into this notebook's folder, as on your own machine. {model_note}
import os
import sys

if "google.colab" in sys.modules:
    COURSE_DIR = "/content/diffusion-inverse-course"
    if not os.path.isdir(COURSE_DIR):
        !git clone --quiet --depth 1 {repository} {{COURSE_DIR}}
        %pip install --quiet {{COURSE_DIR}}
    %cd {{COURSE_DIR}}/notebooks"""


# What the install cell says about the model: notebooks whose setup cell loads MODEL, and those that do not.
MODEL_NOTE = ("For the paper's 256x256 models pick a GPU first\n"
              "# (Runtime > Change runtime type > T4 GPU): the setup cell's MODEL = \"auto\" then loads \"ffhq256\", "
              "downloaded once.")
NO_MODEL_NOTE = "This notebook needs no GPU: it works with the\n# embedded 32x32 model, which comes with the course."


def repository_url() -> str:
    """The course's public repository, from ``pyproject.toml`` (``[project.urls] Repository``)."""
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("urls", {})
    url = urls.get("Repository", "")
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)(\.git)?", url)
    if not match:
        raise ValueError(f"pyproject.toml [project.urls] Repository must be https://github.com/OWNER/NAME "
                         f"(Colab opens notebooks from GitHub); got {url!r}.")
    return f"https://github.com/{match.group(1)}"


def badge(repository: str, notebook: pathlib.Path) -> str:
    slug = repository.removeprefix("https://github.com/")
    target = f"https://colab.research.google.com/github/{slug}/blob/main/notebooks/{notebook.name}"
    return f"[![Open In Colab]({BADGE_IMAGE})]({target})"


def with_colab_cells(nb: nbformat.NotebookNode, notebook: pathlib.Path, repository: str) -> nbformat.NotebookNode:
    """``nb`` with the badge under its title and the install cell first among its code cells (idempotent)."""
    title = nb.cells[0]
    if title.cell_type != "markdown" or not title.source.startswith("# "):
        raise ValueError(f"{notebook.name}: the first cell must be the markdown title ('# NN · ...').")
    lines = BADGE_PATTERN.sub("", title.source).split("\n")
    body = "\n".join(lines[1:]).lstrip("\n")
    title.source = f"{lines[0]}\n\n{badge(repository, notebook)}\n\n{body}"

    loads_model = any("load_model(MODEL" in cell.source for cell in nb.cells if cell.cell_type == "code")
    source = INSTALL_CELL.format(repository=repository, model_note=MODEL_NOTE if loads_model else NO_MODEL_NOTE)
    existing = [i for i, cell in enumerate(nb.cells) if TAG in cell.get("metadata", {}).get("tags", [])]
    if len(existing) > 1:
        raise ValueError(f"{notebook.name}: {len(existing)} cells are tagged {TAG!r}; expected at most one.")
    if existing:
        cell = nb.cells[existing[0]]
        if cell.source != source:
            cell.source = source
            cell.outputs, cell.execution_count = [], None
    else:
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": [TAG]})
        nb.cells.insert(1, cell)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks that differ; exit 1 if any")
    args = parser.parse_args(argv)
    repository = repository_url()
    differ = []
    for path in NOTEBOOKS:
        before = path.read_text()
        nb = with_colab_cells(nbformat.reads(before, as_version=4), path, repository)
        after = nbformat.writes(nb) + "\n"
        if after != before:
            differ.append(path.name)
            if not args.check:
                path.write_text(after)
    verb = "differ from" if args.check else "rewritten with"
    print(f"{len(differ)} of {len(NOTEBOOKS)} notebooks {verb} the Colab badge and install cell for {repository}"
          + (f": {', '.join(differ)}" if differ else ""))
    return 1 if args.check and differ else 0


if __name__ == "__main__":
    sys.exit(main())
