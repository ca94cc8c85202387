"""The native engine implements the engine interface a worker drives (workers/engine_interface.py):
every member, with the same parameter names, and a spec that describes what it loaded."""

from __future__ import annotations

import inspect

import pytest

from workers.contract.engine_config import EngineConfig
from workers.engine.engine import Engine
from workers.engine_interface import EngineInterface
from workers.engine_messages import KVLayout


def _interface_members() -> dict[str, object]:
    return {name: member for name, member in vars(EngineInterface).items() if name[0] != "_"}


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return Engine(EngineConfig(model_dir=str(tiny_model_dir), stages="EPD", num_kv_blocks=24))


def test_native_engine_offers_every_member_of_the_interface_with_its_parameters(engine):
    members = _interface_members()
    assert {"encode", "add_request", "add_prefilled", "step", "abort"} <= members.keys()
    missing = [name for name in members if not hasattr(engine, name)]
    assert missing == []
    mismatched = {}
    for name, member in members.items():
        if inspect.isfunction(member):
            wanted = list(inspect.signature(member).parameters)
            offered = list(inspect.signature(getattr(Engine, name)).parameters)
            if wanted != offered:
                mismatched[name] = (wanted, offered)
    assert mismatched == {}


def test_native_engine_spec_describes_the_kv_cache_it_allocated(engine):
    layers, _, num_blocks, _, kv_heads, head_dim = engine.kv_cache.tensor.shape
    spec = engine.spec
    assert spec.num_kv_blocks == num_blocks == 24
    assert spec.kv_layout == KVLayout(num_layers=layers, num_kv_heads=kv_heads, head_dim=head_dim)
    assert (spec.max_model_len, spec.vocab_size) == (
        engine.max_model_len,
        engine.model_config.text.vocab_size,
    )
    assert spec.image_token_id == engine.model_config.image_token_index


def test_encode_only_engine_has_no_kv_cache_and_no_prefix_cache(tiny_model_dir):
    encoder = Engine(EngineConfig(model_dir=str(tiny_model_dir), stages="E"))
    assert (encoder.spec.num_kv_blocks, encoder.spec.kv_layout) == (0, None)
    assert encoder.prefix_cache_hashes() == []
    assert encoder.take_prefix_cache_delta().is_empty()
