"""Engine adapters: how each engine lists its models, and which engines are here.

- :mod:`.base`: frozen ``ModelEntry`` / ``ServiceState`` and the injected HTTP getter.
- :mod:`.ollama`, :mod:`.openai_compat`: pure parsers of each engine's listing,
  plus the small async ``list_models`` that fetches and parses.
- :mod:`.detect`: which engine answers at a URL.
- :mod:`.manager`: the configured and auto-detected services, refreshed periodically.
- :mod:`.embedded`: the llama.cpp engine Quorum can run itself.
"""
