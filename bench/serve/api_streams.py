"""One benchmark request over one API, timed the same way for both: the client's clock at each
chunk that carries tokens, the usage at the end, and how it failed if it did.

    grpc   Triserve's async client SDK (cluster/client.py), GenerateResponse chunks
    http   the `openai` SDK against the OpenAI-compatible API: streamed chat completions with
           `stream_options.include_usage`; Triserve's fields (request id, SLO targets,
           ignore_eos) ride in `extra_body`

An HTTP chunk has text, not token ids: each content chunk counts one token (the server sends one
chunk per engine step, and a step adds one token per request), and the last one takes whatever
the final usage says is left over (text held back for an incomplete character, for example).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field

import grpc

from cluster.client import AsyncTriserveClient, TriserveError

APIS = ("grpc", "http")


@dataclass
class StreamResult:
    chunk_ms: list[float] = field(default_factory=list)  # since the send, each chunk with tokens
    chunk_tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    is_rejected: bool = False
    error_code: str | None = None  # a gRPC status name, or "HTTP 503"
    error_details: str = ""
    retry_after_ms: float | None = None


async def stream_grpc(
    client: AsyncTriserveClient, request_id: str, kwargs: dict, sent: float
) -> StreamResult:
    result = StreamResult()
    stream = client.generate(request_id=request_id, **kwargs)
    try:
        async for chunk in stream:
            if chunk.token_ids:
                result.chunk_ms.append(round((time.perf_counter() - sent) * 1e3, 2))
                result.chunk_tokens.append(len(chunk.token_ids))
            if chunk.usage:
                result.prompt_tokens = chunk.usage.prompt_tokens
                result.cached_prompt_tokens = chunk.usage.cached_prompt_tokens
            result.finish_reason = chunk.finish_reason or result.finish_reason
    except TriserveError as e:
        result.is_rejected = e.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        result.error_code, result.error_details = e.code.name, e.details
        result.retry_after_ms = e.retry_after_ms
    finally:
        await stream.aclose()
    return result


async def stream_http(client, request_id: str, kwargs: dict, sent: float) -> StreamResult:
    """`client`: an openai.AsyncOpenAI; `kwargs`: BenchRequest.generate_kwargs("chat")."""
    import openai

    result = StreamResult()
    try:
        stream = await client.chat.completions.create(**chat_completion_args(request_id, kwargs))
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    result.chunk_ms.append(round((time.perf_counter() - sent) * 1e3, 2))
                    result.chunk_tokens.append(1)
                if chunk.choices and chunk.choices[0].finish_reason:
                    result.finish_reason = chunk.choices[0].finish_reason
                if chunk.usage:
                    _take_usage(result, chunk.usage)
    except openai.APIStatusError as e:
        result.is_rejected = e.status_code == 429
        result.error_code, result.error_details = f"HTTP {e.status_code}", str(e.message)
        retry_after = e.response.headers.get("retry-after")
        result.retry_after_ms = float(retry_after) * 1e3 if retry_after else None
    except openai.APIError as e:  # the connection broke, or an error event mid-stream
        result.error_code, result.error_details = "HTTP error", str(e)
    return result


def chat_completion_args(request_id: str, kwargs: dict) -> dict:
    """A gRPC-style chat request (messages with image bytes) -> chat.completions.create args."""
    messages = []
    for message in kwargs["messages"]:
        parts = []
        for part in message["content"]:
            if part["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": data_url(part["image"])}})
            else:
                parts.append({"type": "text", "text": part["text"]})
        messages.append({"role": message["role"], "content": parts})
    extra = {"request_id": request_id, "ignore_eos": kwargs.get("ignore_eos", False)}
    for key in ("ttft_ms", "tpot_ms"):
        if key in kwargs:
            extra[key] = kwargs[key]
    return {
        "model": kwargs.get("model", ""),
        "messages": messages,
        "max_completion_tokens": kwargs["max_tokens"],
        "temperature": kwargs.get("temperature", 0.0),
        "stream": True,
        "stream_options": {"include_usage": True},
        "extra_body": extra,
    }


def data_url(image: bytes) -> str:
    mime = "image/png" if image.startswith(b"\x89PNG") else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(image).decode()}"


def _take_usage(result: StreamResult, usage) -> None:
    result.prompt_tokens = usage.prompt_tokens
    details = usage.prompt_tokens_details
    result.cached_prompt_tokens = details.cached_tokens if details else None
    left_over = usage.completion_tokens - sum(result.chunk_tokens)
    if result.chunk_tokens and left_over > 0:
        result.chunk_tokens[-1] += left_over
