"""The protocol package stays sans-I/O: stdlib only, and no event loop or network library."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import quorum.protocol

PACKAGE = Path(quorum.protocol.__file__).parent
FORBIDDEN = {"asyncio", "aiohttp", "websockets", "socket", "selectors", "threading", "time"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_protocol_imports_only_the_stdlib_and_quorum_errors() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert files
    for path in files:
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN, f"{path.name} imports {name}"
            assert top in sys.stdlib_module_names or name == "quorum.errors", (
                f"{path.name} imports {name}"
            )


def test_modules_stay_small() -> None:
    for path in PACKAGE.glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 400, path.name
