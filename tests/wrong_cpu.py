"""A stand-in ``llama_cpp`` built "for another CPU": it dies of SIGILL, as such a build does.

A real shared library executes an illegal instruction (``ud2`` on x86-64,
``udf`` on arm64). ``Llama()`` runs it (what ``quorum.engines.probe`` calls),
and ``python -m llama_cpp.server`` serves ``/v1/models`` like the real server
and runs it at the first generation, as a native build on the wrong machine
does at its first kernel. Put the returned folder first on ``PYTHONPATH``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ILLEGAL_C = r"""
void illegal(void) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("ud2");
#elif defined(__aarch64__)
    __asm__ volatile(".inst 0x00000000");
#else
#error "no illegal instruction known for this CPU"
#endif
}
"""

PACKAGE = """
import ctypes, os
_lib = ctypes.CDLL(os.path.join(os.path.dirname(__file__), "libillegal.so"))


def illegal():
    _lib.illegal()


class Llama:
    def __init__(self, **kwargs):
        illegal()
"""

SERVER = """
import argparse, json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from llama_cpp import illegal

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--model_alias", default="model")
args, _ = parser.parse_known_args()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        model = {"id": args.model_alias, "object": "model", "owned_by": "me"}
        body = json.dumps({"object": "list", "data": [model]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        illegal()

    def log_message(self, *a):
        print("request", *a, flush=True)


print("fake llama_cpp.server built for another CPU on", args.port, flush=True)
ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
"""


def build(root: Path) -> Path:
    """Write the stand-in package under ``root``; returns the folder for ``PYTHONPATH``."""
    package = root / "llama_cpp"
    (package / "server").mkdir(parents=True)
    (root / "illegal.c").write_text(ILLEGAL_C)
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc is not None, "a C compiler is needed (it builds the embedded engine too)"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-o", str(package / "libillegal.so"), str(root / "illegal.c")],
        check=True,
    )
    (package / "__init__.py").write_text(PACKAGE)
    (package / "server" / "__init__.py").write_text("")
    (package / "server" / "__main__.py").write_text(SERVER)
    return root
