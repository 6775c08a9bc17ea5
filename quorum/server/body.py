"""The node's names for the body helpers, which live in :mod:`quorum.api.body` and
:mod:`quorum.api.multipart` (shared with the relay, so both read one model from one body)."""

from quorum.api.body import json_object, model_of, replace_json_model
from quorum.api.multipart import (
    boundary_of,
    multipart_fields,
    multipart_file,
    replace_multipart_field,
)

__all__ = [
    "boundary_of",
    "json_object",
    "model_of",
    "multipart_fields",
    "multipart_file",
    "replace_json_model",
    "replace_multipart_field",
]
