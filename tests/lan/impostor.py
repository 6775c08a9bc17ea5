"""An attacker on the LAN without the token: ``python3 -m tests.lan.impostor ADDRESS PORT TXT``.

It advertises ``_quorum._tcp`` with TXT properties it copied from a real
advert (``TXT``: JSON of key -> value, with its own node id) and answers TLS on
``PORT`` with a self-signed certificate, asking nothing of its clients. One
JSON line per event on stdout: ``{"event": "listening"}``, then for each
connection ``{"event": "connection"}`` and, once it closes, ``{"event": "closed",
"received": <plaintext bytes received after a handshake>, "handshake": bool}``.
Runs until stdin closes.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from quorum.discovery.txt import SERVICE_TYPE


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def self_signed(where: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "impostor")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (where / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (where / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(where / "cert.pem", where / "key.pem")
    return context


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    emit("connection")
    received = 0
    try:
        while data := await reader.read(65536):
            received += len(data)
    except (ConnectionError, ssl.SSLError):
        pass
    emit("closed", received=received, handshake=writer.get_extra_info("ssl_object") is not None)
    writer.close()


async def main() -> None:
    address, port, txt = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    with tempfile.TemporaryDirectory() as tmp:
        context = self_signed(Path(tmp))
        server = await asyncio.start_server(
            handle, address, port, ssl=context, ssl_handshake_timeout=10
        )
        info = ServiceInfo(
            SERVICE_TYPE,
            f"impostor ({txt['id'][:8]}).{SERVICE_TYPE}",
            addresses=[socket.inet_aton(address)],
            port=port,
            properties={k.encode(): v.encode() for k, v in txt.items()},
            server=f"impostor-{txt['id']}.local.",
        )
        zc = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
        await zc.async_register_service(info)
        emit("listening")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the test closes stdin
        await zc.async_unregister_service(info)
        await zc.async_close()
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
