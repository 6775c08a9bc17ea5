"""The checks of ``quorum doctor`` (engines, port here; multicast and relay beside).

Each check is an ``async`` function of the config (and a shared HTTP session)
that returns a list of :class:`~quorum.doctor.report.Finding`; none raises
for what it finds, and each is bounded in time (``Timeouts``). Third-party
and socket errors are turned into findings here, with the fix a user needs.

- engines: every configured service answers ``/v1/models``; the usual local
  ports are probed when autodetection is on; some engine (or the embedded one)
  must be there. The embedded engine is "ok" only once it generated a token
  here (in a child process: a build for another CPU dies of SIGILL there).
- port: the node's port is free, or a Quorum node already answers on it.
- multicast: on each interface discovery would use, an mDNS query sent to
  224.0.0.251 comes back to us (multicast is let through), and which Quorum
  nodes answer it.
- relay: the relay URL's host resolves, TCP (and TLS) connect, ``/healthz``
  answers, and the tunnel accepts the cluster token (401/403: refused).
- clock: the skew against the relay's HTTP ``Date`` header.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from quorum.config.load import default_data_dir
from quorum.config.models import Config, EngineKind, ServiceConfig
from quorum.doctor.report import Check, Finding, Status
from quorum.engines import embedded
from quorum.engines.base import auth_headers, make_http_get, root_url
from quorum.engines.crash import rebuild_command
from quorum.engines.portable import ProbeResult, probe
from quorum.errors import EngineDown, EngineError

log = logging.getLogger("quorum.doctor")


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 3.0
    http_s: float = 5.0
    multicast_s: float = 1.5


START_HINTS: dict[EngineKind, str] = {
    EngineKind.OLLAMA: "start Ollama ('ollama serve', or open the Ollama app)",
    EngineKind.LMSTUDIO: (
        "start LM Studio's server (Developer tab > Start Server, or 'lms server start')"
    ),
    EngineKind.LLAMACPP: "start llama.cpp's server ('llama-server -m MODEL.gguf --port PORT')",
    EngineKind.VLLM: "start vLLM ('vllm serve MODEL --port PORT')",
    EngineKind.MLX: "start mlx_lm ('mlx_lm.server --model MODEL --port PORT')",
    EngineKind.LLAMACPP_PYTHON: "start it ('python -m llama_cpp.server --model MODEL.gguf')",
    EngineKind.EMBEDDED: "the embedded engine is started by the node itself",
    EngineKind.OPENAI: "start the server",
}


def _engine_name(engine: EngineKind | None) -> str:
    return engine.value if engine is not None else "engine"


# -- engines ----------------------------------------------------------------------


async def check_engines(
    config: Config, session: aiohttp.ClientSession, timeouts: Timeouts
) -> list[Finding]:
    get = make_http_get(session, timeouts.http_s)
    found: list[Finding] = []
    answering = 0

    async def probe(url: str, api_key: str | None) -> tuple[int | None, str | None]:
        """(models listed, None) when the engine answers, else (None, why not)."""
        try:
            resp = await get(f"{root_url(url)}/v1/models", auth_headers(api_key))
        except EngineDown as exc:
            return None, _why_down(str(exc))
        except EngineError as exc:
            return None, str(exc)
        if resp.status in (401, 403):
            return None, f"it refused our key (HTTP {resp.status})"
        data = resp.json.get("data") if isinstance(resp.json, dict) else None
        return (len(data) if isinstance(data, list) else 0), None

    services = config.all_services()
    results = await asyncio.gather(*(probe(s.url, s.api_key) for s in services))
    for index, (service, (count, why)) in enumerate(zip(services, results, strict=True)):
        where = f"service '{service.name}' ({_engine_name(service.engine)}) at {service.url}"
        if why is None:
            answering += 1
            found.append(Finding(Check.ENGINES, Status.OK, f"{where}: {count} model(s)"))
        else:
            found.append(
                Finding(
                    Check.ENGINES,
                    Status.FAIL,
                    f"{where} does not answer: {why}",
                    _engine_fix(service, index),
                )
            )

    if config.autodetect.enabled:
        configured = {root_url(s.url) for s in services}
        targets = [t for t in config.autodetect.targets if root_url(t.url) not in configured]
        seen = await asyncio.gather(*(probe(t.url, None) for t in targets))
        missing = []
        for target, (count, why) in zip(targets, seen, strict=True):
            if why is None:
                answering += 1
                found.append(
                    Finding(
                        Check.ENGINES,
                        Status.OK,
                        f"found {target.engine.value} (or compatible) at {target.url}: "
                        f"{count} model(s)",
                    )
                )
            else:
                missing.append(f"{target.engine.value} {urlsplit(target.url).port}")
        if missing:
            found.append(
                Finding(Check.ENGINES, Status.INFO, "nothing answers at " + ", ".join(missing))
            )

    embedded_ok = False
    if config.embedded.mode.value != "off" and embedded.installed():
        result = await asyncio.to_thread(_probe_embedded, config)
        embedded_ok = result.ok
        name = f"{config.embedded.model_name}; mode {config.embedded.mode.value}"
        if result.ok:
            found.append(
                Finding(
                    Check.ENGINES,
                    Status.OK,
                    f"the embedded engine generated a token on this machine ({name})",
                )
            )
        else:
            found.append(
                Finding(
                    Check.ENGINES,
                    Status.FAIL,
                    f"the embedded engine is installed but does not work ({name}): "
                    f"{result.message()}",
                    f"rebuild it for this machine: {rebuild_command()}",
                )
            )
    if not answering and not embedded_ok:
        found.append(
            Finding(
                Check.ENGINES,
                Status.FAIL,
                "no engine answers on this machine, and the embedded engine is not available",
                "start Ollama, LM Studio, llama.cpp, vLLM or mlx_lm, add it under 'services' "
                "in config.yaml, or install the embedded engine: pip install 'quorum[embedded]'",
            )
        )
    return found


def _probe_embedded(config: Config) -> ProbeResult:
    """Load the embedded model in a child process and generate one token (blocking)."""
    try:
        model = embedded.model_file(config.embedded, config.node.data_dir or default_data_dir())
    except EngineError as exc:
        return ProbeResult(False, None, str(exc))
    return probe(sys.executable, model)


def _why_down(message: str) -> str:
    if "refused" in message:
        return "connection refused (nothing listens there)"
    return message


def _engine_fix(service: ServiceConfig, index: int) -> str:
    hint = START_HINTS.get(service.engine or EngineKind.OPENAI, "start the server")
    return (
        f"{hint}; or correct services[{index}].url in config.yaml if it listens elsewhere, "
        f"or remove the service '{service.name}'"
    )


# -- port ---------------------------------------------------------------------------


async def check_port(
    config: Config, session: aiohttp.ClientSession, timeouts: Timeouts
) -> list[Finding]:
    port, bind = config.node.port, config.bind
    if port == 0:
        return [Finding(Check.PORT, Status.INFO, "node.port is 0: the system picks a free port")]
    try:
        _try_bind(bind, port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return [
                Finding(
                    Check.PORT,
                    Status.FAIL,
                    f"cannot listen on {bind}:{port}: {exc.strerror}",
                    "pick another port with node.port (or --port), or another node.bind",
                )
            ]
        name = await _quorum_node_on(session, port, timeouts)
        if name is not None:
            return [
                Finding(
                    Check.PORT,
                    Status.OK,
                    f"port {port} is in use by a running Quorum node ({name})",
                )
            ]
        return [
            Finding(
                Check.PORT,
                Status.FAIL,
                f"port {port} is taken by another program",
                f"stop it (find it with: ss -ltnp 'sport = :{port}', or lsof -iTCP:{port} "
                f"-sTCP:LISTEN, or netstat -ano | findstr {port}), or set node.port / --port",
            )
        ]
    found = [Finding(Check.PORT, Status.OK, f"port {port} on {bind} is free")]
    if config.cluster.token and bind in ("127.0.0.1", "::1", "localhost"):
        found.append(
            Finding(
                Check.PORT,
                Status.WARN,
                f"node.bind is {bind}: peers on the LAN cannot reach this node",
                "remove node.bind (with a cluster token the node listens on 0.0.0.0)",
            )
        )
    elif config.cluster.token:
        found.append(
            Finding(
                Check.PORT,
                Status.INFO,
                f"peers reach this node on TCP {port}: let it through the firewall "
                f"(e.g. sudo ufw allow {port}/tcp)",
            )
        )
    return found


def _try_bind(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if hasattr(socket, "SO_REUSEADDR") and not hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp does
        sock.bind((host, port))
        sock.listen(1)


async def _quorum_node_on(
    session: aiohttp.ClientSession, port: int, timeouts: Timeouts
) -> str | None:
    """The name of the Quorum node answering /healthz on loopback ``port``, if one does."""
    try:
        async with session.get(
            f"http://127.0.0.1:{port}/healthz",
            timeout=aiohttp.ClientTimeout(total=timeouts.connect_s),
        ) as resp:
            body = json.loads(await resp.read())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    name = body.get("node") if isinstance(body, dict) else None
    return name if isinstance(name, str) else None
