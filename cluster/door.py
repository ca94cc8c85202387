"""The door: a request the admission gate already closes is refused before it is built
(scheduler/admission_gate.py says why and what the gate is). There are two doors, the same
class: one in Serve's proxy, before Serve routes a call to an ingress replica (`refusal_of`,
cluster/serve_grpc.py; the cheapest refusal after Serve's own back-pressure), and one in the
ingress, for what passed the first (it also knows how long the call queued in front of it).

    door.open_if_needed()           starts a task that fetches the gate every REFRESH_S and
                                    hands back what was refused at the door since the last
    door.check(request, model)      AdmissionRejectedError when the gate refuses the request
    door.refusal_of(request_bytes)  the same error, or None, for the proxy: never raises

A request's class is read from its shape alone: no image is sand, a few small images a pebble.
Anything that may be a rock (rock_min_images or more images, an image header of
rock_min_image_pixels or more, a prompt whose UTF-8 bytes could reach rock_min_prompt_tokens
tokens) and anything unreadable goes to the scheduler, which decides. So does everything while
the gate is older than STALE_S (the control plane is slow, or restarting).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections import Counter

from PIL import Image

from cluster.errors import cut
from cluster.request_fields import ADMISSIONS, prompt_images
from proto.triserve.v1 import triserve_pb2 as pb
from scheduler.admission_gate import AdmissionGate
from scheduler.errors import AdmissionRejectedError

logger = logging.getLogger("triserve.ingress")
REFRESH_S = 0.1
STALE_S = 1.0
MIN_RETRY_AFTER_MS = 100.0
TEMPLATE_TOKENS = 64  # what a chat template or BOS may add to a prompt, at most (bound)
TOKENS_PER_MESSAGE = 16
PROXY_MAX_BYTES = 4 * 2**20  # larger calls pass the proxy's door: the ingress checks limits first


class Door:
    def __init__(self, scheduler) -> None:  # the control plane's actor handle
        self._scheduler = scheduler
        self._gate: AdmissionGate | None = None
        self._fetched_at = 0.0  # time.monotonic()
        self._refused: Counter[str] = Counter()  # since the last fetch, by request class
        self._task: asyncio.Task | None = None

    @property
    def gate(self) -> AdmissionGate | None:
        """The latest gate fetched (None before the first): the scheduler's forecast, which
        the agent controller also prices its model calls with."""
        return self._gate

    def open_if_needed(self) -> None:
        """Start fetching the gate (on the ingress's event loop), once."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._fetch_forever())

    def check(self, request: pb.GenerateRequest, model: str, waited_ms: float = 0.0) -> None:
        """`waited_ms`: since the call reached the proxy; it adds to the gate's prediction."""
        gate = self._gate
        if gate is None or time.monotonic() - self._fetched_at > STALE_S:
            return
        request_class = door_class(request, gate, model)
        if request_class is None:
            return
        if request.admission not in ADMISSIONS:
            return  # the builder refuses it as invalid
        target = request.slo.ttft_ms if request.slo.HasField("ttft_ms") else None
        policy = ADMISSIONS[request.admission]
        refusal = gate.refusal(model, request_class, target, policy, waited_ms)
        if refusal is None:
            return
        predicted, target = refusal
        self._refused[request_class] += 1
        retry_after = max(MIN_RETRY_AFTER_MS, predicted - target)
        raise AdmissionRejectedError(
            f"request {cut(request.request_id)!r} ({request_class}) rejected: predicted TTFT "
            f"{predicted:.0f} ms > target {target:.0f}; retry after {retry_after:.0f} ms",
            retry_after,
        )

    def refusal_of(self, data: bytes) -> AdmissionRejectedError | None:
        """The refusal of a serialized GenerateRequest, or None when it may go on (anything
        unreadable goes on: the ingress says what is wrong with it)."""
        gate = self._gate
        if gate is None or len(data) > PROXY_MAX_BYTES:
            return None
        try:
            request = pb.GenerateRequest.FromString(data)
            models = list(gate.models)
            model = request.model or (models[0] if len(models) == 1 else "")
            self.check(request, model)
        except AdmissionRejectedError as refusal:
            return refusal
        except Exception:  # not a request the door can read
            return None
        return None

    async def _fetch_forever(self) -> None:
        while True:
            refused, self._refused = dict(self._refused), Counter()
            try:
                call = self._scheduler.admission_gate.remote(refused)
                self._gate = await asyncio.wait_for(call, timeout=STALE_S)
                self._fetched_at = time.monotonic()
            except Exception as error:  # the control plane is busy or restarting: try again
                self._refused.update(refused)
                logger.debug("fetching the admission gate failed: %r", error)
            await asyncio.sleep(REFRESH_S)


def door_class(request: pb.GenerateRequest, gate: AdmissionGate, model: str) -> str | None:
    """ "sand" or "pebble" when the request's shape says so for certain; else None."""
    model_gate = gate.models.get(model)
    if model_gate is None:
        return None
    images = prompt_images(request)
    tokens_at_most = _prompt_bytes(request) + TEMPLATE_TOKENS
    tokens_at_most += len(images) * model_gate.image_tokens_per_image
    if tokens_at_most >= gate.rock_min_prompt_tokens or len(images) >= gate.rock_min_images:
        return None
    if not images:
        return "sand"
    for data in images:
        try:
            width, height = Image.open(io.BytesIO(data)).size  # the header only
        except Exception:  # the builder says what is wrong with it
            return None
        if width * height >= gate.rock_min_image_pixels:
            return None
    return "pebble"


def _prompt_bytes(request: pb.GenerateRequest) -> int:
    """A bound on the prompt's text tokens: a token is at least one UTF-8 byte."""
    if request.WhichOneof("prompt") == "raw":
        return len(request.raw.text.encode())
    messages = request.conversation.messages
    texts = [m.role for m in messages] + [part.text for m in messages for part in m.content]
    return sum(len(text.encode()) for text in texts) + TOKENS_PER_MESSAGE * len(messages)
