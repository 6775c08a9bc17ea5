"""The relay's config file: sign-in providers and operators (``quorum-relay serve --config``).

YAML, frozen values, unknown keys and bad values a clear error naming the key::

    users:
      public_url: https://relay.example.com    # where browsers reach the relay (redirects)
      operators: ["github:583231", "ops@example.com"]
      providers:
        - name: google                          # [a-z0-9-], in the callback URL
          issuer: https://accounts.google.com   # OpenID Connect: discovery from here
          client_id: 1234.apps.googleusercontent.com
          client_secret_file: /etc/quorum-relay/google.secret
        - name: github
          github: true                          # GitHub's OAuth app flow (not OIDC)
          client_id: Iv1.abc
          client_secret_env: GITHUB_CLIENT_SECRET

A client secret comes from a file (its first line) or an environment variable,
never from the config itself, and is held as a ``SecretStr`` (never printed).
The callback URL to register at the provider is
``<public_url>/dashboard/signin/<name>/callback``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from quorum.errors import QuorumError

CONFIG_ENV = "QUORUM_RELAY_CONFIG"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


class ProviderConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    label: str | None = None
    """The sign-in button's text (default: the name)."""
    issuer: str | None = None
    github: bool = False
    client_id: str = Field(min_length=1)
    client_secret_file: Path | None = None
    client_secret_env: str | None = None
    scopes: tuple[str, ...] | None = None
    github_url: str = "https://github.com"
    github_api_url: str = "https://api.github.com"

    @model_validator(mode="after")
    def _one_kind(self) -> ProviderConfig:
        if not _NAME.fullmatch(self.name):
            raise ValueError("name: lower-case letters, digits and '-', at most 32")
        if self.github == (self.issuer is not None):
            raise ValueError("give either 'issuer' (OpenID Connect) or 'github: true'")
        if (self.client_secret_file is None) == (self.client_secret_env is None):
            raise ValueError("give one of 'client_secret_file' or 'client_secret_env'")
        for url in (self.issuer, self.github_url, self.github_api_url):
            if url is not None and not url.startswith(("https://", "http://")):
                raise ValueError(f"not an http(s) URL: {url!r}")
        return self

    @property
    def shown(self) -> str:
        return self.label or self.name

    def client_secret(self, env: Mapping[str, str] = os.environ) -> SecretStr:
        """The client secret from its file or variable; QuorumError naming the key if absent."""
        if self.client_secret_env is not None:
            value = env.get(self.client_secret_env, "").strip()
            if not value:
                raise QuorumError(
                    f"users.providers[{self.name}].client_secret_env: "
                    f"${self.client_secret_env} is not set"
                )
            return SecretStr(value)
        assert self.client_secret_file is not None
        try:
            lines = self.client_secret_file.read_text().strip().splitlines()
        except OSError as exc:
            raise QuorumError(
                f"users.providers[{self.name}].client_secret_file: cannot read "
                f"{self.client_secret_file}: {exc.strerror}"
            ) from None
        if not lines or not lines[0].strip():
            raise QuorumError(
                f"users.providers[{self.name}].client_secret_file: "
                f"{self.client_secret_file} is empty"
            )
        return SecretStr(lines[0].strip())


class UsersConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    public_url: str | None = None
    operators: tuple[str, ...] = ()
    providers: tuple[ProviderConfig, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> UsersConfig:
        names = [p.name for p in self.providers]
        if len(set(names)) != len(names):
            raise ValueError("providers: each needs its own name")
        if self.public_url is not None and not self.public_url.startswith(("https://", "http://")):
            raise ValueError("public_url: an http(s) URL")
        return self


class RelayConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    users: UsersConfig = UsersConfig()


def parse_config(data: Any, source: str = "the relay config") -> RelayConfig:
    if data is None:
        return RelayConfig()
    try:
        return RelayConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise QuorumError(f"{source}: {where}: {first['msg']}") from None


def load_config(path: Path | None, env: Mapping[str, str] = os.environ) -> RelayConfig:
    """The config at ``path`` (else ``$QUORUM_RELAY_CONFIG``); none at all: no users."""
    chosen = path or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    if chosen is None:
        return RelayConfig()
    try:
        data = yaml.safe_load(chosen.read_text())
    except OSError as exc:
        raise QuorumError(f"cannot read the relay config {chosen}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise QuorumError(f"the relay config {chosen} is not YAML: {exc}") from None
    return parse_config(data, str(chosen))
