"""vLLM pools under Triserve's cluster: real Ray actors running vLLM in their processes, the
scheduler, the KV handoff through the object store, gRPC and the OpenAI HTTP API. The same
greedy tokens as Triserve's engine, disaggregated (E Triserve's encoder, P and D on vLLM),
colocated (EPD on vLLM) and across engines (EP on Triserve's engine, D on vLLM); the prefix
cache reported to the scheduler; a killed vLLM worker restarted and taken back, as a native one
is."""

from __future__ import annotations

import time

import pytest

from cluster.client import TriserveClient
from cluster.config import ClusterConfig, PoolConfig
from tests.support import make_png as png
from tests.vllm.conftest import BLOCK_SIZE
from workers.contract.images import decode_image
from workers.contract.sampling_params import SamplingParams

API_TOKEN, ADMIN_TOKEN = "vllm-api-token", "vllm-admin-token"
MODELS = ("vdisagg", "vcoloc", "vcross")


REQUESTS = {
    "text": ("Tell me about the sea and the ships that sail on it.", []),
    "one image": ("USER: <image>\nWhat is in this picture? ASSISTANT:", [png(1)]),
    "two images": ("Compare <image> with <image>, please.", [png(2), png(3, (30, 64))]),
}


@pytest.fixture(scope="module")
def vllm_cluster(ray_cluster, mini_model_dir):
    from cluster.launcher import start_cluster

    def pool(name: str, stages: str, model: str, engine: str = "vllm") -> PoolConfig:
        return PoolConfig(
            name=name, stages=stages, model=model, engine=engine, block_size=BLOCK_SIZE,
            kv_cache_memory_bytes=32 * 2**20, torch_threads=1,
        )  # fmt: skip

    config = ClusterConfig(
        models={model: str(mini_model_dir) for model in MODELS},
        pools=(
            pool("encode", "E", "vdisagg"),
            pool("prefill", "P", "vdisagg"),
            pool("decode", "D", "vdisagg"),
            pool("colocated", "EPD", "vcoloc"),
            pool("cross-prefill", "EP", "vcross", engine="native"),
            pool("cross-decode", "D", "vcross"),
        ),
        port=0,
        http_port=0,
        metrics_port=0,
        api_token=API_TOKEN,
        admin_token=ADMIN_TOKEN,
    )
    running = start_cluster(config)
    yield running
    running.stop()


@pytest.fixture
def client(vllm_cluster):
    with TriserveClient(vllm_cluster.address, API_TOKEN, ADMIN_TOKEN, timeout_s=120) as client:
        yield client


@pytest.fixture(scope="module")
def expected(native_engine, prompts):
    """Greedy tokens of a request on Triserve's engine in this process (no Ray, no gRPC)."""

    def run(text: str, images: list[bytes], max_tokens: int) -> list[int]:
        decoded = [decode_image(data) for data in images]
        embeddings = native_engine.encode(decoded) if decoded else []
        params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
        native_engine.add_request("ref", prompts.build(text, decoded).token_ids, params, embeddings)
        return native_engine.run_to_completion()["ref"].token_ids

    return run


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("case", REQUESTS)
def test_vllm_pools_give_triserves_tokens(client, expected, model, case):
    text, images = REQUESTS[case]
    done = client.complete(prompt=text, images=images, model=model, max_tokens=10, ignore_eos=True)
    assert done.token_ids == expected(text, images, 10)
    assert done.finish_reason == "length"


def test_the_openai_api_on_vllm_pools(vllm_cluster, expected):
    from openai import OpenAI

    openai = OpenAI(base_url=f"http://{vllm_cluster.http_address}/v1", api_key=API_TOKEN)
    text, _ = REQUESTS["text"]
    answer = openai.completions.create(model="vdisagg", prompt=text, max_tokens=6)
    assert answer.usage.completion_tokens <= 6 and answer.choices[0].finish_reason in (
        "stop",
        "length",
    )


def test_the_scheduler_sees_the_vllm_prefix_cache(client):
    text = "Once upon a time " + " ".join(f"in land number {i}" for i in range(40))
    first = client.complete(prompt=text, model="vcoloc", max_tokens=2)
    again = client.complete(prompt=text, model="vcoloc", max_tokens=2)
    assert again.token_ids == first.token_ids
    assert again.usage.cached_prompt_tokens >= BLOCK_SIZE
    (worker,) = next(p for p in client.cluster_state().pools if p.name == "colocated").workers
    assert worker.prefix_cache_blocks >= again.usage.cached_prompt_tokens // BLOCK_SIZE
    assert worker.cost_model.prefill_ms_per_token > 0  # its start-up profile


def test_a_killed_vllm_worker_is_restarted_and_taken_back(client):
    from tests.cluster.test_worker_lifecycle import at_capacity, kill_process, pool_state, wait_for

    (worker,) = pool_state(client, "decode").workers
    killed = time.monotonic()
    kill_process(worker.worker_id)
    wait_for(
        lambda: (
            (p := pool_state(client, "decode")).workers
            and p.workers[0].epoch > worker.epoch
            and at_capacity(p)
        ),
        "the restarted vLLM worker is taken back",
        timeout_s=240,
    )
    print(f"\nvLLM decode worker restarted and taken back in {time.monotonic() - killed:.1f} s")
    text, _ = REQUESTS["text"]
    done = client.complete(prompt=text, model="vdisagg", max_tokens=8, ignore_eos=True)
    assert len(done.token_ids) == 8
