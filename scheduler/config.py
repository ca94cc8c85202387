"""The scheduler's configuration (frozen: measured values are returned, never written here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SchedulerConfig:
    poll_timeout_s: float = 0.5  # longest a poll waits for a worker's next step
    max_retries: int = 2  # re-drives per request before it fails
    # Streamed tokens a re-drive may regenerate (checked against the client's, then swallowed).
    # 1 covers a failure right after the first token, e.g. a failed KV import; a re-drive
    # later in decode (full mid-decode recovery) is not supported yet: the request fails.
    max_replay_tokens: int = 1
    trace_capacity: int = 10_000  # finished requests whose traces stay readable
