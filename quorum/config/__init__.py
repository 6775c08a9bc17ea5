"""Configuration: frozen models (:mod:`.models`) and their loading (:mod:`.load`)."""

from quorum.config.load import default_data_dir, load_config
from quorum.config.models import (
    Config,
    EngineKind,
    ModelRef,
    ServiceConfig,
    ServiceType,
)

__all__ = [
    "Config",
    "EngineKind",
    "ModelRef",
    "ServiceConfig",
    "ServiceType",
    "default_data_dir",
    "load_config",
]
