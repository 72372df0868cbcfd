"""constraints.txt locks every installed package; pyproject.toml, the venv and the images agree.

constraints.txt (written by scripts/lock.sh) pins the transitive dependencies too; .venv
(scripts/common.sh, CI) and the Dockerfile install with -c constraints.txt. Fast: files and
importlib.metadata only, no services.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
UPGRADE_HINT = "upgrade on purpose: bash scripts/lock.sh, then review git diff constraints.txt"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraint_lines() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in CONSTRAINTS.read_text().splitlines())
    return [line for line in lines if line]


def locked_versions() -> dict[str, str]:
    return {normalise(name): version for name, version in map(split_pin, constraint_lines())}


def split_pin(line: str) -> tuple[str, str]:
    name, sep, version = line.partition("==")
    assert sep and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name), line
    return name, version


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]] + [
        Requirement(r) for r in project["optional-dependencies"]["test"]
    ]


def test_constraints_pin_each_package_exactly_once_and_not_the_project() -> None:
    lines = constraint_lines()
    assert lines
    assert not [line for line in lines if line.startswith("-")], "no -e / option lines"
    names = [normalise(split_pin(line)[0]) for line in lines]
    assert all(re.fullmatch(r"[^\s;=<>!~]+", split_pin(line)[1]) for line in lines), lines
    assert len(names) == len(set(names)), "a package is pinned twice"
    assert "cashu-worker" not in names


def test_every_pyproject_dependency_is_locked_at_its_pinned_version() -> None:
    locked = locked_versions()
    requirements = pyproject_requirements()
    assert len(requirements) > 10  # the runtime dependencies and the test extra
    wrong: dict[str, str] = {}
    for req in requirements:
        version = locked.get(normalise(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            wrong[str(req)] = version or "missing"
    assert not wrong, f"pyproject.toml vs constraints.txt: {wrong}; {UPGRADE_HINT}"


def test_installed_packages_are_the_versions_constraints_txt_locks() -> None:
    installed: dict[str, str] = {}
    for dist in metadata.distributions():  # the first on sys.path is the one imported
        if dist.metadata["Name"]:
            installed.setdefault(normalise(dist.metadata["Name"]), dist.version)
    locked = locked_versions()
    checked = {name: version for name, version in locked.items() if name in installed}
    assert "pytest" in checked  # this interpreter has the test extra: the check is not empty
    drift = {
        name: f"installed {installed[name]}, locked {version}"
        for name, version in checked.items()
        if installed[name] != version
    }
    assert not drift, (
        f"this environment drifted from constraints.txt: {drift}; reinstall "
        f"(bash scripts/test.sh does, or pip install -e '.[test]' -c constraints.txt), "
        f"or {UPGRADE_HINT}"
    )


def test_the_image_installs_the_locked_dependencies_before_copying_the_code() -> None:
    app_stage = (ROOT / "Dockerfile").read_text().split(" AS app", 1)[1]
    deps_copy = app_stage.index("COPY pyproject.toml constraints.txt ")
    install = app_stage.index("-c constraints.txt")
    code_copy = app_stage.index("COPY . ")
    assert deps_copy < install < code_copy
    assert "pip install --no-deps ." in app_stage[code_copy:]


def test_the_mint_image_and_the_mint_venv_pin_the_same_nutshell() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text().split(" AS app", 1)[0]
    docker_line = next(line for line in dockerfile.splitlines() if line.startswith("RUN pip "))
    docker_pins = shlex.split(docker_line.split("pip install", 1)[1])
    common = (ROOT / "scripts" / "common.sh").read_text()
    match = re.search(r"^MINT_PINS=\((.*)\)$", common, re.MULTILINE)
    assert match, "MINT_PINS in scripts/common.sh"
    assert docker_pins == shlex.split(match.group(1))
