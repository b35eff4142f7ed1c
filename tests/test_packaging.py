"""pyproject.toml and environment.yml agree; the embedded weights are package data."""
import pathlib
import re
import tomllib

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


def test_embedded_weights_are_package_data():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "helpers" in setuptools["packages"]
    assert "weights/faces32/*" in setuptools["package-data"]["helpers"]
