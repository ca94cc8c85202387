"""A worker taken back by a restarted control plane drops everything it held for the old one:
its running requests end with "abort", and the arrays it exported are freed."""

from __future__ import annotations

from tests.workers.support import GREEDY, finish_reason, has, poll_until, wait_for
from workers.contract.messages import PrefillJob
from workers.contract.sampling_params import SamplingParams

LONG = SamplingParams(max_tokens=900, ignore_eos=True, seed=0)  # runs well past the abort


def prefill_job(request_id: str, decode_here: bool, sampling_params=GREEDY) -> PrefillJob:
    return PrefillJob(
        request_id=request_id,
        prompt_token_ids=list(range(5, 25)),
        sampling_params=sampling_params,
        images=[],
        decode_here=decode_here,
    )


def test_abort_all_ends_running_requests_and_frees_exported_kv(start_worker, transport):
    worker = start_worker("epd-0", "EPD", num_kv_blocks=128)
    worker.submit_prefill(prefill_job("exported", decode_here=False))
    poll_until(worker.poll, has("prefills"))
    assert len(transport.held("epd-0")) == 1  # the prompt's KV, waiting for a decoder
    worker.submit_prefill(prefill_job("endless", decode_here=True, sampling_params=LONG))
    poll_until(worker.poll, lambda seen: any(e.tokens for e in seen))

    worker.abort_all()

    seen = poll_until(worker.poll, lambda seen: finish_reason(seen, "endless") is not None)
    assert finish_reason(seen, "endless") == "abort"
    assert transport.held("epd-0") == []
    wait_for(worker.is_idle)
    worker.submit_prefill(prefill_job("after", decode_here=True))  # it still serves
    seen = poll_until(worker.poll, lambda seen: finish_reason(seen, "after") is not None)
    assert finish_reason(seen, "after") == "length"
