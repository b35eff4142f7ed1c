"""pyproject.toml and environment.yml agree; the built wheel holds the package and the embedded weights."""
import pathlib
import re
import subprocess
import sys
import tomllib
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def requirement_key(requirement: str) -> tuple[str, str]:
    """``"Scikit_Image >= 0.21"`` -> ``("scikit-image", ">=0.21")`` (PEP 503 name, specifier without spaces)."""
    match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)", requirement.strip())
    assert match, f"cannot parse requirement {requirement!r}"
    name, specifier = match.groups()
    return re.sub(r"[-_.]+", "-", name).lower(), specifier.replace(" ", "")


def pip_section(environment_yml: str) -> list[str]:
    """The items of the ``- pip:`` list of a conda environment file (enough YAML for that one list)."""
    lines = environment_yml.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    indent = len(lines[start]) - len(lines[start].lstrip())
    items = []
    for line in lines[start + 1:]:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if len(line) - len(line.lstrip()) <= indent:
            break
        assert line.strip().startswith("- "), f"unexpected line in the pip section: {line!r}"
        items.append(line.strip()[2:].split(" #")[0].strip())
    return items


def test_environment_yml_pins_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pyproject = project["dependencies"] + extras["lab"] + extras["dev"]
    conda = [item for item in pip_section((ROOT / "environment.yml").read_text()) if not item.startswith("-e ")]
    assert len(pyproject) == len(set(map(requirement_key, pyproject))), "duplicate in pyproject.toml"
    assert len(conda) == len(set(map(requirement_key, conda))), "duplicate in environment.yml"
    assert sorted(map(requirement_key, conda)) == sorted(map(requirement_key, pyproject))


def test_environment_yml_installs_the_package_itself():
    assert "-e ." in pip_section((ROOT / "environment.yml").read_text())


@pytest.mark.slow
def test_the_built_wheel_holds_the_package_and_the_embedded_weights(tmp_path):
    """Build the wheel offline (pip, no dependencies, no build isolation) and look inside: every module of helpers/ and
    every file of helpers/weights/faces32, byte for byte."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, cwd=tmp_path, capture_output=True)
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        weights = sorted(p for p in (ROOT / "helpers" / "weights" / "faces32").iterdir() if p.is_file())
        assert weights
        for path in weights:
            member = path.relative_to(ROOT).as_posix()
            assert member in names, f"{member} is not in {wheel.name}"
            assert archive.read(member) == path.read_bytes()
        modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "helpers").glob("*.py")}
        assert modules <= names, sorted(modules - names)
