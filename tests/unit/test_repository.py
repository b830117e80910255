"""The repository holds source, not outputs: no run folders, checkpoints or datasets in git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import PurePosixPath

import pytest
from conftest import REPO

RUN_FILES = {"metrics.jsonl", "status.json", "study.db"}
DATA_SUFFIXES = {".pt", ".pth", ".safetensors", ".db"}


def test_no_run_outputs_or_data_are_tracked() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    paths = [PurePosixPath(path) for path in tracked]
    assert [p for p in paths if p.name in RUN_FILES or p.suffix in DATA_SUFFIXES] == []
    assert [p for p in paths if p.name.endswith("-ubyte")] == []
    # Pictures live in docs/ only (those the README shows); runs/ holds just its .gitkeep.
    assert [p for p in paths if p.suffix == ".png" and p.parts[0] != "docs"] == []
    assert [p for p in paths if p.parts[0] == "runs"] == [PurePosixPath("runs/.gitkeep")]


def test_the_readme_is_for_users_and_links_the_depth() -> None:
    """At most 350 lines; the design, reproducibility, performance and quality notes live in
    docs/ and the README links each one; every picture and document it links exists."""
    import re

    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 350
    for name in ("design", "reproducibility", "performance", "quality"):
        assert f"(docs/{name}.md)" in readme and (REPO / f"docs/{name}.md").is_file()
    for target in re.findall(r"\]\(((?:docs|configs)/[^)#]+)\)", readme):
        assert (REPO / target).is_file(), target
    assert "python -m pytest -q" in readme


def test_every_module_of_the_package_is_tracked() -> None:
    """An ignore pattern that matched a package folder (`data/` once matched vae_cli/data/)
    leaves a clean clone without it."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    modules = [str(p.relative_to(REPO)) for p in (REPO / "vae_cli").rglob("*.py")]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *modules], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    assert ignored == []


def test_the_gpu_check_names_test_files_that_exist() -> None:
    """benchmarks/gpu_check.sh runs on a lent GPU only: a test file it names that moved would
    fail there, with the device time spent."""
    import re

    script = (REPO / "benchmarks/gpu_check.sh").read_text()
    named = re.findall(r"tests/[\w/]+\.py", script)
    assert len(named) >= 5
    assert [path for path in named if not (REPO / path).is_file()] == []


def test_the_gpu_checks_recipe_edits_match_lines_of_the_recipe() -> None:
    """The GPU variant of the recipe is quality3.toml with its phase epochs and k rewritten by
    sed; a pattern that no longer matches a line leaves the CPU budget in place, which would
    only show as a timed-out step on a lent GPU."""
    import re

    script = (REPO / "benchmarks/gpu_check.sh").read_text()
    recipe_lines = (REPO / "configs/quality3.toml").read_text().splitlines()
    patterns = re.findall(r'-e "s/\^(.+?)\$/', script)
    assert len(patterns) == 3
    assert [p for p in patterns if recipe_lines.count(p) != 1] == []


def test_the_cpu_only_install_is_one_pip_command_from_the_cpu_index() -> None:
    """torch and torchvision must resolve together: torch installed first from the CPU index
    and then `pip install -e .` let torchvision's exact pin swap in the CUDA build (5.7 GB).
    The README and docs/performance.md give the same single command."""
    cpu_index = "--index-url https://download.pytorch.org/whl/cpu"
    commands = []
    for document in ("README.md", "docs/performance.md"):
        lines = (REPO / document).read_text().splitlines()
        found = [line.lstrip("#").strip() for line in lines if cpu_index in line]
        assert len(found) == 1, document
        commands.append(found[0])
    assert commands[0] == commands[1]
    command = commands[0]
    assert command.startswith('pip install -e ".[test]" ') and "&&" not in command
    assert command.endswith("--extra-index-url https://pypi.org/simple")
