"""The CLI's way to a running relay's user endpoints (``relay.user_api``), over ``/api/v1``.

``HttpAdmin`` with the calls only users have. The token (a personal ``qu_...`` token, or
the admin token where an operator's call allows it) travels only in ``Authorization``.
"""

from __future__ import annotations

import urllib.parse

from relay.admin_http import JSON, HttpAdmin


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


class HttpUsers(HttpAdmin):
    def me(self) -> JSON:
        return dict(self._call("GET", "/me"))

    def signout_everywhere(self) -> JSON:
        return dict(self._call("POST", "/me/signout", {}))

    def tokens(self) -> list[JSON]:
        return list(self._call("GET", "/tokens")["data"])

    def create_token(self, name: str = "") -> JSON:
        return dict(self._call("POST", "/tokens", {"name": name}))

    def revoke_token(self, ref: str) -> JSON:
        return dict(self._call("DELETE", "/tokens/" + _q(ref)))

    def members(self, cluster: str) -> list[JSON]:
        return list(self._call("GET", f"/clusters/{_q(cluster)}/members")["data"])

    def invite(self, cluster: str) -> JSON:
        return dict(self._call("POST", f"/clusters/{_q(cluster)}/invitations", {}))

    def accept(self, code: str) -> JSON:
        return dict(self._call("POST", "/invitations/accept", {"code": code}))

    def remove_member(self, cluster: str, user_id: str) -> JSON:
        return dict(self._call("DELETE", f"/clusters/{_q(cluster)}/members/{_q(user_id)}"))

    def users(self) -> list[JSON]:
        return list(self._call("GET", "/users")["data"])

    def set_disabled(self, user_id: str, disabled: bool) -> JSON:
        action = "disable" if disabled else "enable"
        return dict(self._call("POST", f"/users/{_q(user_id)}/{action}", {}))
