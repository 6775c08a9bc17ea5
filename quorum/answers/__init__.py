"""Pure filters on the answer path (no I/O): what the proxy checks or reshapes in an
engine's answer on its way to the client.

- :mod:`.cut`: a chat or completion answer that ends without a ``finish_reason``
  was cut off, and must never reach the client as a complete one.
- :mod:`.verbose`: a ``verbose_json`` transcription made from an engine's plain
  ``json`` one, for engines without timestamps.
"""
