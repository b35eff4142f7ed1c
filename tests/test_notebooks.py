"""The notebooks' shared frame: the Colab badge and install cell, and the model choice in the setup cell."""
import os
import pathlib
import subprocess
import sys
import types

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
sys.path.insert(0, str(ROOT / "scripts"))
import colab_cells  # noqa: E402


def test_every_notebook_is_in_the_numbered_list():
    """A notebook named outside the NN_name.ipynb pattern would escape every test here."""
    on_disk = sorted(p for p in (ROOT / "notebooks").iterdir() if p.suffix == ".ipynb")
    assert NOTEBOOKS == on_disk and NOTEBOOKS
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(len(NOTEBOOKS))]


def test_colab_badges_and_install_cells_are_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "colab_cells.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_is_skipped_by_nbval_and_only_acts_on_colab(path):
    nb = nbformat.read(path, as_version=4)
    cells = [cell for cell in nb.cells if colab_cells.TAG in cell.metadata.get("tags", [])]
    assert len(cells) == 1
    source = cells[0].source
    assert source.startswith("# NBVAL_SKIP\n")
    assert 'if "google.colab" in sys.modules:' in source
    assert not cells[0].outputs, "the Colab cell must be saved without outputs"
    first_code = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert first_code is cells[0], "the Colab cell must come before any other code"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_setup_cell_picks_the_model_automatically(path):
    nb = nbformat.read(path, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    setup = [cell for cell in code if "\nMODEL = " in "\n" + cell.source]
    if not any("load_model(MODEL" in cell.source for cell in code):   # e.g. 08: no face model, so no MODEL either
        assert setup == [], "a notebook that loads no model names none"
        return
    assert len(setup) == 1, "exactly one setup cell names the model"
    assert '\nMODEL = "auto"' in "\n" + setup[0].source


def test_repository_url_is_checked(monkeypatch, tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n[project.urls]\nRepository = "https://example.org/x"\n')
    monkeypatch.setattr(colab_cells, "ROOT", tmp_path)
    with pytest.raises(ValueError, match="Repository must be https://github.com/OWNER/NAME"):
        colab_cells.repository_url()


class RecordingShell:
    """Stands in for IPython's shell: records the ``!`` and ``%`` lines of a transformed cell instead of running them."""

    def __init__(self):
        self.calls = []

    def system(self, command):
        self.calls.append(("!", command))

    def run_line_magic(self, magic, line):
        self.calls.append((f"%{magic}", line))


def run_install_cell(on_colab: bool, course_dir_exists: bool, monkeypatch) -> list[tuple[str, str]]:
    from IPython.core.inputtransformer2 import TransformerManager

    repository = colab_cells.repository_url()
    source = TransformerManager().transform_cell(colab_cells.INSTALL_CELL.format(
        repository=repository, model_note=colab_cells.MODEL_NOTE))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(os.path, "isdir", lambda path: course_dir_exists)
    shell = RecordingShell()
    exec(source, {"get_ipython": lambda: shell})
    return shell.calls


def test_install_cell_does_nothing_outside_colab(monkeypatch):
    assert run_install_cell(on_colab=False, course_dir_exists=False, monkeypatch=monkeypatch) == []


def test_install_cell_on_colab_clones_installs_and_moves_into_the_notebooks(monkeypatch):
    calls = run_install_cell(on_colab=True, course_dir_exists=False, monkeypatch=monkeypatch)
    assert calls == [("!", f"git clone --quiet --depth 1 {colab_cells.repository_url()} {{COURSE_DIR}}"),
                     ("%pip", "install --quiet {COURSE_DIR}"),
                     ("%cd", "{COURSE_DIR}/notebooks")]


def test_install_cell_run_again_on_colab_only_moves_into_the_notebooks(monkeypatch):
    calls = run_install_cell(on_colab=True, course_dir_exists=True, monkeypatch=monkeypatch)
    assert calls == [("%cd", "{COURSE_DIR}/notebooks")]
