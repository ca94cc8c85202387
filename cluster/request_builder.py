"""The ingress's front half: request bytes -> a GenerateRequest -> a validated scheduler request.

Everything a client can get wrong is caught here, before any worker sees the request: bytes that
are not the message, unknown model, empty prompt, corrupt or unsupported image, a request over
one of the limits (cluster/limits.py), bad SLO targets or sampling parameters. Each raises an
InvalidRequestError subclass. The checks run cheapest first: `parse_message` (request bytes),
`RequestBuilder.check` (counts and lengths, on the event loop), then `RequestBuilder.build` (on a
build lane: image headers, decoding, tokenising, prompt tokens).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError, Message

from cluster.chat_prompt import prompt_text
from cluster.constraints import GrammarChecker, constraint_grammar, request_tools
from cluster.limits import LimitsConfig, check_limit
from cluster.request_fields import ADMISSIONS, PRIORITIES, prompt_chars, prompt_images
from cluster.tool_calls.base import ToolCallFormat
from cluster.tool_calls.registry import detect_format
from proto.triserve.v1 import triserve_pb2 as pb
from scheduler.request import RequestSpec, SessionSpec, UnknownModelError
from workers.contract.errors import InvalidRequestError, PromptTooLongError
from workers.contract.images import decode_image, image_hash
from workers.contract.messages import ImageInput
from workers.contract.sampling_params import SamplingParams
from workers.engine.model_config import ModelConfig
from workers.engine.prompt import PromptBuilder, load_tokenizer


@dataclass
class ModelFrontend:
    """What the ingress needs of one model: its tokenizer, prompt rules, context length, and how
    it writes tool calls."""

    name: str
    tokenizer: object  # used by the build thread only
    detokenizer: object  # a second instance, for streaming text on the event loop
    prompt_builder: PromptBuilder
    max_model_len: int
    tool_format: ToolCallFormat | None  # None: the model cannot be given tools
    grammar_checker: GrammarChecker  # build thread only

    @classmethod
    def load(cls, name: str, model_dir: str | Path) -> ModelFrontend:
        config = ModelConfig.from_pretrained(model_dir)
        tokenizer = load_tokenizer(model_dir)
        return cls(
            name=name,
            tokenizer=tokenizer,
            detokenizer=load_tokenizer(model_dir),
            prompt_builder=PromptBuilder(model_dir, config, tokenizer),
            max_model_len=config.text.max_position_embeddings,
            tool_format=detect_format(getattr(tokenizer, "chat_template", None)),
            grammar_checker=GrammarChecker(tokenizer, config.text.vocab_size),
        )


class RequestBuilder:
    def __init__(
        self, models: dict[str, ModelFrontend], limits: LimitsConfig | None = None
    ) -> None:
        if not models:
            raise ValueError("a cluster serves at least one model")
        self.models = models
        self.limits = limits or LimitsConfig()

    def model_for(self, name: str) -> ModelFrontend:
        if not name and len(self.models) == 1:
            return next(iter(self.models.values()))
        if name not in self.models:
            raise UnknownModelError(
                f"unknown model {name!r}; this cluster serves {sorted(self.models)}"
            )
        return self.models[name]

    def check(self, request: pb.GenerateRequest) -> ModelFrontend:
        """The cheap checks, in time linear in the number of parts, none proportional to an
        image's or the prompt's size: run before the request waits for a build lane, so that an
        oversized request never holds one. Returns the request's model."""
        limits = self.limits
        limits.check(
            "max_request_id_chars", "request_id has", len(request.request_id), "characters"
        )
        model = self.model_for(request.model)
        limits.check("max_prompt_chars", "prompt has", prompt_chars(request), "characters")
        images = prompt_images(request)
        limits.check("max_images", "request has", len(images), "images")
        for i, data in enumerate(images):
            limits.check("max_image_bytes", f"image {i} has", len(data), "bytes")
        check_slo(request.slo)
        if request.sampling.HasField("max_tokens"):
            limit, name = limits.max_tokens_limit(model.max_model_len)
            asked = request.sampling.max_tokens
            check_limit("sampling.max_tokens asks for", asked, "tokens", limit, name)
        return model

    def build(
        self, request: pb.GenerateRequest, arrival_time: float | None = None
    ) -> tuple[RequestSpec, ModelFrontend]:
        """`arrival_time`: when the call reached the ingress (time.time()); None: now. The SLO
        clock starts there, so waiting for the build thread counts against the TTFT.

        A prompt plus `max_tokens` longer than the model's context is not refused: generation
        stops at the context, with finish reason "length"."""
        model = self.check(request)
        tools = [_template_tool(tool) for tool in request_tools(request)]
        prompt = prompt_text(request, model.tokenizer, tools)
        if not model.prompt_builder.holds_images(prompt.prefix_token_ids, prompt.num_prefix_images):
            prompt = prompt.rendered_whole()  # e.g. an answer that wrote the image token
        image_bytes = prompt.images
        images = [
            decode_image(data, self.limits.max_image_pixels, "limits.max_image_pixels")
            for data in image_bytes
        ]
        tail = model.prompt_builder.build(
            prompt.text,
            images[prompt.num_prefix_images :],
            add_special_tokens=not prompt.prefix_token_ids,
        )
        token_ids = prompt.prefix_token_ids + tail.token_ids
        limit, name = self.limits.prompt_token_limit(model.max_model_len)
        if len(token_ids) > limit:
            raise PromptTooLongError(
                f"prompt has {len(token_ids):,} tokens; the limit is {name} = {limit:,}"
            )
        added_tokens = model.tokenizer.get_added_vocab() if request.tools else ()
        grammar = constraint_grammar(request, model.tool_format, model.name, added_tokens)
        if grammar is not None:
            model.grammar_checker.check(grammar)
        spec = RequestSpec(
            request_id=request.request_id or uuid.uuid4().hex,
            model=model.name,
            prompt_token_ids=token_ids,
            images=[
                ImageInput(image_hash(image), data, image.width * image.height)
                for image, data in zip(images, image_bytes, strict=True)
            ],
            sampling_params=sampling_params(request.sampling, grammar).with_seed(),
            slo_ttft_ms=request.slo.ttft_ms if request.slo.HasField("ttft_ms") else None,
            slo_tpot_ms=request.slo.tpot_ms if request.slo.HasField("tpot_ms") else None,
            priority=PRIORITIES.get(request.priority, "interactive"),
            admission=ADMISSIONS.get(request.admission),
            arrival_time=time.time() if arrival_time is None else arrival_time,
            session=session_spec(request),
        )
        return spec, model


def _template_tool(tool) -> dict:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


def parse_message(message_type: type[Message], raw: bytes | Message, max_bytes: int) -> Message:
    """Request bytes off the wire (the proxy passes them on unparsed) -> a `message_type`, or
    InvalidRequestError: more than `max_bytes` (checked before parsing), not that message, a
    truncated one, or a string field that is not UTF-8. A message passes as is."""
    if isinstance(raw, Message):
        size = raw.ByteSize()
    elif isinstance(raw, bytes | bytearray | memoryview):
        size = len(raw)
    else:
        raise InvalidRequestError(f"expected {message_type.DESCRIPTOR.full_name} bytes")
    check_limit("request has", size, "bytes", max_bytes, "limits.max_request_bytes")
    if isinstance(raw, Message):
        return raw
    try:
        return message_type.FromString(bytes(raw))
    except DecodeError as e:
        reason = str(e).rpartition(": ")[2] or "cannot parse it"
        raise InvalidRequestError(
            f"the request is not a valid {message_type.DESCRIPTOR.full_name} ({reason})"
        ) from None


def check_slo(slo: pb.SLO) -> None:
    """SLO targets, when set, are positive and finite (milliseconds)."""
    for key in ("ttft_ms", "tpot_ms"):
        value = getattr(slo, key)
        if slo.HasField(key) and not (math.isfinite(value) and value > 0):
            raise InvalidRequestError(
                f"slo.{key} must be a positive, finite number of milliseconds, got {value:g}"
            )


def session_spec(request: pb.GenerateRequest) -> SessionSpec | None:
    """The request's place in a conversation, or None (InvalidRequestError when malformed)."""
    if not request.HasField("session"):
        return None
    session = request.session
    if not session.session_id:
        raise InvalidRequestError("session.session_id is empty")
    expected = session.expected_pause_s if session.HasField("expected_pause_s") else None
    if expected is not None and not (math.isfinite(expected) and expected >= 0):
        raise InvalidRequestError(
            f"session.expected_pause_s must be a finite number >= 0, got {expected:g}"
        )
    return SessionSpec(
        session_id=session.session_id,
        pause=session.pause,
        resume_of=session.resume_of or None,
        expected_pause_s=expected,
    )


def sampling_params(sampling: pb.SamplingParams, grammar: str | None = None) -> SamplingParams:
    """Protobuf sampling fields (and the answer's grammar, cluster/constraints.py) ->
    SamplingParams (InvalidSamplingParamsError when invalid)."""
    return SamplingParams(
        max_tokens=sampling.max_tokens if sampling.HasField("max_tokens") else 16,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p if sampling.HasField("top_p") else 1.0,
        seed=sampling.seed if sampling.HasField("seed") else None,
        stop_token_ids=tuple(sampling.stop_token_ids),
        stop=tuple(sampling.stop),
        ignore_eos=sampling.ignore_eos,
        grammar=grammar,
    )
