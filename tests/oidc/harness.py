"""Sign-in providers on loopback for the relay's user tests.

- ``OidcServer``: panva's ``oidc-provider`` (npm, installed by ``scripts/test`` into
  ``.cache/npm``) run by ``node tests/oidc/provider.mjs``, with two users (alice and bob)
  and the relay registered as a confidential client.
- ``FakeGitHub``: the one fake, since GitHub cannot be reached: an aiohttp server that
  answers GitHub's documented OAuth app endpoints (``/login/oauth/authorize``,
  ``/login/oauth/access_token``) and the REST API's ``/user``, checking what GitHub checks
  (client id and secret, redirect URI, one-use codes, PKCE when a challenge was sent).
- ``users_relay``: a real ``quorum-relay serve`` configured with such providers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from tests.harness import free_port, timeout
from tests.relay.harness import Relay

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / ".cache" / "npm" / "node_modules"
USERS = {
    "alice": {"name": "Alice Liddell", "email": "alice@example.test"},
    "bob": {"name": "Bob Builder", "email": "bob@example.test"},
}


class OidcServer:
    """``oidc-provider`` on 127.0.0.1 with ``USERS`` and one client for the relay."""

    def __init__(self, tmp: Path, redirect_uris: list[str]) -> None:
        node = shutil.which("node")
        if node is None or not (MODULES / "oidc-provider" / "package.json").is_file():
            pytest.fail(
                "the sign-in tests need Node.js and npm's oidc-provider in .cache/npm: "
                "scripts/test installs both",
                pytrace=False,
            )
        self.node = node
        self.port = free_port()
        self.client_id = "quorum-relay"
        self.client_secret = secrets.token_urlsafe(24)
        self.config = tmp / "oidc.json"
        self.config.write_text(
            json.dumps(
                {
                    "modules": str(MODULES),
                    "port": self.port,
                    "users": USERS,
                    "clients": [
                        {
                            "client_id": self.client_id,
                            "client_secret": self.client_secret,
                            "redirect_uris": redirect_uris,
                            "grant_types": ["authorization_code"],
                            "response_types": ["code"],
                            "token_endpoint_auth_method": "client_secret_basic",
                        }
                    ],
                }
            )
        )
        self.log = tmp / "oidc.log"
        self.proc: subprocess.Popen[str] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OidcServer:
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [self.node, str(Path(__file__).with_name("provider.mjs")), str(self.config)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        ready = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.startswith("listening "):
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout(30)):
            self.stop()
            raise AssertionError(f"oidc-provider did not start: {self.log.read_text()}")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout(10))
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _s256(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


@dataclass
class FakeGitHub:
    """GitHub's OAuth app endpoints and ``/user``, for one registered app and its users."""

    client_id: str = "Iv1.test-relay"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    users: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "octocat": {"id": 583231, "login": "octocat", "name": "The Octocat", "email": None},
            "hubot": {"id": 1000001, "login": "hubot", "name": None, "email": "hubot@example.test"},
            "monalisa": {"id": 2000002, "login": "monalisa", "name": "Mona", "email": None},
        }
    )
    emails: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {
            "octocat": [
                {"email": "old@example.test", "primary": False, "verified": True},
                {"email": "octocat@github.test", "primary": True, "verified": True},
            ],
            "hubot": [{"email": "hubot@example.test", "primary": True, "verified": True}],
            # A primary address GitHub has not verified counts for nothing.
            "monalisa": [{"email": "mona@example.test", "primary": True, "verified": False}],
        }
    )
    """``GET /user/emails`` per user (``visibility`` left out: the relay does not read it)."""
    login_as: str = "octocat"
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    scopes: dict[str, set[str]] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/login/oauth/authorize", self.authorize)
        app.router.add_post("/login/oauth/access_token", self.access_token)
        app.router.add_get("/user", self.user)
        app.router.add_get("/user/emails", self.user_emails)
        return app

    async def authorize(self, request: web.Request) -> web.Response:
        """The user (``login_as``) approves at once: back to the redirect URI with a code."""
        q = request.query
        self.seen.append("authorize")
        if q.get("client_id") != self.client_id:
            return web.Response(status=404, text="Not Found")
        code = secrets.token_hex(10)
        self.codes[code] = {
            "redirect_uri": q.get("redirect_uri", ""),
            "challenge": q.get("code_challenge", ""),
            "method": q.get("code_challenge_method", ""),
            "user": self.login_as,
            "scope": q.get("scope", ""),
        }
        target = (
            q["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code, "state": q["state"]})
        )
        raise web.HTTPFound(target)

    async def access_token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.seen.append("access_token")
        wants_json = "application/json" in request.headers.get("Accept", "")

        def answer(data: dict[str, str]) -> web.Response:
            # GitHub answers errors with 200 too, form-encoded unless JSON was asked for.
            if wants_json:
                return web.json_response(data)
            return web.Response(text=urllib.parse.urlencode(data))

        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return answer({"error": "incorrect_client_credentials"})
        grant = self.codes.pop(str(form.get("code", "")), None)
        if grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
            return answer({"error": "bad_verification_code"})
        if grant["challenge"] and (
            grant["method"] != "S256"
            or _s256(str(form.get("code_verifier", ""))) != grant["challenge"]
        ):
            return answer({"error": "bad_verification_code", "error_description": "PKCE failed"})
        token = "gho_" + secrets.token_hex(18)
        self.tokens[token] = grant["user"]
        self.scopes[token] = set(grant["scope"].replace(",", " ").split())
        scope = ",".join(sorted(self.scopes[token]))
        return answer({"access_token": token, "token_type": "bearer", "scope": scope})

    def _login(self, request: web.Request) -> tuple[str | None, str]:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return (self.tokens.get(token) if scheme.lower() in ("bearer", "token") else None), token

    async def user(self, request: web.Request) -> web.Response:
        self.seen.append("user")
        login, _ = self._login(request)
        if login is None:
            return web.json_response({"message": "Bad credentials"}, status=401)
        return web.json_response(self.users[login])

    async def user_emails(self, request: web.Request) -> web.Response:
        """Every address of the user; 404 without the ``user:email`` scope, as GitHub does."""
        self.seen.append("emails")
        login, token = self._login(request)
        if login is None:
            return web.json_response({"message": "Bad credentials"}, status=401)
        if "user:email" not in self.scopes.get(token, set()) and "user" not in self.scopes.get(
            token, set()
        ):
            return web.json_response({"message": "Not Found"}, status=404)
        return web.json_response(self.emails.get(login, []))


def users_relay(
    tmp: Path, providers: list[dict[str, Any]], port: int, *, operators: list[str] | None = None
) -> Relay:
    """A ``quorum-relay serve`` on ``port`` with these sign-in providers (secrets in files)."""
    data = tmp / "relay"
    data.mkdir(exist_ok=True)
    entries = []
    for p in providers:
        secret = tmp / f"{p['name']}.secret"
        secret.write_text(p.pop("secret") + "\n")
        os.chmod(secret, 0o600)
        entries.append({**p, "client_secret_file": str(secret)})
    config = tmp / "relay.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "users": {
                    "public_url": f"http://127.0.0.1:{port}",
                    "operators": operators or [],
                    "providers": entries,
                }
            }
        )
    )
    return Relay(data, port, "--config", str(config))
