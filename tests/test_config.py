from __future__ import annotations

from pathlib import Path

import pytest

from quorum.config import EngineKind, ServiceType, load_config
from quorum.config.load import env_overrides
from quorum.errors import ConfigError

MANIFEST = """
node: {name: studio, port: 32768}
cluster: {token: "0123456789abcdef0123"}
relay: {url: "wss://relay.example.com/tunnel"}
services:
  - name: vllm-qwen
    engine: vllm
    url: http://localhost:8000/v1
    models: [{hf: Qwen/Qwen3-30B-A3B}]
  - name: asr-qwen
    type: stt
    engine: vllm
    url: http://localhost:8001/v1
    features: [timestamps]
    models: [{id: Qwen/Qwen3-ASR-1.7B}]
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_design_manifest_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MANIFEST), env={})
    assert cfg.node.name == "studio"
    llm, asr = cfg.services
    assert llm.type is ServiceType.LLM and llm.engine is EngineKind.VLLM
    assert llm.models[0].name == "Qwen/Qwen3-30B-A3B"
    assert asr.type is ServiceType.STT and asr.features == frozenset({"timestamps"})


def test_hosts_manifest_applies_only_this_node(tmp_path: Path) -> None:
    text = """
node: {name: box}
hosts:
  - id: box
    services: [{name: ollama, engine: ollama, url: "http://127.0.0.1:11434"}]
  - id: other
    services: [{name: vllm, engine: vllm, url: "http://127.0.0.1:8000/v1"}]
"""
    cfg = load_config(write(tmp_path, text), env={})
    assert [s.name for s in cfg.all_services()] == ["ollama"]


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("node: {prot: 1}", "node.prot", "unknown key"),
        ("node: {port: 99999}", "node.port", "less than or equal"),
        ("services: [{name: a}]", "services.0.url", "required"),
        ("services: [{name: a, url: 'ftp://x'}]", "services.0.url", "pattern"),
        ("services: [{name: a, url: 'http://x', type: video}]", "services.0.type", "llm"),
        (
            "services: [{name: a, url: 'http://x', models: [{}]}]",
            "services.0.models.0",
            "'id' or 'hf'",
        ),
        ("cluster: {token: short}", "cluster.token", "at least 16"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert info.value.key == key
    assert words in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_duplicate_service_names_refused(tmp_path: Path) -> None:
    text = "services: [{name: a, url: 'http://x'}, {name: a, url: 'http://y'}]"
    with pytest.raises(ConfigError, match="two services are named 'a'"):
        load_config(write(tmp_path, text), env={})


def test_broken_yaml_says_where(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 3, column 8"):
        load_config(write(tmp_path, "node:\n  name: a\n   port: 1\n"), env={})


def test_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(str(tmp_path / "nope.yaml"), env={})


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "node: {name: from-file, port: 1000}")
    env = {"QUORUM_NODE__PORT": "2000", "QUORUM_NAME": "from-env"}
    cfg = load_config(path, env=env, overrides={"node": {"name": "from-flag"}})
    assert (cfg.node.name, cfg.node.port) == ("from-flag", 2000)


def test_quorum_config_env_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "node: {name: via-env}")
    assert load_config(env={"QUORUM_CONFIG": path}).node.name == "via-env"


def test_env_values_keep_strings_where_strings_are_meant() -> None:
    assert env_overrides({"QUORUM_NAME": "1234", "QUORUM_NODE__PORT": "5"}) == {
        "node": {"name": "1234", "port": 5}
    }


def test_engine_aliases(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, "services: [{name: a, engine: llama.cpp, url: 'http://x:1'}]"), env={}
    )
    assert cfg.services[0].engine is EngineKind.LLAMACPP


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MANIFEST), env={})
    with pytest.raises(ValueError, match="frozen"):
        cfg.node.port = 1  # type: ignore[misc]
