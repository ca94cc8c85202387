"""Which jobs a worker takes, by the stages it runs (a subset of "EPD"): the one place of that
rule. A refused job fails with a non-retriable StageFailed (the scheduler placed it wrong).

    EncodeJob                               E
    PrefillJob                              P;  decode_here: P and D
    PrefillJob, resume_from + decode_here   D   (the continuation's prefill runs where its
                                                 paused KV is: workers/contract/worker_client.py)
    DecodeJob                               D
"""

from __future__ import annotations

from workers.contract.messages import DecodeJob, EncodeJob, PrefillJob

STAGE_LETTERS = {"encode": "E", "prefill": "P", "decode": "D"}


def stage_of(job: EncodeJob | PrefillJob | DecodeJob) -> str:
    if isinstance(job, EncodeJob):
        return "encode"
    return "prefill" if isinstance(job, PrefillJob) else "decode"


def refusal(worker_id: str, stages: str, job: EncodeJob | PrefillJob | DecodeJob) -> str | None:
    """Why a worker running `stages` cannot take `job`; None when it can."""
    stage = stage_of(job)
    if isinstance(job, PrefillJob) and job.decode_here:
        if "D" not in stages:
            return f"{worker_id} runs {stages}: it cannot decode here"
        if job.resume_from is not None:
            return None
    if STAGE_LETTERS[stage] not in stages:
        return f"{worker_id} runs {stages}, not {stage}"
    return None
