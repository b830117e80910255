"""The package's layers: imports only point down, config/ and runs/ never load torch, only cli/
imports typer and rich or prints, few modules at the top, and no class or function grown too
long."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "vae_cli"
# Each layer may import the layers below it (a lower rank) and its own.
RANKS = {
    "errors": 0,
    "files": 1,
    "config": 1,
    "device": 1,
    "openmp": 1,
    "data": 1,
    "model": 2,
    "runs": 2,
    "checkpoint": 3,
    "pictures": 3,
    "training": 4,
    "commands": 5,
    "cli": 6,
    "__main__": 7,
}
MAX_TOP_LEVEL_MODULES = 8
MAX_CLASS_LINES, MAX_FUNCTION_BODY_LINES = 200, 50


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imported_layers(tree: ast.AST) -> set[str]:
    """The vae_cli layers a module imports (at its top or inside functions)."""
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "vae_cli" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_point_down(path: Path) -> None:
    own = layer(path)
    if own == "__init__":  # the package root: __version__ and load(), which imports lazily
        return
    tree = ast.parse(path.read_text())
    upward = {other for other in imported_layers(tree) - {own} if RANKS[other] >= RANKS[own]}
    assert not upward, f"{path.relative_to(PACKAGE)} ({own}) imports {sorted(upward)}"


def test_only_the_command_line_imports_typer_and_rich() -> None:
    for path in modules():
        if layer(path) == "cli":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [node.module]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                )
                for name in filter(None, names):
                    assert name.split(".")[0] not in ("typer", "rich"), path


def test_nothing_below_the_command_line_prints() -> None:
    """The library reports through callbacks and return values; a Python caller gets no
    output it did not ask for."""
    printing = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in modules()
        if layer(path) not in ("cli", "__main__")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("print", "input")
    ]
    assert not printing, printing


def test_config_and_runs_never_load_torch_or_training() -> None:
    names = [
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in modules()
        if layer(p) in ("config", "runs")
    ]
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = [m for m in sys.modules if m == 'torch' or m.startswith('vae_cli.training')]\n"
        "print(loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_few_modules_stay_at_the_top() -> None:
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_no_class_or_function_body_grows_too_long() -> None:
    too_long = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    too_long.append(f"{path.name}: class {node.name} {lines} lines")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.body[0].lineno + 1
                if lines > MAX_FUNCTION_BODY_LINES:
                    too_long.append(f"{path.name}: {node.name}() body {lines} lines")
    assert not too_long, too_long
