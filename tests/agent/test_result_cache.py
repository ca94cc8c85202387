import pytest

from agent.result_cache import ToolResultCache
from agent.tools import ToolResult, ToolSettings, ToolSpec


def _spec(name: str = "weather", cache_ttl_s: float = 60.0) -> ToolSpec:
    return ToolSpec(server_label="demo", name=name, settings=ToolSettings(cache_ttl_s=cache_ttl_s))


RESULT = ToolResult(text="sunny", is_error=False, latency_ms=420.0)


def test_hit_returns_the_result_marked_cached_with_no_latency():
    cache = ToolResultCache()
    assert cache.put(_spec(), {"city": "Oslo", "unit": "C"}, RESULT, now_s=0.0)
    hit = cache.get(_spec(), '{"unit": "C", "city": "Oslo"}', now_s=10.0)
    assert hit == ToolResult(text="sunny", is_error=False, latency_ms=0.0, is_cached=True)
    assert (cache.num_hits, cache.num_misses) == (1, 0)


def test_other_arguments_or_other_tool_miss():
    cache = ToolResultCache()
    cache.put(_spec(), {"city": "Oslo"}, RESULT, now_s=0.0)
    assert cache.get(_spec(), {"city": "Bergen"}, now_s=1.0) is None
    assert cache.get(_spec("forecast"), {"city": "Oslo"}, now_s=1.0) is None
    assert (cache.num_hits, cache.num_misses) == (0, 2)


def test_entry_expires_at_its_ttl_and_is_dropped():
    cache = ToolResultCache()
    cache.put(_spec(cache_ttl_s=60.0), {"city": "Oslo"}, RESULT, now_s=100.0)
    assert cache.get(_spec(), {"city": "Oslo"}, now_s=159.999) is not None
    assert cache.get(_spec(), {"city": "Oslo"}, now_s=160.0) is None
    assert len(cache) == 0
    assert (cache.num_hits, cache.num_misses) == (1, 1)


def test_tools_without_ttl_and_errors_are_not_stored():
    cache = ToolResultCache()
    assert not cache.put(_spec(cache_ttl_s=0.0), {}, RESULT, now_s=0.0)
    error = ToolResult(text="timeout", is_error=True, latency_ms=5000.0)
    assert not cache.put(_spec(), {}, error, now_s=0.0)
    assert len(cache) == 0


def test_least_recently_used_entry_is_evicted_first():
    cache = ToolResultCache(max_entries=2)
    for city in ("a", "b"):
        cache.put(_spec(), {"city": city}, RESULT, now_s=0.0)
    assert cache.get(_spec(), {"city": "a"}, now_s=1.0) is not None  # "b" is now the oldest use
    cache.put(_spec(), {"city": "c"}, RESULT, now_s=2.0)
    assert len(cache) == 2
    assert cache.get(_spec(), {"city": "b"}, now_s=3.0) is None
    assert cache.get(_spec(), {"city": "a"}, now_s=3.0) is not None
    assert cache.get(_spec(), {"city": "c"}, now_s=3.0) is not None


def test_storing_again_refreshes_the_expiry():
    cache = ToolResultCache()
    cache.put(_spec(cache_ttl_s=10.0), {}, RESULT, now_s=0.0)
    cache.put(_spec(cache_ttl_s=10.0), {}, ToolResult("rain", False, 300.0), now_s=8.0)
    assert cache.get(_spec(), {}, now_s=15.0).text == "rain"
    assert len(cache) == 1


def test_max_entries_must_be_positive():
    with pytest.raises(ValueError):
        ToolResultCache(max_entries=0)
