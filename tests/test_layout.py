"""The architecture's rules that imports can break."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def files_of(module: str) -> list[Path]:
    """The source files of ``module``: a package's, or the one file; never none."""
    base = ROOT.joinpath(*module.split("."))
    found = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
    assert found and all(p.is_file() for p in found), f"no source for {module}"
    return found


def imports(package: Path) -> set[str]:
    found: set[str] = set()
    paths = sorted(package.rglob("*.py")) if package.is_dir() else [package.with_suffix(".py")]
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
    return found


# Small pure helpers the relay shares with the node (stdlib only, checked below).
SHARED_PURE = ("quorum.api", "quorum.ratelimit", "quorum.request_heads")

# The tunnel's asyncio adapter, one for node and relay (asyncio, protocol and errors only),
# the connection guard both HTTP servers run behind (quorum.netguard), and what gives a
# process's memory back after large bodies (quorum.memory: stdlib only).
SHARED_ADAPTER = ("quorum.link", "quorum.netguard", "quorum.memory")

# Keys and certificates both ends check (the relay verifies a node's certificate and proof):
# the stdlib's ssl and ``cryptography`` only.
SHARED_SECURE = ("quorum.secure",)


def test_relay_imports_only_the_protocol_from_quorum() -> None:
    allowed = (
        "quorum.protocol",
        "quorum.errors",
        "quorum.__init__",
        *SHARED_PURE,
        *SHARED_ADAPTER,
        *SHARED_SECURE,
    )
    bad = {
        m
        for m in imports(ROOT / "relay")
        if (m == "quorum" or m.startswith("quorum.")) and not m.startswith(allowed)
    }
    assert not bad, (
        f"relay/ may import only quorum.protocol, errors, the adapter and helpers: {sorted(bad)}"
    )


def test_shared_helpers_are_stdlib_only() -> None:
    stdlib = {"__future__", "json", "dataclasses", "re", "enum", "typing", "collections"}
    stdlib |= {"itertools", "math", "time"}
    # Besides the stdlib they may use each other and the exception tree (itself stdlib-only).
    ours = ("quorum.errors", *SHARED_PURE)
    modules = [
        (module, path)
        for module in SHARED_PURE
        for path in (
            sorted(ROOT.joinpath(*module.split(".")).rglob("*.py"))
            if ROOT.joinpath(*module.split(".")).is_dir()
            else [ROOT.joinpath(*module.split(".")).with_suffix(".py")]
        )
    ]
    for _module, path in [*modules, ("quorum.errors", ROOT / "quorum" / "errors.py")]:
        tree = ast.parse(path.read_text())
        used = {
            (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in n.names
        }
        foreign = {m for m in used if not m.startswith(ours)}
        assert {m.split(".")[0] for m in foreign} <= stdlib, f"{path} imports {sorted(used)}"


def test_secure_uses_only_the_stdlib_and_cryptography() -> None:
    allowed = {"quorum", "cryptography", "__future__", "asyncio", "base64", "binascii"}
    allowed |= {"dataclasses", "datetime", "hashlib", "hmac", "logging", "os", "pathlib"}
    allowed |= {"ssl", "typing", "collections", "struct", "tempfile"}
    used = {m.split(".")[0] for m in imports(ROOT / "quorum" / "secure")}
    assert used <= allowed, sorted(used - allowed)
    ours = {m for m in imports(ROOT / "quorum" / "secure") if m.startswith("quorum.")}
    assert all(m.startswith(("quorum.secure", "quorum.errors")) for m in ours), sorted(ours)


def test_pure_layers_do_no_io() -> None:
    io = {"asyncio", "aiohttp", "socket", "websockets", "zeroconf", "subprocess"}
    for name in ("protocol", "routing", "fleet"):
        used = {m.split(".")[0] for m in imports(ROOT / "quorum" / name)}
        assert not used & io, f"quorum/{name} imports {sorted(used & io)}"


def test_config_models_do_no_io() -> None:
    tree = ast.parse((ROOT / "quorum" / "config" / "models.py").read_text())
    used = {
        (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert not {m.split(".")[0] for m in used} & {"yaml", "platformdirs", "os", "aiohttp"}


def test_the_store_interface_knows_no_implementation() -> None:
    tree = ast.parse((ROOT / "relay" / "store.py").read_text())
    used = {
        (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert not {m for m in used if "sqlite" in m or "postgres" in m or m == "relay.open_store"}


def test_the_tunnel_adapter_imports_only_the_protocol() -> None:
    """quorum.link is the relay's too: the stdlib, the protocol and the errors, nothing else."""
    stdlib = {
        "__future__",
        "asyncio",
        "collections",
        "contextlib",
        "dataclasses",
        "enum",
        "logging",
        "os",
        "random",
        "typing",
    }
    # Beyond that: the guard wraps aiohttp's server (the relay's too), takes uvloop's TLS where
    # the loop is uvloop's, and reads heads with the pure tracker; the memory helper asks
    # glibc, through ctypes, to give memory back.
    extra: dict[str, tuple[set[str], set[str]]] = {
        "quorum.link": (set(), set()),
        "quorum.netguard": ({"aiohttp", "ipaddress", "json", "ssl", "uvloop"}, {"request_heads"}),
        "quorum.memory": ({"ctypes", "gc", "time", "warnings"}, set()),
    }
    assert set(extra) == set(SHARED_ADAPTER)
    for module in SHARED_ADAPTER:
        files_of(module)  # it exists: a check of nothing passes nothing
        more, also_ours = extra[module]
        used = imports(ROOT.joinpath(*module.split(".")))
        ours = {m for m in used if m == "quorum" or m.startswith("quorum.")}
        assert {m.split(".")[1] for m in ours} <= {"protocol", "errors", *also_ours}, sorted(ours)
        assert {m.split(".")[0] for m in used - ours} <= stdlib | more, (
            module,
            sorted(used - ours),
        )
