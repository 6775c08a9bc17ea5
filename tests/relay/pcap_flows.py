"""A capture file (tcpdump ``-w``) read as TCP flows: what each connection carried each way.

Only what the capture tests need: classic pcap (either byte order, micro- or
nanosecond), IPv4 and IPv6 over Ethernet (``lo`` on Linux), Linux cooked
captures v1 and v2, and null/loopback framing; TCP payloads put in sequence
order per direction, retransmissions once.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from pathlib import Path

Endpoint = tuple[str, int]
Flow = tuple[Endpoint, Endpoint]  # (from, to): one direction of one connection

_LINK_OFFSET = {1: 14, 113: 16, 276: 20, 0: 4}


def _ip_payload(link: int, frame: bytes) -> bytes | None:
    offset = _LINK_OFFSET.get(link)
    if offset is None:
        raise ValueError(f"capture link type {link} is not read here")
    return frame[offset:]


def flows(path: Path) -> dict[Flow, bytes]:
    """Every direction of every TCP connection in the capture, its payload in order."""
    data = path.read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        raise ValueError("not a classic pcap file")
    (link,) = struct.unpack_from(order + "I", data, 20)
    segments: dict[Flow, dict[int, bytes]] = defaultdict(dict)
    pos = 24
    while pos + 16 <= len(data):
        _, _, caplen, _ = struct.unpack_from(order + "IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        packet = _ip_payload(link, frame)
        if not packet:
            continue
        version = packet[0] >> 4
        if version == 4:
            ihl = (packet[0] & 0x0F) * 4
            if packet[9] != 6:
                continue
            src, dst = ".".join(map(str, packet[12:16])), ".".join(map(str, packet[16:20]))
            tcp = packet[ihl:]
        elif version == 6:
            if packet[6] != 6:
                continue
            src, dst = packet[8:24].hex(), packet[24:40].hex()
            tcp = packet[40:]
        else:
            continue
        sport, dport, seq = struct.unpack_from(">HHI", tcp, 0)
        payload = tcp[(tcp[12] >> 4) * 4 :]
        if payload:
            segments[((src, sport), (dst, dport))].setdefault(seq, payload)
    return {
        flow: b"".join(part for _, part in sorted(parts.items()))
        for flow, parts in segments.items()
    }
