"""Identity keys, the cluster CA every member derives, and mutual TLS between members."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest

from quorum.errors import QuorumError
from quorum.secure import ClusterCA, ClusterTLS, Identity, cluster_discriminator, node_dns_name
from quorum.secure.identity import KEY_FILE, pin_of
from quorum.secure.tls import peer_node_id

TOKEN = "tok-" + "a" * 28
OTHER = "tok-" + "b" * 28


def test_identity_is_made_once_0600_and_kept(tmp_path: Path) -> None:
    first = Identity.load_or_create(tmp_path)
    mode = stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode)
    assert mode == 0o600
    again = Identity.load_or_create(tmp_path)
    assert again.fingerprint == first.fingerprint
    assert len(first.fingerprint) == 64 and first.short == first.fingerprint[:16]
    assert pin_of(first.fingerprint).startswith("sha256//")
    assert Identity.load_or_create(tmp_path / "other").fingerprint != first.fingerprint


def test_a_key_file_that_is_not_a_key_stops_the_node(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("not a key")
    with pytest.raises(QuorumError, match="not a PEM private key"):
        Identity.load_or_create(tmp_path)


def test_every_member_derives_the_same_ca_and_only_they_do() -> None:
    one, two = ClusterCA.from_token(TOKEN), ClusterCA.from_token(TOKEN)
    assert one.public_key_pem == two.public_key_pem
    assert one.cert.subject == two.cert.subject
    assert ClusterCA.from_token(OTHER).public_key_pem != one.public_key_pem


def test_the_discriminator_tells_clusters_apart_and_reveals_no_token() -> None:
    mark = cluster_discriminator(TOKEN)
    assert mark == cluster_discriminator(TOKEN)
    assert len(mark) == 8 and int(mark, 16) >= 0
    assert mark != cluster_discriminator(OTHER)
    assert mark not in TOKEN


def _node(tmp_path: Path, name: str, token: str, previous: tuple[str, ...] = ()) -> ClusterTLS:
    data = tmp_path / name
    return ClusterTLS(Identity.load_or_create(data), name, token, data, previous)


def _handshake(
    client: ssl.SSLContext, server: ssl.SSLContext, server_id: str, key: str | None = None
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Both ends of one TLS handshake, moved through memory; raises ssl.SSLError on refusal."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=node_dns_name(server_id, key))
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(10):
        for key, obj in (("c", c), ("s", s)):
            if not done[key]:
                try:
                    obj.do_handshake()
                    done[key] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return c, s
    raise AssertionError("the handshake did not finish")


def test_members_authenticate_each_other(tmp_path: Path) -> None:
    a, b = _node(tmp_path, "node-a", TOKEN), _node(tmp_path, "node-b", TOKEN)
    c, s = _handshake(a.client, b.server, "node-b")
    assert peer_node_id(s) == "node-a"
    assert peer_node_id(c) == "node-b"
    assert c.version() == "TLSv1.3"


def test_a_node_of_another_token_is_refused_both_ways(tmp_path: Path) -> None:
    a, stranger = _node(tmp_path, "node-a", TOKEN), _node(tmp_path, "evil", OTHER)
    with pytest.raises(ssl.SSLError):
        _handshake(stranger.client, a.server, "node-a")
    with pytest.raises(ssl.SSLError):
        _handshake(a.client, stranger.server, "evil")


def test_a_member_answering_for_another_node_id_is_refused(tmp_path: Path) -> None:
    a, b = _node(tmp_path, "node-a", TOKEN), _node(tmp_path, "node-b", TOKEN)
    with pytest.raises(ssl.CertificateError):
        _handshake(a.client, b.server, "node-c")


def test_a_client_without_a_certificate_is_no_peer(tmp_path: Path) -> None:
    b = _node(tmp_path, "node-b", TOKEN)
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.load_verify_locations(cadata=b.ca.cert_pem)
    _, s = _handshake(anonymous, b.server, "node-b")
    assert peer_node_id(s) is None


def test_previous_token_accepted_while_configured_then_refused(tmp_path: Path) -> None:
    old = _node(tmp_path, "old", OTHER)
    rotated = _node(tmp_path, "new", TOKEN, previous=(OTHER,))
    c, s = _handshake(old.client, rotated.server, "new")  # through the cross-signed CA
    assert peer_node_id(s) == "old" and peer_node_id(c) == "new"
    c, s = _handshake(rotated.client, old.server, "old")
    assert peer_node_id(s) == "new" and peer_node_id(c) == "old"
    done = _node(tmp_path, "done", TOKEN)  # the previous token dropped from its config
    with pytest.raises(ssl.SSLError):
        _handshake(old.client, done.server, "done")


def test_the_certificate_names_the_advertised_key(tmp_path: Path) -> None:
    a, b = _node(tmp_path, "node-a", TOKEN), _node(tmp_path, "node-b", TOKEN)
    _handshake(a.client, b.server, "node-b", b.identity.short)
    with pytest.raises(ssl.CertificateError):
        _handshake(a.client, b.server, "node-b", a.identity.short)  # an advert with another key
