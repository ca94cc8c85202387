"""End to end through real gRPC, Ray Serve and Ray actors: what a client of the cluster sees."""

from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster.client import TriserveClient, TriserveError
from scheduler.config import SchedulerConfig
from tests.cluster.conftest import ADMIN_TOKEN, API_TOKEN
from tests.support import make_png as png
from workers.contract.engine_config import EngineConfig
from workers.contract.sampling_params import SamplingParams
from workers.engine.engine import Engine
from workers.engine.prompt import PromptBuilder

REQUESTS = {
    "text": ("Tell me about the sea and the ships that sail on it.", []),
    "one_image": ("USER: <image>\nWhat is in this picture? ASSISTANT:", [png(1)]),
    "two_images": ("Compare <image> with <image>, please.", [png(2), png(3, (30, 64))]),
}


@pytest.fixture(scope="module")
def expected(tiny_model_dir):
    """Greedy tokens of each request from a local colocated engine (no Ray, no gRPC)."""
    from workers.contract.images import decode_image

    engine = Engine(EngineConfig(model_dir=str(tiny_model_dir)))
    builder = PromptBuilder(tiny_model_dir, engine.model_config, engine.tokenizer)

    def run(text: str, images: list[bytes], max_tokens: int) -> list[int]:
        decoded = [decode_image(data) for data in images]
        prompt = builder.build(text, decoded).token_ids
        params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
        engine.add_request("r", prompt, params, images=engine.encode(decoded))
        return engine.run_to_completion()["r"].token_ids

    return run


def wait_until(condition, timeout_s: float = 60.0, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def test_health_check_answers_serving(client):
    assert client.health() == "SERVING"


@pytest.mark.parametrize("case", sorted(REQUESTS))
def test_disaggregated_and_colocated_layouts_stream_the_same_tokens(client, expected, case):
    text, images = REQUESTS[case]
    answers = {}
    for model in ("disagg", "coloc"):
        chunks = list(
            client.generate(prompt=text, images=images, model=model, max_tokens=24, ignore_eos=True)
        )
        assert len(chunks) > 1  # streamed, not returned at the end
        assert chunks[-1].finish_reason == "length"
        assert chunks[-1].usage.completion_tokens == 24
        answers[model] = [t for chunk in chunks for t in chunk.token_ids]
    assert answers["disagg"] == answers["coloc"] == expected(text, images, 24)


def test_sixteen_concurrent_clients_all_get_their_answers(cluster, expected):
    cases = [(sorted(REQUESTS)[i % 3], ("disagg", "coloc")[i % 2], 8 + i) for i in range(16)]

    def one(case, model, max_tokens):
        text, images = REQUESTS[case]
        with TriserveClient(cluster.address, API_TOKEN, timeout_s=180) as client:
            return client.complete(
                prompt=text, images=images, model=model, max_tokens=max_tokens, ignore_eos=True
            ).token_ids

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda args: one(*args), cases))
    for (case, _, max_tokens), tokens in zip(cases, results, strict=True):
        assert tokens == expected(*REQUESTS[case], max_tokens)


def test_scaling_a_pool_up_and_down_under_load_loses_no_request(cluster, client, expected):
    text, images = REQUESTS["one_image"]

    def one(i):
        with TriserveClient(cluster.address, API_TOKEN, timeout_s=180) as c:
            return c.complete(
                prompt=text, images=images, model="disagg", max_tokens=40, ignore_eos=True
            ).token_ids

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(8)]
        assert client.scale("decode", 2).target_workers == 2
        futures += [pool.submit(one, i) for i in range(8, 12)]
        assert client.scale("decode", 1).target_workers == 1
        futures += [pool.submit(one, i) for i in range(12, 16)]
        results = [f.result(timeout=300) for f in futures]
    assert results == [expected(text, images, 40)] * 16

    def decode_pool_settled():
        (pool,) = [p for p in client.cluster_state().pools if p.name == "decode"]
        return len(pool.workers) == 1 and not pool.workers[0].draining

    wait_until(decode_pool_settled)


def test_cancelling_a_stream_frees_its_blocks_everywhere(client):
    text, images = REQUESTS["one_image"]
    # Nearly the whole context (1024 tokens): the cancel has seconds to arrive mid-decode even
    # on a loaded machine.
    sent = time.monotonic()
    stream = client.generate(
        prompt=text, images=images, model="disagg", max_tokens=960, ignore_eos=True,
        request_id="to-cancel",
    )  # fmt: skip
    first = next(stream)
    assert first.token_ids
    closed_ms = (time.monotonic() - sent) * 1e3
    stream.close()  # the client goes away mid-decode

    def back_to_baseline():
        state = client.cluster_state()
        workers = [w for pool in state.pools for w in pool.workers]
        # Blocks other tests' session calls keep pinned (paused KV) are not this request's.
        in_use = [w.kv_blocks_used - w.pinned_blocks for w in workers]
        return state.requests_in_flight == 0 and all(n == 0 for n in in_use)

    wait_until(back_to_baseline)
    trace = client.trace("to-cancel")
    assert trace.state == "cancelled", (
        f"{trace.state} at {trace.events[-1].time_ms:.0f} ms; the client closed its stream at "
        f"about {closed_ms:.0f} ms"
    )


def test_trace_shows_every_stage_and_transfer(client):
    text, _ = REQUESTS["one_image"]
    images = [png(4242)]  # seen by no other test: no worker holds its embeddings yet
    done = client.complete(
        prompt=text, images=images, model="disagg", max_tokens=8, request_id="traced"
    )
    trace = client.trace(done.request_id)
    names = [event.event for event in trace.events]
    for earlier, later in [
        ("queued", "encode_start"),
        ("encode_start", "encode_done"),
        ("prefill_start", "first_token"),
        ("first_token", "decode_start"),
        ("decode_start", "finished"),
    ]:
        assert names.index(earlier) < names.index(later)
    transfers = {e.event: e for e in trace.events if e.event.endswith("_transfer")}
    assert transfers["embedding_transfer"].bytes > 0 and transfers["kv_transfer"].bytes > 0
    times = [event.time_ms for event in trace.events]
    assert times == sorted(times) and trace.state == "finished"


def test_image_seen_before_skips_encode_on_the_worker_holding_its_embeddings(client):
    text, _ = REQUESTS["one_image"]
    images = [png(4343)]
    first = client.complete(prompt=text, images=images, model="disagg", max_tokens=4)
    again = client.complete(prompt=text, images=images, model="disagg", max_tokens=4)

    assert again.token_ids == first.token_ids
    names = [event.event for event in client.trace(again.request_id).events]
    assert "encode_skipped" in names and "encode_start" not in names
    assert "embedding_transfer" not in names


def scrape(address: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, from the cluster's /metrics endpoint."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as answer:
        body = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_metrics_endpoint_counts_a_text_requests_ttft_and_reads_the_scheduler(cluster, client):
    client.complete(prompt="Hello, metrics.", model="disagg", max_tokens=4)
    sand_ttft = ("triserve_ttft_seconds_count", (("request_class", "sand"),))

    def scraped_after_the_request():
        samples = scrape(cluster.metrics_address)
        return samples if samples.get(sand_ttft, 0) >= 1 else None

    samples = wait_until(scraped_after_the_request)
    pools = {dict(labels)["pool"] for name, labels in samples if name == "triserve_pool_workers"}
    assert pools == {"encode", "prefill", "decode", "colocated"}  # read on the scheduler's loop


def test_cluster_state_shows_a_cost_model_per_worker_and_slo_counts_per_class(client):
    client.complete(prompt="Hello, cost model.", model="coloc", max_tokens=4)
    state = client.cluster_state()

    workers = [w for pool in state.pools for w in pool.workers]
    assert workers and all(w.HasField("cost_model") for w in workers)
    for w in workers:
        assert set(w.cost_model.corrections) == {"encode", "prefill", "decode"}
        assert all(value > 0 for value in w.cost_model.corrections.values())
    classes = {row.request_class: row for row in state.classes}
    assert set(classes) == {"sand", "pebble", "rock"} and classes["sand"].finished >= 1
    assert {"encode", "prefill"} <= set(state.queued_by_stage)  # decode jobs go straight out


BAD_REQUESTS = {
    "corrupt image": dict(prompt="x <image>", images=[b"\x89PNG\r\n\x1a\nnot a png"]),
    "image count": dict(prompt="two <image> <image>", images=[png(1)]),
    "empty prompt": dict(prompt="   "),
    "long prompt": dict(prompt="word " * 3000),
    "temperature": dict(prompt="hi", temperature=-1.0),
    "top_p": dict(prompt="hi", top_p=0.0),
    "unknown model": dict(prompt="hi", model="no-such-model"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_gets_invalid_argument_and_the_server_keeps_serving(client, case):
    with pytest.raises(TriserveError) as error:
        client.complete(**BAD_REQUESTS[case])
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Traceback" not in error.value.details
    assert client.complete(prompt="still there?", model="coloc", max_tokens=2).token_ids


def test_request_that_cannot_make_its_slo_is_refused_at_once_with_a_retry_hint(client):
    with pytest.raises(TriserveError) as error:
        client.complete(prompt="hurry", model="coloc", max_tokens=2, ttft_ms=0.001)
    assert error.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "predicted TTFT" in error.value.details
    assert error.value.retry_after_ms is not None and error.value.retry_after_ms >= 100
    degraded = client.complete(
        prompt="hurry", model="coloc", max_tokens=64, ttft_ms=0.001, admission="degrade",
        ignore_eos=True,
    )  # fmt: skip
    assert len(degraded.token_ids) == SchedulerConfig().degrade_max_tokens
    best_effort = client.complete(
        prompt="hurry", model="coloc", max_tokens=3, ttft_ms=0.001, admission="best_effort",
        ignore_eos=True,
    )  # fmt: skip
    assert len(best_effort.token_ids) == 3


def test_scaling_an_unknown_pool_is_invalid_argument(client):
    with pytest.raises(TriserveError) as error:
        client.scale("no-such-pool", 1)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_requests_need_the_api_token_and_scaling_the_admin_token(cluster):
    for token in (None, "wrong"):
        with TriserveClient(cluster.address, api_token=token, admin_token=token) as client:
            for call in (lambda: client.complete(prompt="hi"), client.cluster_state):
                with pytest.raises(TriserveError) as error:
                    call()
                assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
    with TriserveClient(cluster.address, api_token=API_TOKEN, admin_token=API_TOKEN) as client:
        with pytest.raises(TriserveError) as error:
            client.scale("decode", 1)
        assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert client.complete(prompt="hi", model="coloc", max_tokens=2).token_ids
    with TriserveClient(cluster.address, API_TOKEN, ADMIN_TOKEN) as client:
        assert client.scale("decode", 1).name == "decode"


def test_no_capable_worker_is_unavailable(client):
    text, images = REQUESTS["one_image"]
    client.scale("encode", 0)
    try:
        with pytest.raises(TriserveError) as error:
            client.complete(prompt=text, images=images, model="disagg", max_tokens=2)
        assert error.value.code == grpc.StatusCode.UNAVAILABLE
        assert client.complete(prompt="text still works", model="disagg", max_tokens=2).token_ids
    finally:
        client.scale("encode", 1)


def test_chat_messages_are_templated_like_the_raw_prompt(client):
    image = REQUESTS["one_image"][1][0]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": "What is in this picture?"},
            ],
        }
    ]
    chat = client.complete(messages=messages, model="coloc", max_tokens=12, ignore_eos=True)
    text, images = REQUESTS["one_image"]
    raw = client.complete(prompt=text, images=images, model="coloc", max_tokens=12, ignore_eos=True)
    assert chat.token_ids == raw.token_ids
    assert chat.usage.prompt_tokens == raw.usage.prompt_tokens


def test_async_client_streams_and_server_reflection_lists_the_service(cluster):
    import asyncio

    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from cluster.client import AsyncTriserveClient

    async def run():
        async with AsyncTriserveClient(cluster.address, API_TOKEN) as client:
            stream = client.generate(prompt="hello", model="coloc", max_tokens=6)
            chunks = [c async for c in stream]
            return [t for c in chunks for t in c.token_ids], chunks[-1].finish_reason

    tokens, reason = asyncio.run(run())
    assert len(tokens) <= 6 and reason in ("stop", "length")

    with grpc.insecure_channel(cluster.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=30))
    services = {s.name for s in response.list_services_response.service}
    assert {"triserve.v1.Triserve", "grpc.health.v1.Health"} <= services


def test_a_duplicate_request_id_is_refused_and_the_original_keeps_streaming(cluster, client):
    stream = client.generate(
        prompt="a long answer please", model="coloc", max_tokens=120, ignore_eos=True,
        request_id="dup",
    )  # fmt: skip
    chunks = [next(stream)]
    with TriserveClient(cluster.address, API_TOKEN) as other:
        with pytest.raises(TriserveError) as error:
            other.complete(prompt="hi", model="coloc", request_id="dup")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    chunks += list(stream)
    assert chunks[-1].finish_reason == "length"
    assert sum(len(c.token_ids) for c in chunks) == 120


def test_the_slo_clock_starts_at_the_proxy_stamp_which_a_client_can_only_move_earlier(client):
    from cluster.client import build_request
    from proto.triserve.v1 import triserve_pb2_grpc as pb_grpc

    sent_s = time.time()
    request = build_request(
        prompt="clock", model="coloc", max_tokens=2, request_id="clocked", admission="best_effort"
    )  # admitted although its 5 s in front of the ingress miss the target
    request.proxy_received_unix_s = sent_s - 5.0  # as if it had queued 5 s at the proxy
    stub = pb_grpc.TriserveStub(client.channel)
    list(stub.Generate(request, metadata=client.auth.metadata(), timeout=60))
    trace = client.trace("clocked")
    assert trace.arrival_unix_ms / 1000.0 == pytest.approx(sent_s - 5.0, abs=0.01)
    queued = next(e for e in trace.events if e.event == "queued")
    assert queued.time_ms >= 5_000.0  # the wait counts against its TTFT
    classified = next(e for e in trace.events if e.event == "classified")
    assert classified.values["predicted_ttft_ms"] >= 5_000.0

    request.request_id, request.proxy_received_unix_s = "clocked-late", sent_s + 3600.0
    list(stub.Generate(request, metadata=client.auth.metadata(), timeout=60))
    late = client.trace("clocked-late").arrival_unix_ms / 1000.0
    assert sent_s <= late <= time.time()  # bounded to now: no later than the proxy's own stamp
