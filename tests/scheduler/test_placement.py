"""Earliest-completion placement: backlog + transfer + compute, lowered by cached state."""

from __future__ import annotations

import pytest

from scheduler.cache_directory import CacheDirectory, prompt_block_hashes
from scheduler.cost_model import CostModel
from scheduler.forecast import Forecaster, RequestShape, StageForecast, WorkerLoadView
from scheduler.policy import EarliestCompletionPolicy, PlacementRequest, WorkerView
from scheduler.request import RequestSpec
from scheduler.request_class import RequestCost
from scheduler.stage import Stage
from workers.contract.cost_profile import DecodeCost, LinearCost, StepBudgets, WorkerProfile

BLOCK = 16
IMG = 99
PROFILE = WorkerProfile(
    encode=LinearCost(base_ms=10.0, per_unit_ms=1.0),  # per image token
    prefill=LinearCost(base_ms=2.0, per_unit_ms=0.5),  # per prompt token
    decode=DecodeCost(base_ms=3.0, per_seq_ms=1.0, per_context_token_ms=0.0),
    budgets=StepBudgets(max_num_batched_tokens=1024, max_encode_images=4),
    tpot_target_ms=200.0,
    image_tokens_per_image=8,
    image_token_id=IMG,
    block_size=BLOCK,
)


class Cluster:
    """Workers with known costs and backlogs, and the policy that places on them."""

    def __init__(self, **backlogs_ms: float) -> None:
        self.costs = CostModel(alpha=0.25)
        self.caches = CacheDirectory()
        self.loads = {w: WorkerLoadView(w, ms, 0, 0) for w, ms in backlogs_ms.items()}
        for worker_id in backlogs_ms:
            self.costs.add_worker(worker_id, PROFILE)
        self.policy = EarliestCompletionPolicy(
            Forecaster(self.costs, self.caches, lambda w, _: self.loads[w])
        )

    def place(self, stage, shape, workers, previous=None, allowed=None):
        request = PlacementRequest(spec(), stage, previous, shape, allowed)
        return self.policy.place(request, workers)

    def forecasts(self, stage, shape, workers, previous=None):
        request = PlacementRequest(spec(), stage, previous, shape)
        return {f.worker_id: f for f in self.policy.forecasts(request, workers)}


def spec():
    return RequestSpec("r1", "tiny", [1, 2, 3])


def view(worker_id, stages="P", is_draining=False):
    return WorkerView(worker_id, "tiny", stages, is_draining, num_active=0)


def text_shape(num_tokens=64):
    prompt = list(range(1, num_tokens + 1))
    blocks = prompt_block_hashes(prompt, [], IMG, 0, BLOCK)
    return RequestShape(RequestCost(0, 0, num_tokens, 0), (), (), tuple(blocks), BLOCK), blocks


def image_shape():
    """Two images of 8 embedding rows each in a 40-token prompt."""
    prompt = [IMG] * 16 + list(range(1, 25))
    blocks = prompt_block_hashes(prompt, ["cat", "dog"], IMG, 8, BLOCK)
    cost = RequestCost(num_images=2, num_image_tokens=16, num_prompt_tokens=40, max_image_pixels=0)
    return RequestShape(cost, ("cat", "dog"), (8, 8), tuple(blocks), BLOCK)


def test_prefill_goes_to_the_worker_predicted_to_finish_first():
    cluster = Cluster(a=10.0, b=12.0)
    shape, _ = text_shape(64)

    forecasts = cluster.forecasts(Stage.PREFILL, shape, [view("a"), view("b")])

    assert forecasts["a"] == StageForecast(Stage.PREFILL, "a", 10.0 + 34.0, 34.0, 0.0, 0)
    assert forecasts["b"] == StageForecast(Stage.PREFILL, "b", 12.0 + 34.0, 34.0, 0.0, 0)
    assert cluster.place(Stage.PREFILL, shape, [view("a"), view("b")]) == "a"


def test_equal_forecasts_go_to_the_lowest_worker_id():
    cluster = Cluster(b=5.0, a=5.0)
    shape, _ = text_shape(64)

    assert cluster.place(Stage.PREFILL, shape, [view("b"), view("a")]) == "a"


def test_worker_holding_the_prompts_leading_blocks_wins_although_a_little_busier():
    cluster = Cluster(a=10.0, b=12.0)
    shape, blocks = text_shape(64)
    cluster.caches.reset_worker("b", blocks[:3], [])

    forecasts = cluster.forecasts(Stage.PREFILL, shape, [view("a"), view("b")])

    assert forecasts["b"] == StageForecast(Stage.PREFILL, "b", 12.0 + 10.0, 10.0, 0.0, 48)
    assert forecasts["a"].completion_ms == 44.0
    assert cluster.place(Stage.PREFILL, shape, [view("a"), view("b")]) == "b"


def test_cached_blocks_after_a_missing_first_block_give_no_affinity():
    cluster = Cluster(a=10.0, b=12.0)
    shape, blocks = text_shape(64)
    cluster.caches.reset_worker("b", blocks[1:], [])

    assert cluster.forecasts(Stage.PREFILL, shape, [view("b")])["b"].num_cached == 0
    assert cluster.place(Stage.PREFILL, shape, [view("a"), view("b")]) == "a"


def test_fully_cached_prompt_still_computes_its_last_token():
    cluster = Cluster(a=0.0)
    shape, blocks = text_shape(64)
    cluster.caches.reset_worker("a", blocks, [])

    forecast = cluster.forecasts(Stage.PREFILL, shape, [view("a")])["a"]

    assert forecast.num_cached == 63
    assert forecast.compute_ms == 2.0 + 0.5


def test_encoder_holding_the_images_embeddings_predicts_no_compute():
    cluster = Cluster(e1=0.0, e2=10.0)
    encoders = [view("e1", "E"), view("e2", "E")]
    cluster.caches.reset_worker("e2", [], ["cat", "dog"])

    forecasts = cluster.forecasts(Stage.ENCODE, image_shape(), encoders)

    assert forecasts["e1"] == StageForecast(Stage.ENCODE, "e1", 26.0, 26.0, 0.0, 0)
    assert forecasts["e2"] == StageForecast(Stage.ENCODE, "e2", 10.0, 0.0, 0.0, 2)
    assert cluster.place(Stage.ENCODE, image_shape(), encoders) == "e2"


def test_encoder_holding_one_of_two_images_encodes_the_other():
    cluster = Cluster(e1=0.0, e2=10.0)
    encoders = [view("e1", "E"), view("e2", "E")]
    cluster.caches.reset_worker("e2", [], ["cat"])

    forecast = cluster.forecasts(Stage.ENCODE, image_shape(), encoders)["e2"]

    assert forecast == StageForecast(Stage.ENCODE, "e2", 10.0 + 18.0, 18.0, 0.0, 1)
    assert cluster.place(Stage.ENCODE, image_shape(), encoders) == "e1"


def test_prefill_leaves_the_encode_worker_while_transfers_are_not_yet_measured():
    cluster = Cluster(e=30.0, p=0.0)
    workers = [view("e", "EP"), view("p", "P")]

    forecasts = cluster.forecasts(Stage.PREFILL, image_shape(), workers, previous="e")

    assert forecasts["p"] == StageForecast(Stage.PREFILL, "p", 22.0, 22.0, 0.0, 0)
    assert forecasts["e"] == StageForecast(Stage.PREFILL, "e", 52.0, 22.0, 0.0, 0)
    assert cluster.place(Stage.PREFILL, image_shape(), workers, previous="e") == "p"


def test_measured_embedding_transfer_keeps_prefill_on_the_encode_worker():
    cluster = Cluster(e=30.0, p=0.0)
    workers = [view("e", "EP"), view("p", "P")]
    # 400 bytes per embedding row at 100 bytes per ms: 4 ms per row, 64 ms for 16 rows
    cluster.costs.transfers.observe("embedding", nbytes=3_200, num_units=8, fetch_ms=32.0)

    forecasts = cluster.forecasts(Stage.PREFILL, image_shape(), workers, previous="e")

    assert forecasts["p"] == StageForecast(Stage.PREFILL, "p", 64.0 + 22.0, 22.0, 64.0, 0)
    assert forecasts["e"] == StageForecast(Stage.PREFILL, "e", 30.0 + 22.0, 22.0, 0.0, 0)
    assert cluster.place(Stage.PREFILL, image_shape(), workers, previous="e") == "e"


def test_measured_kv_transfer_keeps_decode_on_the_prefill_worker():
    cluster = Cluster(pd=0.0, d=0.0)
    cluster.loads["pd"] = WorkerLoadView("pd", 0.0, num_decoding=3, decode_context_tokens=0)
    workers = [view("pd", "PD"), view("d", "D")]
    shape, _ = text_shape(64)

    assert cluster.place(Stage.DECODE, shape, workers, previous="pd") == "d"
    # 10 bytes per KV token at 100 bytes per ms: 0.1 ms per token, 6.4 ms for 64 tokens
    cluster.costs.transfers.observe("kv", nbytes=1_000, num_units=100, fetch_ms=10.0)
    forecasts = cluster.forecasts(Stage.DECODE, shape, workers, previous="pd")

    assert forecasts["pd"] == StageForecast(Stage.DECODE, "pd", 7.0, 7.0, 0.0, 0)
    assert forecasts["d"].transfer_ms == 6.4
    assert forecasts["d"].compute_ms == 4.0
    assert cluster.place(Stage.DECODE, shape, workers, previous="pd") == "pd"


def test_only_allowed_workers_are_candidates():
    cluster = Cluster(a=0.0, b=500.0)
    shape, _ = text_shape(64)
    workers = [view("a"), view("b")]

    assert cluster.place(Stage.PREFILL, shape, workers, allowed=frozenset({"b"})) == "b"
    assert cluster.place(Stage.PREFILL, shape, workers, allowed=frozenset({"gone"})) is None


def test_draining_worker_gets_no_new_work_however_fast():
    cluster = Cluster(a=0.0, b=500.0)
    shape, _ = text_shape(64)

    assert cluster.place(Stage.PREFILL, shape, [view("a", is_draining=True), view("b")]) == "b"
    assert cluster.place(Stage.PREFILL, shape, [view("a", is_draining=True)]) is None


def test_workers_that_cannot_run_the_stage_are_not_candidates():
    cluster = Cluster(e=0.0, p=100.0)
    shape, _ = text_shape(64)

    assert cluster.place(Stage.PREFILL, shape, [view("e", "E"), view("p", "P")]) == "p"


def test_placement_without_the_requests_shape_is_a_caller_error():
    cluster = Cluster(a=0.0)

    with pytest.raises(ValueError, match="needs the request's shape"):
        cluster.place(Stage.PREFILL, None, [view("a")])
