"""The CLI's way to a *running* relay: the same operations as ``AdminOps``, over ``/api/v1``.

Synchronous (urllib, stdlib): the CLI does one call and exits. The admin
token travels only in the ``Authorization`` header. Errors come back as
``QuorumError`` carrying the relay's own message.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from quorum.errors import QuorumError

JSON = dict[str, Any]


class HttpAdmin:
    def __init__(self, base_url: str, admin_token: str, timeout_s: float = 30.0) -> None:
        base = base_url.rstrip("/")
        # Accept the nodes' tunnel URL too: wss://relay.example.com/tunnel.
        base = base.removesuffix("/tunnel")
        if base.startswith("ws://"):
            base = "http://" + base[5:]
        elif base.startswith("wss://"):
            base = "https://" + base[6:]
        self.base = base
        self._token = admin_token
        self._timeout = timeout_s

    def _call(self, method: str, path: str, body: JSON | None = None, **query: str | None) -> Any:
        params = {k: v for k, v in query.items() if v is not None}
        url = (
            self.base + "/api/v1" + path + ("?" + urllib.parse.urlencode(params) if params else "")
        )
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise QuorumError(f"the relay answered {exc.code}: {_message(exc.read())}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise QuorumError(f"cannot reach the relay at {self.base}: {reason}") from None

    def clusters(self) -> list[JSON]:
        return list(self._call("GET", "/clusters")["data"])

    def create_cluster(self, name: str, token: str | None = None) -> JSON:
        return dict(self._call("POST", "/clusters", {"name": name, "token": token}))

    def rotate_cluster(self, cluster: str, grace: object = "24h", token: str | None = None) -> JSON:
        path = "/clusters/" + urllib.parse.quote(cluster, safe="") + "/rotate"
        return dict(self._call("POST", path, {"grace": grace, "token": token}))

    def finish_rotation(self, cluster: str) -> JSON:
        path = "/clusters/" + urllib.parse.quote(cluster, safe="") + "/rotate/finish"
        return dict(self._call("POST", path, {}))

    def keys(self, cluster: str | None = None, include_revoked: bool = False) -> list[JSON]:
        revoked = "1" if include_revoked else None
        return list(self._call("GET", "/keys", cluster=cluster, revoked=revoked)["data"])

    def key(self, ref: str) -> JSON:
        return dict(self._call("GET", "/keys/" + urllib.parse.quote(ref, safe="")))

    def create_key(
        self,
        cluster: str | None,
        name: str = "",
        models: tuple[str, ...] | None = None,
        expires: object = None,
    ) -> JSON:
        body = {
            "cluster": cluster,
            "name": name,
            "models": None if models is None else list(models),
            "expires": expires,
        }
        return dict(self._call("POST", "/keys", body))

    def revoke_key(self, ref: str) -> JSON:
        return dict(self._call("DELETE", "/keys/" + urllib.parse.quote(ref, safe="")))

    def rotate_key(self, ref: str, expires: object = "keep") -> JSON:
        path = "/keys/" + urllib.parse.quote(ref, safe="") + "/rotate"
        return dict(self._call("POST", path, {"expires": expires}))

    def nodes(self, cluster: str | None = None) -> list[JSON]:
        return list(self._call("GET", "/nodes", cluster=cluster)["data"])

    def remove_node(self, cluster: str, node_id: str) -> JSON:
        path = "/nodes/" + urllib.parse.quote(node_id, safe="")
        return dict(self._call("DELETE", path, cluster=cluster))

    def usage(
        self, cluster: str | None, by: str, since: str | None = None, until: str | None = None
    ) -> JSON:
        return dict(self._call("GET", "/usage", cluster=cluster, by=by, since=since, until=until))


def _message(raw: bytes) -> str:
    try:
        data = json.loads(raw)
        return str(data["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return raw[:300].decode("utf-8", "replace") or "no details"
