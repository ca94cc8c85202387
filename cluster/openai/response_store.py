"""Stored responses of the Responses API: what `GET /v1/responses/{id}` returns and what
`previous_response_id` continues. One SQLite file (stdlib sqlite3, WAL mode), by default in
Triserve's cache folder, so that stored responses outlive a restart of the ingress and of the
control plane; the ingress replicas of one machine share it.

    responses(seq, id, created_at, model, session_id, response, conversation)
      seq           insertion order (AUTOINCREMENT: never reused), for the count limit
      response      the response object, JSON
      conversation  what the call that continues it is built from (responses_conversion.py's
                    Conversation, JSON): instructions, tools, items with the output appended
    run_traces(id, created_at, trace)
      trace         an agent run's trace (agent/run_trace.py), JSON, for GET .../{id}/trace

Retention, applied on each write: rows older than `max_age_s` go, and so do rows more than
`max_count` writes old (`seq` at most the newest seq - max_count): O(log n) per write, where an
exact count would walk the table. A row past its age is not returned even before a write prunes
it. Every operation is one short transaction; callers on an event loop run them in a thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    model TEXT NOT NULL,
    session_id TEXT NOT NULL,
    response TEXT NOT NULL,
    conversation TEXT
);
CREATE INDEX IF NOT EXISTS responses_by_age ON responses (created_at);
CREATE TABLE IF NOT EXISTS run_traces (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    trace TEXT NOT NULL
);
"""
# Several replicas write the same file; a writer waits this long for another's transaction.
BUSY_TIMEOUT_S = 2.0
FILE_NAME = "responses.sqlite3"


@dataclass(frozen=True)
class ResponsesConfig:
    """Where stored responses are kept, and for how long (the cluster config's `responses`)."""

    path: str | None = None  # the SQLite file; None: responses.sqlite3 in the cache folder
    max_age_s: float = 7 * 24 * 3600.0
    max_count: int = 100_000

    def __post_init__(self) -> None:
        if not self.max_age_s > 0:
            raise ValueError(f"responses.max_age_s must be > 0, got {self.max_age_s}")
        if self.max_count < 1:
            raise ValueError(f"responses.max_count must be >= 1, got {self.max_count}")

    def store_path(self) -> Path:
        if self.path is not None:
            return Path(self.path).expanduser()
        # Where the presets are written ($TRISERVE_CACHE or ~/.cache/triserve). Imported here:
        # the module loads torch, which a process that builds requests has loaded already.
        from workers.engine.model_writer import cache_dir

        return cache_dir() / FILE_NAME


@dataclass(frozen=True)
class StoredResponse:
    id: str
    created_at: float  # unix seconds
    model: str
    session_id: str  # the conversation's first response id
    response: dict  # the response object
    conversation: dict | None  # None while the response is in progress


class ResponseStore:
    def __init__(self, path: str | Path, config: ResponsesConfig | None = None) -> None:
        self.config = config or ResponsesConfig()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection, used by one thread at a time (the lock), from whichever thread.
        self._connection = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints
            self._connection.executescript(SCHEMA)

    @classmethod
    def open(cls, config: ResponsesConfig) -> ResponseStore:
        return cls(config.store_path(), config)

    def put(self, stored: StoredResponse) -> None:
        """Insert, or replace the row of the same id (its `seq` kept); then prune."""
        conversation = None if stored.conversation is None else json.dumps(stored.conversation)
        row = (
            *(stored.id, stored.created_at, stored.model, stored.session_id),
            *(json.dumps(stored.response), conversation),
        )
        oldest = time.time() - self.config.max_age_s
        with self._write() as db:
            db.execute(
                "INSERT INTO responses (id, created_at, model, session_id, response, conversation)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " response = excluded.response, conversation = excluded.conversation",
                row,
            )
            db.execute("DELETE FROM responses WHERE created_at < ?", (oldest,))
            db.execute(
                "DELETE FROM responses WHERE seq <= (SELECT max(seq) FROM responses) - ?",
                (self.config.max_count,),
            )

    def get(self, response_id: str) -> StoredResponse | None:
        """The response, unless unknown, deleted or past its age."""
        oldest = time.time() - self.config.max_age_s
        with self._lock:
            row = self._connection.execute(
                "SELECT id, created_at, model, session_id, response, conversation"
                " FROM responses WHERE id = ? AND created_at >= ?",
                (response_id, oldest),
            ).fetchone()
        if row is None:
            return None
        conversation = None if row[5] is None else json.loads(row[5])
        return StoredResponse(*row[:4], response=json.loads(row[4]), conversation=conversation)

    def delete(self, response_id: str) -> bool:
        """Whether there was such a response (its run's trace goes with it)."""
        with self._write() as db:
            db.execute("DELETE FROM run_traces WHERE id = ?", (response_id,))
            return db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0

    def put_trace(self, response_id: str, trace: dict) -> None:
        """Keep an agent run's trace (pruned by age, as responses are)."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO run_traces (id, created_at, trace) VALUES (?, ?, ?)",
                (response_id, now, json.dumps(trace)),
            )
            db.execute(
                "DELETE FROM run_traces WHERE created_at < ?", (now - self.config.max_age_s,)
            )

    def get_trace(self, response_id: str) -> dict | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT trace FROM run_traces WHERE id = ?", (response_id,)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. BEGIN IMMEDIATE takes the file's write lock at once: a busy
        file waits BUSY_TIMEOUT_S there, rather than failing halfway through."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")
