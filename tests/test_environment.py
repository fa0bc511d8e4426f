"""environment.yml (conda users) must describe the same environment as pyproject.toml (pip)."""

from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pip_section(env: dict) -> list[str]:
    for dep in env["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            return dep["pip"]
    raise AssertionError("environment.yml has no pip section")


def test_environment_yml_lists_exactly_the_pyproject_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = _pip_section(env)
    listed = {p for p in pip if not p.startswith("-e")}
    assert listed == wanted, (
        f"only in pyproject.toml: {sorted(wanted - listed)}; only in environment.yml: {sorted(listed - wanted)}"
    )
    # The package itself, with its dev extra, so `import sae_studies` works in the conda env.
    assert "-e .[dev]" in pip


def test_environment_yml_python_satisfies_requires_python():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    major, minor = map(int, python.split("=")[1].split(".")[:2])
    low = project["requires-python"].removeprefix(">=")
    assert (major, minor) >= tuple(map(int, low.split(".")[:2]))
