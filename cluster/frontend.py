"""What the gRPC and the HTTP (OpenAI) ingresses share: a GenerateRequest in, a stream of text
out. Both ingresses turn their wire format into a GenerateRequest and hand it here; nothing about
a request is implemented twice.

    generation = await frontend.start(request, arrival_time)   # limits, door, build, admission
    async for step in generation: ...                           # one GenerationStep per output
    generation.close()                                          # cancels it if unfinished

`start` returns only once the scheduler has admitted the request and its first tokens are
there, so an ingress knows the outcome (a refusal is an exception) before it answers anything:
the HTTP API sends its status line, and no chunk, before the first token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from cluster.constraints import request_tools
from cluster.detokenizer import IncrementalDetokenizer
from cluster.door import Door
from cluster.limits import LimitsConfig
from cluster.request_builder import ModelFrontend, RequestBuilder
from cluster.request_fields import has_images
from cluster.tool_calls.base import ParsedOutput, Tool
from proto.triserve.v1 import triserve_pb2 as pb
from scheduler.errors import DuplicateRequestError
from scheduler.request import Refusal, RequestOutput, RequestSpec, Usage


@dataclasses.dataclass(frozen=True)
class BuildLane:
    builder: RequestBuilder
    thread: ThreadPoolExecutor


@dataclasses.dataclass(frozen=True)
class GenerationStep:
    """New output of one request since the previous step."""

    token_ids: list[int]
    text: str  # their text (may be empty while a character is incomplete)
    finish_reason: str | None  # "stop", "length" or "cancelled" on the last step; else None
    usage: Usage | None  # on the last step only
    # On the last step of a request with tools: the whole answer, parsed into text and calls.
    parsed: ParsedOutput | None = None


class Frontend:
    def __init__(self, scheduler, model_dirs: dict[str, str], limits: LimitsConfig) -> None:
        self.scheduler = scheduler  # the control plane's actor handle
        self.limits = limits
        self.door = Door(scheduler)
        # Two build lanes, so that a text request never waits behind the image decoding of a
        # rock. One thread each, with its own tokenizers: a Rust tokenizer must not be used
        # from two threads at once.
        self._lanes = {
            has_images: BuildLane(
                RequestBuilder(
                    {name: ModelFrontend.load(name, path) for name, path in model_dirs.items()},
                    limits,
                ),
                ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"build-{lane}"),
            )
            for has_images, lane in ((False, "text"), (True, "images"))
        }

    @property
    def models(self) -> dict[str, ModelFrontend]:
        """The served models by name (the text lane's; read their names and limits only)."""
        return self._lanes[False].builder.models

    def model_for(self, name: str) -> ModelFrontend:
        """The model a request names ("" with one model: that one); UnknownModelError else."""
        return self._lanes[False].builder.model_for(name)

    async def start(self, request: pb.GenerateRequest, arrival_time: float) -> Generation:
        """Check, build and submit `request`; raise what refuses it (InvalidRequestError,
        UnknownModelError, AdmissionRejectedError, ...). `arrival_time`: when the call reached
        the server (time.time()); the SLO clock starts there."""
        lane = self._lanes[has_images(request)]
        model = lane.builder.check(request)  # an oversized request never waits for a lane
        self.door.open_if_needed()
        waited_ms = (time.time() - arrival_time) * 1000.0
        self.door.check(request, model.name, waited_ms)  # nor one admission would refuse
        # Decoding images and tokenising are CPU work: keep them off the event loop that
        # streams every other request's tokens.
        loop = asyncio.get_running_loop()
        spec, model = await loop.run_in_executor(
            lane.thread, lane.builder.build, request, arrival_time
        )
        generation = Generation(self.scheduler, spec, model, request_tools(request))
        await generation.wait_for_first_output()
        return generation


class Generation:
    """One admitted request's output stream. Iterate it once; close it when done (or gone)."""

    def __init__(
        self, scheduler, spec: RequestSpec, model: ModelFrontend, tools: list[Tool]
    ) -> None:
        self.spec = spec
        self.model = model
        self._scheduler = scheduler
        self._stream = scheduler.generate.options(num_returns="streaming").remote(spec)
        self._detokenizer = IncrementalDetokenizer(model.detokenizer, spec.sampling_params.stop)
        self.tools = tools  # what the answer may call (parsers leave other "calls" as text)
        self._text = ""  # the answer's text so far, as sent
        self.output_token_ids: list[int] = []  # the answer's tokens so far
        self._first: RequestOutput | None = None
        self._owns_request = True  # False when the scheduler refused it (e.g. a duplicate id)
        self._finished = False

    @property
    def request_id(self) -> str:
        return self.spec.request_id

    @property
    def text(self) -> str:
        """The answer's text so far."""
        return self._text

    async def wait_for_first_output(self) -> None:
        """Raise the scheduler's refusal, if it refuses; else hold the first output."""
        try:
            self._first = await self._next_output()
        except BaseException:
            self.close()
            raise

    async def __aiter__(self) -> AsyncIterator[GenerationStep]:
        try:
            output = self._first
            while output is not None:
                step = self._step(output)
                yield step
                if step.finish_reason is not None:
                    self._finished = True
                    return
                output = await self._next_output()
        finally:
            self.close()

    def close(self) -> None:
        """Cancel the request unless it finished (the client went away or the stream broke)."""
        if not self._finished and self._owns_request:
            self._finished = True
            self._scheduler.cancel.remote(self.spec.request_id)

    async def _next_output(self) -> RequestOutput | None:
        try:
            ref = await self._stream.__anext__()
        except StopAsyncIteration:
            return None
        try:
            output = await ref
        except Exception as e:
            self._owns_request = not isinstance(getattr(e, "cause", e), DuplicateRequestError)
            raise
        if isinstance(output, Refusal):
            self._owns_request = False
            raise output.error
        return output

    def _step(self, output: RequestOutput) -> GenerationStep:
        is_last = output.finish_reason is not None
        text = self._detokenizer.add(output.token_ids, is_last)
        self._text += text
        self.output_token_ids += output.token_ids
        finish_reason = None
        if is_last:
            known = output.finish_reason in ("stop", "length")
            finish_reason = output.finish_reason if known else "cancelled"
        parsed = None
        if is_last and self.tools and self.model.tool_format is not None:
            parsed = self.model.tool_format.parse(self._text, self.tools)
        return GenerationStep(
            token_ids=list(output.token_ids),
            text=text,
            finish_reason=finish_reason,
            usage=output.usage if is_last else None,
            parsed=parsed,
        )
