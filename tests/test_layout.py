"""The layout a newcomer relies on: one-way imports, every package installed, short modules."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# name installed -> folder in the checkout
FOLDERS = {"restrl": "restrl", "restrl_flows": "flows", "restrl_tasks": "tasks"}
LONG_MODULES_ALLOWED = {"restrl/sandbox/server.py", "restrl/toy/tasks.py"}


def _modules(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_library_never_imports_prefect_or_the_flow_layer():
    for path in _modules("restrl"):
        assert not _imported(path) & {"prefect", "restrl_flows", "restrl_tasks"}, path


def test_tasks_never_import_flows():
    for path in _modules("tasks"):
        assert "restrl_flows" not in _imported(path), path


def test_every_package_folder_is_installed():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {k: v for k, v in FOLDERS.items() if k != v}
    found = set()
    for name, folder in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((name, *parts)))
    assert set(config["packages"]) == found


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(REPO)) for folder in FOLDERS.values() for p in _modules(folder)
            if len(p.read_text().splitlines()) > 500}
    assert long <= LONG_MODULES_ALLOWED
