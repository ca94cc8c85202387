"""Cluster configs read from YAML or the command line, with errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.config import ClusterConfig, ConfigError, PoolConfig
from cluster.config_sources import colocated_pools, load_config, parse_pools, resolve_config

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "cluster.example.yaml"


def layout(pools) -> list[tuple[str, str, int]]:
    return [(pool.name, pool.stages, pool.num_workers) for pool in pools]


def test_default_cluster_has_one_tiny_pool_per_stage():
    config = ClusterConfig()
    assert layout(config.pools) == [("encode", "E", 1), ("prefill", "P", 1), ("decode", "D", 1)]
    assert {pool.model for pool in config.pools} == {"tiny"}
    assert config.models == {"tiny": "tiny"}


def test_pool_specs_by_stage_name_or_letters():
    assert layout(parse_pools("encode=1,prefill=2,decode=3")) == [
        ("encode", "E", 1), ("prefill", "P", 2), ("decode", "D", 3)
    ]  # fmt: skip
    assert layout(parse_pools("ep=2,d=1")) == [("ep", "EP", 2), ("d", "D", 1)]
    assert layout(parse_pools(" E = 1 , PD=0 ")) == [("e", "E", 1), ("pd", "PD", 0)]
    assert layout(colocated_pools(3)) == [("colocated", "EPD", 3)]


@pytest.mark.parametrize(
    "spec,message",
    [
        ("ed=1", "'ed=1' is not STAGES=N"),
        ("epx=1", "'epx=1' is not STAGES=N"),
        ("ep", "'ep' is not STAGES=N"),
        ("ep=two", "N must be an integer"),
        ("ep=1,ep=2", "names a pool twice"),
    ],
)
def test_bad_pool_specs_are_rejected_clearly(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_pools(spec)


def test_example_file_loads_as_an_open_one_pool_per_stage_cluster():
    config = load_config(EXAMPLE)
    assert layout(config.pools) == [("encode", "E", 1), ("prefill", "P", 1), ("decode", "D", 1)]
    assert (config.api_token, config.admin_token) == (None, None)
    assert config.pool("decode").num_kv_blocks == 1024
    assert config.pool("decode").engine_config("/m").num_kv_blocks == 1024


def test_tokens_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("TRISERVE_API_TOKEN", "api-secret")
    monkeypatch.setenv("TRISERVE_ADMIN_TOKEN", "admin-secret")
    config = ClusterConfig.from_dict(
        {"api_token": "env:TRISERVE_API_TOKEN", "admin_token": "env:TRISERVE_ADMIN_TOKEN"}
    )
    assert (config.api_token, config.admin_token) == ("api-secret", "admin-secret")
    assert "secret" not in repr(config)


def test_a_missing_token_variable_is_an_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="admin_token: environment variable NO_SUCH_TOKEN"):
        ClusterConfig.from_dict({"admin_token": "env:NO_SUCH_TOKEN"})


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"prot": 1}, r"unknown key\(s\) \['prot'\]"),
        ({"port": "80"}, "port: expected int, got '80'"),
        ({"port": 70000}, r"port must be in \[0, 65535\]"),
        ({"pools": [{"name": "x", "stages": "EPD", "gpus": 1}]}, r"pools\[0\]: unknown key"),
        ({"pools": [{"stages": "EPD"}]}, r"pools\[0\]: name is required"),
        ({"pools": [{"name": "x", "stages": "ED"}]}, r"pools\[0\]: pool 'x': stages must be"),
        ({"pools": [{"name": "x", "stages": "EPD", "num_workers": True}]}, "expected int"),
        ({"pools": [{"name": "x", "stages": "EPD", "dtype": "int8"}]}, "dtype must be one of"),
        ({"pools": [{"name": "x", "stages": "EPD", "engine": "sglang"}]}, "engine must be one of"),
        ({"pools": [{"name": "x", "stages": "EPD", "engine": "vllm"}]},
         "needs block_size a multiple of 32"),
        ({"pools": [{"name": "x", "stages": "EP"}]}, "no pool runs prefill .P. or decode .D."),
        ({"pools": [{"name": "x", "stages": "EPD", "model": "big"}]}, "unknown model 'big'"),
        ({"models": {"a": "a", "b": "b"}, "pools": [{"name": "x", "stages": "EPD"}]},
         "model is required with several models"),
    ],
)  # fmt: skip
def test_bad_yaml_values_are_rejected_naming_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        ClusterConfig.from_dict(raw)


def test_yaml_pools_take_the_only_model_by_default(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "models: {llava: /models/llava}\n"
        "pools:\n  - {name: all, stages: epd, num_workers: 2, num_gpus: 1, torch_threads: 2}\n"
    )
    config = load_config(path)
    assert config.pools == (
        PoolConfig(name="all", stages="EPD", num_workers=2, model="llava", num_gpus=1.0,
                   torch_threads=2),
    )  # fmt: skip
    assert config.model_dir("llava") == Path("/models/llava")


def test_command_line_pools_replace_the_files_pools(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("port: 6000\n")
    assert layout(resolve_config(path, pools="ep=2,d=1").pools) == [("ep", "EP", 2), ("d", "D", 1)]
    assert resolve_config(path, colocated=2).port == 6000
    with pytest.raises(ConfigError, match="either --pools or --colocated"):
        resolve_config(path, pools="epd=1", colocated=1)


def test_an_unreadable_file_is_reported_with_its_path(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("pools: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: cannot read"):
        load_config(path)


def test_a_vllm_pool_in_yaml_and_from_the_command_line(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("pools:\n  - {name: pd, stages: PD, engine: vllm, block_size: 64}\n")
    (pool,) = load_config(path).pools
    assert (pool.engine, pool.block_size) == ("vllm", 64)
    assert pool.engine_config("/m").backend == "vllm"
    assert PoolConfig(name="d", stages="D").on_engine("vllm").block_size == 32
    assert PoolConfig(name="d", stages="D", block_size=64).on_engine("vllm").block_size == 64
    on_gpu = PoolConfig(name="d", stages="D", device="cuda").on_engine("vllm")
    assert (on_gpu.engine, on_gpu.block_size) == ("vllm", 16)


def test_the_vllm_example_file_loads():
    config = load_config(Path(__file__).parents[2] / "deploy" / "cluster.vllm.yaml")
    assert [(p.stages, p.engine, p.block_size) for p in config.pools] == [
        ("E", "vllm", 16), ("P", "vllm", 32), ("D", "vllm", 32),
    ]  # fmt: skip
    assert config.models == {"mini": "mini"}
