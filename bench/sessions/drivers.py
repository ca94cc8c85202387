"""One session's turns over one mode, through the `openai` SDK, timed by the client:

    stateless    chat completions, the whole history re-sent each turn (what clients do today)
    session_id   the same, with a `session_id` and `pause: false`: the session's calls keep
                 their queue priority and find the prefix cache where they ran, nothing pinned
    responses    the Responses API: each turn sends only its new message with
                 `previous_response_id`; the server holds the history, and the KV where the
                 scheduler decides to pin it (scheduler/pause_policy.py)

TTFT is taken at the first streamed text; token counts come from the final usage.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass

from bench.sessions.workload import Session, Turn

MODES = ("stateless", "session_id", "responses")
QUEUE_ANYWAY = {"admission": "best_effort", "ignore_eos": True}  # latency is measured, not refused


@dataclass(frozen=True)
class TurnRecord:
    mode: str
    session: int
    turn: int  # 1-based
    status: str  # "ok" or "failed"
    has_image: bool = False
    ttft_ms: float | None = None
    e2e_ms: float | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    error: str = ""


async def run_session(client, mode: str, model: str, session: Session, max_tokens: int) -> list:
    """Every turn of `session`, in order, after its pause; a failed turn ends the session."""
    records, history, previous_id = [], [], None
    for number, turn in enumerate(session.turns, start=1):
        await asyncio.sleep(turn.pause_before_s)
        started = time.perf_counter()
        try:
            if mode == "responses":
                record, previous_id, _ = await _responses_turn(
                    client, model, turn, previous_id, max_tokens, started
                )
            else:
                history.append({"role": "user", "content": _chat_parts(turn)})
                extra = {"session_id": f"s{session.index}", "pause": False}
                record, answer = await _chat_turn(
                    client, model, history, max_tokens, started,
                    extra if mode == "session_id" else {},
                )  # fmt: skip
                history.append({"role": "assistant", "content": answer})
        except Exception as e:  # recorded; the session cannot go on without this turn
            failed = TurnRecord(mode, session.index, number, "failed", error=repr(e)[:200])
            records.append(failed)
            break
        has_image = turn.image_png is not None
        records.append(TurnRecord(mode, session.index, number, "ok", has_image, **record))
    return records


async def _chat_turn(client, model, history, max_tokens, started, extra) -> tuple[dict, str]:
    stream = await client.chat.completions.create(
        model=model, messages=history, max_completion_tokens=max_tokens, temperature=0,
        stream=True, stream_options={"include_usage": True},
        extra_body={**QUEUE_ANYWAY, **extra},
    )  # fmt: skip
    ttft, text, usage = None, [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            ttft = ttft or _ms_since(started)
            text.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    details = usage.prompt_tokens_details
    return {
        "ttft_ms": ttft, "e2e_ms": _ms_since(started), "prompt_tokens": usage.prompt_tokens,
        "cached_tokens": details.cached_tokens if details else 0,
        "output_tokens": usage.completion_tokens,
    }, "".join(text)  # fmt: skip


async def _responses_turn(client, model, turn: Turn, previous_id, max_tokens, started):
    stream = await client.responses.create(
        model=model, input=[{"role": "user", "content": _response_parts(turn)}],
        previous_response_id=previous_id, max_output_tokens=max_tokens, temperature=0,
        stream=True, extra_body=QUEUE_ANYWAY,
    )  # fmt: skip
    ttft, final = None, None
    async for event in stream:
        if event.type == "response.output_text.delta":
            ttft = ttft or _ms_since(started)
        elif event.type in ("response.completed", "response.incomplete"):
            final = event.response
        elif event.type in ("response.failed", "error"):
            raise RuntimeError(f"{event.type}: {event}")
    usage = final.usage
    details = usage.input_tokens_details
    record = {
        "ttft_ms": ttft, "e2e_ms": _ms_since(started), "prompt_tokens": usage.input_tokens,
        "cached_tokens": details.cached_tokens if details else 0,
        "output_tokens": usage.output_tokens,
    }  # fmt: skip
    return record, final.id, final.output_text


def _chat_parts(turn: Turn) -> list[dict]:
    parts = [{"type": "text", "text": turn.text}]
    if turn.image_png is not None:
        parts.insert(0, {"type": "image_url", "image_url": {"url": _data_url(turn.image_png)}})
    return parts


def _response_parts(turn: Turn) -> list[dict]:
    parts = [{"type": "input_text", "text": turn.text}]
    if turn.image_png is not None:
        parts.insert(0, {"type": "input_image", "image_url": _data_url(turn.image_png)})
    return parts


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1e3, 2)
