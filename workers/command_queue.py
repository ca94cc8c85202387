"""CommandQueue: what caller threads asked a worker's engine thread to do, not yet done.

    queue:  [A: fetching]  [abort A]  [B: ready]  [encode C]
    ready:                              B           C           <- applied this turn
            A, then its abort, once A's arrays are in

A prefill or decode job's arrays are fetched on the worker's fetch threads (job_inputs.py)
while its command waits here. The engine thread applies every ready command in arrival order,
skipping those behind a still-fetching command of the same request: a slow fetch delays only
its own request, and an abort never lands before its job. Not thread-safe: WorkerCore calls it
under its lock.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, eq=False)  # compared by identity: two equal commands are two commands
class Command:
    run: Callable[[], None]
    request_id: str
    num_jobs: int = 0  # prefill/decode jobs it hands to the engine
    num_images: int = 0  # images it queues for encode
    inputs: Future[Any] | None = None  # the job's arrays being fetched; None: nothing to wait for

    @property
    def is_ready(self) -> bool:
        return self.inputs is None or self.inputs.done()


class CommandQueue:
    def __init__(self) -> None:
        self._commands: list[Command] = []  # in arrival order

    def append(self, command: Command) -> None:
        self._commands.append(command)

    def ready(self) -> list[Command]:
        """The commands the engine thread may apply now, in arrival order."""
        fetching: set[str] = set()  # requests with an earlier command still fetching
        ready = []
        for command in self._commands:
            if command.request_id in fetching or not command.is_ready:
                fetching.add(command.request_id)
            else:
                ready.append(command)
        return ready

    def remove(self, applied: list[Command]) -> None:
        done = {id(command) for command in applied}
        self._commands = [command for command in self._commands if id(command) not in done]

    def __len__(self) -> int:
        return len(self._commands)

    @property
    def num_jobs(self) -> int:
        return sum(command.num_jobs for command in self._commands)

    @property
    def num_images(self) -> int:
        return sum(command.num_images for command in self._commands)
