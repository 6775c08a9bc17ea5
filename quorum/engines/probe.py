"""The child side of the embedded engine's check: load the model, generate one token.

Run as ``python -m quorum.engines.probe MODEL.gguf``; it prints one JSON line
(``{"ok": true, "text": ...}``) and exits 0. A build for another CPU dies here
with SIGILL instead, which the parent (:func:`quorum.engines.portable.probe`)
reads from the exit status: this is why it runs as its own process.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m quorum.engines.probe MODEL.gguf", file=sys.stderr)
        return 2
    from llama_cpp import Llama

    llm = Llama(model_path=argv[0], n_ctx=256, verbose=False)
    out: Any = llm.create_completion("The sea is", max_tokens=1, temperature=0.0)
    text = str(out["choices"][0]["text"])
    print(json.dumps({"ok": True, "text": text}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
