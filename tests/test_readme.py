"""What the README tells a new user to type exists and works as written (as far as a test can
run it without hours of compute)."""

import re
import shlex

import pytest

from sae_studies import config, pipeline

README = (config.repo_root() / "README.md").read_text()
MAKEFILE = (config.repo_root() / "Makefile").read_text()
TARGETS = set(re.findall(r"^([a-z][a-z0-9-]*):", MAKEFILE, flags=re.M))


def test_every_make_target_the_readme_names_exists():
    named = set(re.findall(r"`make ([a-z][a-z0-9-]*)", README)) | set(re.findall(r"^make ([a-z][a-z0-9-]*)", README, flags=re.M))
    assert named and named <= TARGETS, f"README names make targets the Makefile lacks: {sorted(named - TARGETS)}"


def test_every_notebook_is_in_the_readme_table_and_exists():
    notebooks = {p.stem for p in (config.repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    in_table = set(re.findall(r"^\| `(\d\d_\w+)` \|", README, flags=re.M))
    assert in_table == notebooks


def test_every_profile_the_readme_names_exists():
    named = set(re.findall(r"configs/(\w+)\.yaml", README)) | set(re.findall(r"PROFILE=(\w+)", README))
    assert named <= set(config.available_profiles())


def _override_examples() -> list[tuple[str, str]]:
    """(profile, overrides) of every example command with overrides in the README."""
    examples = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            if "overrides" not in command.lower():
                continue
            words = shlex.split(command.split("#")[0])
            profile = next((w.split("=", 1)[1] for w in words if w.startswith("PROFILE=")), "default")
            if "-p" in words and "profile" in words:
                profile = words[words.index("profile") + 1]
            overrides = next((w.split("=", 1)[1] for w in words if w.startswith("OVERRIDES=")), None)
            if overrides is None and "overrides" in words:
                overrides = words[words.index("overrides") + 1]
            examples.append((profile, overrides))
    return examples


@pytest.mark.parametrize("profile, overrides", _override_examples())
def test_the_readme_override_examples_load_and_pass_every_check(profile, overrides, monkeypatch):
    monkeypatch.setenv(config.PUBLISH_ENV, "1")
    p = config.load_profile(profile, overrides)
    pipeline.check_studies(p)
    assert p.overrides and "build" in p.figures_dir.parts  # an override run never writes figures/


def test_the_readme_has_override_examples():
    assert len(_override_examples()) >= 2
