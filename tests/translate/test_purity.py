"""The translation layer is pure: stdlib and quorum.errors only, no I/O."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "quorum" / "translate"
ALLOWED = {"quorum.errors", "__future__"}
IO = {"asyncio", "aiohttp", "socket", "subprocess", "os", "websockets", "zeroconf", "httpx"}


def test_translate_imports_only_the_stdlib_and_errors() -> None:
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert name in ALLOWED or (top in sys.stdlib_module_names and top not in IO), (
                    f"{path.name} imports {name}"
                )


def test_modules_stay_small() -> None:
    for path in PACKAGE.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, f"{path.name} is past 400 lines"
