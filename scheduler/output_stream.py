"""What the client sees of one request: each token once, in order, then one final output.

Tokens only ever append. A re-drive does not regenerate what the client has: its jobs resume
after it, with the streamed tokens as part of their prompt (`ActiveRequest.num_resumed_tokens`,
lifecycle.py), so the new attempt's first token is the client's next one:

    client has:        t0 t1 t2
    re-drive attempt:  prefill(prompt t0 t1 t2) -> t3 t4 ...   all streamed

Each output costs a message on every hop to the client (scheduler -> ingress -> gRPC proxy ->
client), so outputs that queue up leave as one: a reader that falls behind under load catches up
in one message instead of adding one per step. (Holding outputs back to send fewer, as a stream
interval does, measured worse here: bench/serve at 48 req/s, 2 cores.)

    queued:  [t5] [t6] [t7, finish]   ->   read: [t5 t6 t7, finish]
"""

from __future__ import annotations

import asyncio
from collections import deque

from scheduler.request import RequestOutput, Usage


class OutputStream:
    def __init__(self, request_id: str, num_prompt_tokens: int) -> None:
        self.request_id = request_id
        self.num_prompt_tokens = num_prompt_tokens
        self.num_cached_prompt_tokens = 0
        self.token_ids: list[int] = []  # every token the client was sent
        self.is_closed = False  # the final output or an error is queued
        self._queue: deque[RequestOutput | BaseException] = deque()
        self._has_items = asyncio.Event()
        self._is_drained = False

    @property
    def usage(self) -> Usage:
        return Usage(self.num_prompt_tokens, len(self.token_ids), self.num_cached_prompt_tokens)

    def push(self, token_ids: list[int], finish_reason: str | None = None) -> None:
        """Send the current attempt's next tokens (and its finish reason, when it ends)."""
        if self.is_closed:
            return
        self.token_ids.extend(token_ids)
        if token_ids or finish_reason is not None:
            usage = self.usage if finish_reason is not None else None
            self._put(RequestOutput(self.request_id, list(token_ids), finish_reason, usage))

    def end(self, finish_reason: str) -> None:
        """Close the stream with no further tokens (cancel: finish_reason "abort")."""
        self._put(RequestOutput(self.request_id, [], finish_reason, self.usage))

    def fail(self, error: BaseException) -> None:
        self._put(error)

    def _put(self, item: RequestOutput | BaseException) -> None:
        if self.is_closed:
            return
        self.is_closed = isinstance(item, BaseException) or item.finish_reason is not None
        self._queue.append(item)
        self._has_items.set()

    def __aiter__(self) -> OutputStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self._is_drained:
            raise StopAsyncIteration
        while not self._queue:
            self._has_items.clear()
            await self._has_items.wait()
        item = self._queue.popleft()
        if isinstance(item, BaseException):
            self._is_drained = True
            raise item
        if self._queue and not isinstance(self._queue[0], BaseException):
            token_ids = list(item.token_ids)
            while self._queue and not isinstance(self._queue[0], BaseException):
                item = self._queue.popleft()  # an error stays queued: the tokens go out first
                token_ids += item.token_ids
            item = RequestOutput(self.request_id, token_ids, item.finish_reason, item.usage)
        self._is_drained = item.finish_reason is not None
        return item
