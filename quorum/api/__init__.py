"""The HTTP API vocabulary node and relay share. Pure, stdlib only (``tests/test_layout.py``).

- :mod:`.endpoints`: the endpoint table (path, body kind, service types,
  label) and the API dialect a path speaks (``dialect``).
- :mod:`.body`: request bodies: JSON objects with a bounded depth, the
  ``model`` a body names, byte-exact rewrites, the content-encoding policy.
- :mod:`.multipart`: the one strict multipart parser.
- :mod:`.headers`: which headers a hop drops, and the hop header.
- :mod:`.errors`: an ``ApiError`` rendered in the caller's dialect.
- :mod:`.usage`: token counts read from answers.

Nothing is re-exported here: importing one module loads only what it needs
(``quorum.errors`` reaches :mod:`.errors` lazily, from ``ApiError.body``).
"""
