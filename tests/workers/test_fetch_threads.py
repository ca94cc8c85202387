"""A job's arrays are fetched off the engine thread: a slow transfer stalls only its own job."""

from __future__ import annotations

import threading
from dataclasses import replace

from tests.workers.support import (
    DEADLINE_S,
    GREEDY,
    finish_reason,
    has,
    is_finished,
    poll_until,
    token_ids,
)
from workers.contract.messages import DecodeJob, PrefillDone, PrefillJob
from workers.contract.sampling_params import SamplingParams

LONG = SamplingParams(max_tokens=200, ignore_eos=True, seed=0)
PROMPT = list(range(5, 25))


class StalledFetch:
    """Holds fetches of one transfer until `resume()`; `is_stalled` is set once one waits."""

    def __init__(self, transport, transfer_id: str) -> None:
        self.transfer_id = transfer_id
        self.is_stalled, self._resumed = threading.Event(), threading.Event()
        self._fetch = transport.fetch

    def __call__(self, ref, expected_epoch):
        if ref.transfer_id == self.transfer_id:
            self.is_stalled.set()
            self._resumed.wait(DEADLINE_S)
        return self._fetch(ref, expected_epoch)

    def resume(self) -> None:
        self._resumed.set()


def handed_off(prefiller, request_id: str) -> PrefillDone:
    prefiller.submit_prefill(
        PrefillJob(
            request_id=request_id,
            prompt_token_ids=PROMPT,
            sampling_params=GREEDY,
            images=[],
            decode_here=False,
        )
    )
    [done] = [d for e in poll_until(prefiller.poll, has("prefills")) for d in e.prefills]
    return done


def decode_job(done: PrefillDone, epoch: int) -> DecodeJob:
    return DecodeJob(
        request_id=done.request_id,
        prompt_token_ids=PROMPT,
        sampling_params=GREEDY,
        first_token_id=done.first_token_id,
        image_spans=done.image_spans,
        kv=done.kv,
        kv_dtype=done.kv_dtype,
        expected_epochs={"p-0": epoch},
    )


def test_running_requests_keep_going_while_another_jobs_kv_is_fetched(
    start_worker, transport, monkeypatch
):
    prefiller, decoder = start_worker("p-0", "P"), start_worker("d-0", "PD")
    decoder.submit_prefill(
        PrefillJob(
            request_id="running",
            prompt_token_ids=PROMPT,
            sampling_params=LONG,
            images=[],
            decode_here=True,
        )
    )
    poll_until(decoder.poll, lambda seen: token_ids(seen, "running") != [])
    slow = handed_off(prefiller, "slow")
    stalled = StalledFetch(transport, slow.kv.transfer_id)
    monkeypatch.setattr(transport, "fetch", stalled)
    try:
        decoder.submit_decode(decode_job(slow, prefiller.epoch))
        assert stalled.is_stalled.wait(DEADLINE_S)
        assert (decoder.load().num_waiting, decoder.is_idle()) == (1, False)
        decoder.submit_prefill(
            PrefillJob(
                request_id="quick",
                prompt_token_ids=PROMPT,
                sampling_params=GREEDY,
                images=[],
                decode_here=True,
            )
        )
        during = poll_until(
            decoder.poll,
            lambda seen: len(token_ids(seen, "running")) >= 3 and is_finished("quick")(seen),
            deadline_s=10.0,
        )
    finally:
        stalled.resume()
    assert token_ids(during, "slow") == []
    assert len(token_ids(during, "quick")) == GREEDY.max_tokens

    after = poll_until(decoder.poll, is_finished("slow"))
    assert (len(token_ids(after, "slow")), finish_reason(after, "slow")) == (
        GREEDY.max_tokens - 1, "length",
    )  # fmt: skip
    assert [c.transfer_id for e in during + after for c in e.consumed] == [slow.kv.transfer_id]


def test_an_abort_sent_while_its_jobs_kv_is_fetched_still_aborts_the_job(
    start_worker, transport, monkeypatch
):
    prefiller, decoder = start_worker("p-0", "P"), start_worker("d-0", "D")
    done = handed_off(prefiller, "r1")
    stalled = StalledFetch(transport, done.kv.transfer_id)
    monkeypatch.setattr(transport, "fetch", stalled)
    try:
        decoder.submit_decode(replace(decode_job(done, prefiller.epoch), sampling_params=LONG))
        assert stalled.is_stalled.wait(DEADLINE_S)
        decoder.abort("r1")
    finally:
        stalled.resume()

    seen = poll_until(decoder.poll, is_finished("r1"))
    assert finish_reason(seen, "r1") == "abort"
    assert len(token_ids(seen, "r1")) < LONG.max_tokens - 1
    load = decoder.load()
    assert (load.num_running, load.num_waiting, load.num_kv_blocks_used) == (0, 0, 0)
