"""Signing in with an OpenID Connect provider or GitHub: the two redirects and their checks.

OpenID Connect (any provider): the authorization code flow with PKCE (S256),
the endpoints found by discovery at ``<issuer>/.well-known/openid-configuration``
(whose ``issuer`` must be the configured one). The ID token's signature is
checked against the provider's published keys (asymmetric algorithms only,
never ``none``), then its claims: ``iss`` is the issuer, ``aud`` holds the
client id (and ``azp`` names it when present), ``exp`` is in the future,
``nonce`` is the one this sign-in sent, ``at_hash`` matches the access token.
Name and email come from the ID token, else from the userinfo endpoint (whose
``sub`` must match).

GitHub's OAuth apps are not OpenID Connect: ``/login/oauth/authorize`` (with
PKCE, which GitHub supports), ``/login/oauth/access_token``, then the user from
the REST API's ``/user``; the subject is GitHub's numeric user id (a login can
be renamed).

Parameters and PKCE come from ``authlib``, signatures from ``joserfc``; HTTP is
an injected ``aiohttp.ClientSession``. The client secret and every token are
never logged. Any failure is an ``Unauthorized`` (the provider refused, or a
check failed) or ``UpstreamFailed`` (the provider could not be reached), with
a message fit for the sign-in page.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from pydantic import SecretStr

from quorum.errors import Unauthorized, UpstreamFailed
from relay.users import Pending
from relay.users_config import ProviderConfig

log = logging.getLogger("relay.signin")

HTTP_TIMEOUT_S = 15.0
LEEWAY_S = 60
ASYMMETRIC = frozenset(
    ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the provider says signed in."""

    provider: str
    subject: str
    name: str
    email: str | None
    email_verified: bool


class Provider(Protocol):
    name: str
    label: str

    async def start(self, redirect_uri: str) -> tuple[str, Pending]:
        """The provider's authorization URL to send the browser to, and what to keep."""
        ...

    async def finish(self, pending: Pending, code: str) -> Identity:
        """Exchange the code and check what comes back."""
        ...


def _pending(provider: str, redirect_uri: str) -> Pending:
    return Pending(
        provider,
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        verifier=secrets.token_urlsafe(64),  # 86 characters: RFC 7636 allows 43-128
        redirect_uri=redirect_uri,
        created=time.time(),
    )


async def _json(resp: aiohttp.ClientResponse, what: str) -> Any:
    if resp.status >= 400:
        detail = ""
        try:
            body = await resp.json(content_type=None)
            if isinstance(body, dict):
                detail = str(body.get("error_description") or body.get("error") or "")
        except (ValueError, aiohttp.ClientError):
            pass
        why = f"{resp.status}: {detail}" if detail else str(resp.status)
        raise Unauthorized(
            f"The sign-in provider refused {what} ({why}).",
            code="signin_failed",
        )
    try:
        return await resp.json(content_type=None)
    except ValueError:
        raise UpstreamFailed(f"The sign-in provider's {what} answer is not JSON.") from None


class OidcProvider:
    def __init__(self, config: ProviderConfig, secret: SecretStr, http: aiohttp.ClientSession):
        assert config.issuer is not None
        self.name, self.label = config.name, config.shown
        self.issuer = config.issuer
        self.client_id = config.client_id
        self._secret = secret
        self._http = http
        self._scopes = " ".join(config.scopes or ("openid", "profile", "email"))
        self._meta: dict[str, Any] | None = None
        self._keys: dict[str, Any] | None = None

    async def _get(self, url: str, what: str, **kw: Any) -> Any:
        try:
            async with self._http.get(
                url, timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S), **kw
            ) as resp:
                return await _json(resp, what)
        except aiohttp.ClientError as exc:
            raise UpstreamFailed(f"Cannot reach the sign-in provider {self.label}: {exc}") from None

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (fetched once, then kept)."""
        if self._meta is None:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            meta = await self._get(url, "discovery")
            if not isinstance(meta, dict) or meta.get("issuer") != self.issuer:
                raise UpstreamFailed(
                    f"The discovery document at {url} names another issuer than {self.issuer}."
                )
            for needed in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(meta.get(needed), str):
                    raise UpstreamFailed(f"The discovery document at {url} lacks {needed}.")
            self._meta = meta
        return self._meta

    async def start(self, redirect_uri: str) -> tuple[str, Pending]:
        meta = await self.metadata()
        pending = _pending(self.name, redirect_uri)
        url = prepare_grant_uri(
            meta["authorization_endpoint"],
            client_id=self.client_id,
            response_type="code",
            redirect_uri=redirect_uri,
            scope=self._scopes,
            state=pending.state,
            nonce=pending.nonce,
            code_challenge=create_s256_code_challenge(pending.verifier),
            code_challenge_method="S256",
        )
        return url, pending

    async def _token(self, pending: Pending, code: str) -> dict[str, Any]:
        meta = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.verifier,
        }
        methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        auth = None
        if "client_secret_basic" in methods:
            auth = aiohttp.BasicAuth(self.client_id, self._secret.get_secret_value())
        else:
            form |= {"client_id": self.client_id, "client_secret": self._secret.get_secret_value()}
        try:
            async with self._http.post(
                meta["token_endpoint"],
                data=form,
                auth=auth,
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S),
            ) as resp:
                token = await _json(resp, "the sign-in code")
        except aiohttp.ClientError as exc:
            raise UpstreamFailed(f"Cannot reach the sign-in provider {self.label}: {exc}") from None
        if not isinstance(token, dict) or not isinstance(token.get("id_token"), str):
            raise Unauthorized("The sign-in provider sent no ID token.", code="signin_failed")
        return token

    async def _key_set(self, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            meta = await self.metadata()
            keys = await self._get(meta["jwks_uri"], "its keys")
            if not isinstance(keys, dict):
                raise UpstreamFailed("The sign-in provider's keys are not a JSON key set.")
            self._keys = keys
        return KeySet.import_key_set(self._keys)  # type: ignore[arg-type]

    async def _id_token(self, raw: str, access_token: str | None, nonce: str) -> dict[str, Any]:
        meta = await self.metadata()
        offered = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [a for a in offered if a in ASYMMETRIC] or ["RS256"]
        try:
            try:
                token = decode_id_token(raw, await self._key_set(), algorithms)
            except JoseError:  # perhaps a key rotated in since: fetch the set once more
                token = decode_id_token(raw, await self._key_set(refresh=True), algorithms)
        except (JoseError, ValueError) as exc:
            raise Unauthorized(
                f"The sign-in provider's ID token did not check out ({exc}).",
                code="signin_failed",
            ) from None
        return check_claims(
            token,
            issuer=self.issuer,
            client_id=self.client_id,
            nonce=nonce,
            access_token=access_token,
        )

    async def finish(self, pending: Pending, code: str) -> Identity:
        token = await self._token(pending, code)
        access = token.get("access_token")
        claims = await self._id_token(
            token["id_token"], access if isinstance(access, str) else None, pending.nonce
        )
        meta = await self.metadata()
        if ("name" not in claims or "email" not in claims) and (
            isinstance(access, str) and isinstance(meta.get("userinfo_endpoint"), str)
        ):
            info = await self._get(
                meta["userinfo_endpoint"],
                "its user info",
                headers={"Authorization": f"Bearer {access}"},
            )
            if isinstance(info, dict) and info.get("sub") == claims["sub"]:
                claims = {**info, **claims}
        subject = str(claims["sub"])
        email = claims.get("email") if isinstance(claims.get("email"), str) else None
        name = claims.get("name") or claims.get("preferred_username") or email or subject
        return Identity(
            self.name, subject, str(name)[:200], email, claims.get("email_verified") is True
        )


class GitHubProvider:
    def __init__(self, config: ProviderConfig, secret: SecretStr, http: aiohttp.ClientSession):
        self.name, self.label = config.name, config.shown
        self.client_id = config.client_id
        self._secret = secret
        self._http = http
        self._site = config.github_url.rstrip("/")
        self._api = config.github_api_url.rstrip("/")
        self._scopes = " ".join(config.scopes or ("read:user", "user:email"))

    async def start(self, redirect_uri: str) -> tuple[str, Pending]:
        pending = _pending(self.name, redirect_uri)
        url = prepare_grant_uri(
            self._site + "/login/oauth/authorize",
            client_id=self.client_id,
            response_type="code",
            redirect_uri=redirect_uri,
            scope=self._scopes,
            state=pending.state,
            code_challenge=create_s256_code_challenge(pending.verifier),
            code_challenge_method="S256",
            allow_signup="true",
        )
        return url, pending

    async def finish(self, pending: Pending, code: str) -> Identity:
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        try:
            async with self._http.post(
                self._site + "/login/oauth/access_token",
                data={
                    "client_id": self.client_id,
                    "client_secret": self._secret.get_secret_value(),
                    "code": code,
                    "redirect_uri": pending.redirect_uri,
                    "code_verifier": pending.verifier,
                },
                headers={"Accept": "application/json"},
                timeout=timeout,
            ) as resp:
                token = await _json(resp, "the sign-in code")
            # GitHub answers a refused code with 200 and an "error" field.
            if not isinstance(token, dict) or not isinstance(token.get("access_token"), str):
                reason = (
                    token.get("error_description") or token.get("error")
                    if isinstance(token, dict)
                    else None
                )
                raise Unauthorized(
                    f"GitHub refused the sign-in code ({reason or 'no access token'}).",
                    code="signin_failed",
                )
            headers = {
                "Authorization": f"Bearer {token['access_token']}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            }
            async with self._http.get(
                self._api + "/user", headers=headers, timeout=timeout
            ) as resp:
                user = await _json(resp, "the user")
            if not isinstance(user, dict) or not isinstance(user.get("id"), int):
                raise Unauthorized("GitHub sent no user id.", code="signin_failed")
            email = user.get("email") if isinstance(user.get("email"), str) else None
            verified = False
            if email is None:  # no public email: the primary one, if GitHub verified it
                async with self._http.get(
                    self._api + "/user/emails", headers=headers, timeout=timeout
                ) as resp:
                    # 403/404 without the user:email scope: then there is no email to know.
                    listed = await _listed(resp)
                email = primary_email(listed)
                verified = email is not None
        except aiohttp.ClientError as exc:
            raise UpstreamFailed(f"Cannot reach GitHub: {exc}") from None
        name = user.get("name") or user.get("login") or str(user["id"])
        return Identity(self.name, str(user["id"]), str(name)[:200], email, verified)


async def _listed(resp: aiohttp.ClientResponse) -> object:
    if resp.status != 200:
        return None
    try:
        return await resp.json(content_type=None)
    except ValueError:
        return None


def primary_email(listed: object) -> str | None:
    """The primary, verified address of GitHub's ``GET /user/emails`` answer (a list of
    ``{email, primary, verified, visibility}``), or None."""
    if not isinstance(listed, list):
        return None
    for entry in listed:
        if (
            isinstance(entry, dict)
            and entry.get("primary") is True
            and entry.get("verified") is True
            and isinstance(entry.get("email"), str)
        ):
            return str(entry["email"])[:320]
    return None


def decode_id_token(raw: str, keys: KeySet, algorithms: list[str]) -> jwt.Token:
    """The ID token, once its signature holds by one of ``keys`` with one of ``algorithms``
    (never ``none``, never a symmetric one); JoseError otherwise."""
    allowed = [a for a in algorithms if a in ASYMMETRIC]
    registry = JWSRegistry(algorithms=allowed or ["RS256"], strict_check_header=False)
    return jwt.decode(raw, keys, registry=registry)


def check_claims(
    token: jwt.Token,
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    access_token: str | None,
    now: int | None = None,
) -> dict[str, Any]:
    """The ID token's claims once they hold (OpenID Connect Core 3.1.3.7): ``iss`` is the
    issuer, ``aud`` holds the client id (``azp`` names it if present), ``exp`` is to come
    (``iat`` and ``nbf`` not), ``nonce`` is ours, ``at_hash`` fits the access token.
    Unauthorized otherwise. Pure: ``now`` defaults to the clock."""
    params: dict[str, Any] = {"nonce": nonce, "client_id": client_id}
    if access_token:
        params["access_token"] = access_token
    claims = CodeIDToken(
        token.claims,
        token.header,
        {
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": client_id},
            "nonce": {"essential": True, "value": nonce},
        },
        params,
    )
    try:
        claims.validate(now=now, leeway=LEEWAY_S)
    except (JoseError, ValueError) as exc:
        raise Unauthorized(
            f"The sign-in provider's ID token did not check out ({exc}).", code="signin_failed"
        ) from None
    return dict(claims)


def make_provider(
    config: ProviderConfig, secret: SecretStr, http: aiohttp.ClientSession
) -> Provider:
    if config.github:
        return GitHubProvider(config, secret, http)
    return OidcProvider(config, secret, http)
