"""A Triserve request as vLLM takes it: the prompt (images collapsed to one placeholder each, which
vLLM expands again from the embeddings), the sampling parameters, and the request's progress as
the worker reads it (engine_interface.RequestProgress)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from vllm import SamplingParams as VllmSamplingParams
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

from workers.contract.block_hash import ImageSpan
from workers.contract.errors import InvalidRequestError
from workers.contract.sampling_params import SamplingParams
from workers.engine_messages import ImageEmbedding


def collapsed_prompt(token_ids: Sequence[int], spans: Sequence[ImageSpan]) -> list[int]:
    """The prompt with each image's run of placeholders cut to its first token: vLLM expands a
    placeholder to as many as its embedding has rows (and would expand a full run again)."""
    collapsed, cursor = [], 0
    for span in spans:
        collapsed += token_ids[cursor : span.offset + 1]
        cursor = span.offset + span.length
    return collapsed + list(token_ids[cursor:])


def image_data(images: Sequence[ImageEmbedding]) -> dict[str, Any]:
    """vLLM's multi_modal_data for precomputed (projected) image embeddings."""
    if not images:
        return {}
    return {"image": [torch.from_numpy(image.embeddings) for image in images]}


def cache_salt(spans: Sequence[ImageSpan]) -> str | None:
    """A salt for an imported prompt's block hashes. It comes without its images (only its KV),
    so vLLM would key its blocks by token ids alone, and two prompts that differ only in an
    image would share them."""
    return "images:" + ",".join(span.image_hash for span in spans) if spans else None


def as_lark(grammar: str) -> str:
    """A llguidance grammar (JSON text: one Lark grammar or one JSON schema, as the ingress builds
    them, cluster/constraints.py) as the Lark text vLLM's "grammar" option takes; a JSON schema
    becomes `%json`, its options (x-guidance) inside it."""
    try:
        (entry,) = json.loads(grammar)["grammars"]
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidRequestError("vLLM takes a grammar of one Lark grammar or JSON schema") from e
    if entry.get("lark_grammar"):
        return entry["lark_grammar"]
    if entry.get("json_schema") is not None:
        return "start: %json " + json.dumps(entry["json_schema"])
    raise InvalidRequestError("vLLM takes a grammar of one Lark grammar or JSON schema")


def vllm_sampling(
    params: SamplingParams, max_tokens: int, transfer: dict[str, Any] | None = None
) -> VllmSamplingParams:
    """Triserve's sampling parameters as vLLM's (new tokens per step, not cumulative);
    `transfer`: the KV connector's keys (kv_connector.py)."""
    grammar = StructuredOutputsParams(grammar=as_lark(params.grammar)) if params.grammar else None
    return VllmSamplingParams(
        max_tokens=max_tokens,
        temperature=params.temperature,
        top_k=max(params.top_k, 0),  # 0: off in both
        top_p=params.top_p,
        seed=params.seed,
        stop=list(params.stop) or None,
        stop_token_ids=list(params.stop_token_ids) or None,
        ignore_eos=params.ignore_eos,
        structured_outputs=grammar,
        output_kind=RequestOutputKind.DELTA,
        extra_args={"kv_transfer_params": transfer} if transfer else None,
    )


@dataclass
class VllmRequest:
    """One request in the vLLM engine, with what the worker reads of it."""

    request_id: str
    internal_id: str  # vLLM's id for it (the request id plus a random suffix)
    prompt_token_ids: list[int]  # as Triserve sent it: image placeholders expanded
    image_spans: list[ImageSpan]
    sampling_params: SamplingParams
    scheduler: Any  # vLLM's scheduler, whose Request object holds the live counters
    export_kv: bool = False
    num_resumed_tokens: int = 0
    num_output_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens from the prefix cache or an import
    triserve_hashes: list[bytes] = field(default_factory=list)  # its full blocks', in order

    def _live(self) -> Any:
        return self.scheduler.requests.get(self.internal_id)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + self.num_output_tokens

    @property
    def num_computed_tokens(self) -> int:
        live = self._live()
        return live.num_computed_tokens if live is not None else self.num_tokens
