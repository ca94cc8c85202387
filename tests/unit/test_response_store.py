"""The Responses API's store of responses (SQLite): what is put is got back until deleted or
past its retention, across reopening the file, and from several connections at once."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cluster.openai.response_store import ResponsesConfig, ResponseStore, StoredResponse


def stored(response_id: str, created_at: float | None = None, **response) -> StoredResponse:
    return StoredResponse(
        id=response_id,
        created_at=time.time() if created_at is None else created_at,
        model="m",
        session_id="resp_first",
        response={"id": response_id, "status": "completed", **response},
        conversation={"instructions": None, "tools": [], "items": [{"role": "user"}]},
    )


@pytest.fixture
def path(tmp_path):
    return tmp_path / "store" / "responses.sqlite3"  # its folder is made on opening


def test_a_response_put_is_got_back_until_it_is_deleted(path):
    store = ResponseStore(path)
    store.put(stored("resp_a", metadata={"k": "v"}))
    got = store.get("resp_a")
    assert got == stored("resp_a", created_at=got.created_at, metadata={"k": "v"})
    assert store.get("resp_unknown") is None
    assert store.delete("resp_a") and store.get("resp_a") is None
    assert not store.delete("resp_a")


def test_putting_the_same_id_again_replaces_the_in_progress_row(path):
    store = ResponseStore(path)
    in_progress = stored("resp_a", status="in_progress")
    store.put(StoredResponse(**{**in_progress.__dict__, "conversation": None}))
    assert store.get("resp_a").conversation is None
    store.put(stored("resp_a"))
    assert store.get("resp_a").response["status"] == "completed"
    assert store.get("resp_a").conversation is not None


def test_responses_survive_reopening_the_file(path):
    first = ResponseStore(path)
    first.put(stored("resp_a"))
    first.close()
    assert ResponseStore(path).get("resp_a").response["id"] == "resp_a"
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_write_prunes_responses_past_their_age_and_reads_never_return_them(path):
    store = ResponseStore(path, ResponsesConfig(max_age_s=60.0))
    store.put(stored("resp_old", created_at=time.time() - 61))
    assert store.get("resp_old") is None  # past its age, though not pruned yet
    store.put(stored("resp_new"))
    assert store.get("resp_new") is not None
    rows = sqlite3.connect(path).execute("SELECT id FROM responses").fetchall()
    assert rows == [("resp_new",)]


def test_a_write_keeps_only_the_newest_max_count_responses(path):
    store = ResponseStore(path, ResponsesConfig(max_count=3))
    for i in range(5):
        store.put(stored(f"resp_{i}"))
    kept = [i for i in range(5) if store.get(f"resp_{i}") is not None]
    assert kept == [2, 3, 4]


def test_several_connections_write_and_read_the_same_file_at_once(path):
    stores = [ResponseStore(path) for _ in range(4)]

    def write(n: int) -> None:
        store = stores[n % len(stores)]
        store.put(stored(f"resp_{n}"))
        assert store.get(f"resp_{n}") is not None

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, range(200)))
    assert all(stores[0].get(f"resp_{n}") is not None for n in range(200))


def test_the_default_file_is_in_the_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("TRISERVE_CACHE", str(tmp_path))
    assert ResponsesConfig().store_path() == tmp_path / "responses.sqlite3"
    assert ResponsesConfig(path="~/r.db").store_path().name == "r.db"


@pytest.mark.parametrize("fields", [{"max_age_s": 0}, {"max_count": 0}])
def test_a_retention_limit_below_one_is_refused_naming_it(fields):
    with pytest.raises(ValueError, match=f"responses.{next(iter(fields))}"):
        ResponsesConfig(**fields)
