"""What a request gets at once when it cannot be served, and the scheduler's import hygiene."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.errors import DuplicateRequestError, NoWorkerAvailableError, UnknownModelError
from tests.scheduler.harness import cluster, image, run, spec

REPO = Path(__file__).resolve().parents[2]


def test_request_for_a_model_no_worker_serves_is_invalid():
    async def body():
        async with cluster(epd="EPD") as c:
            with pytest.raises(UnknownModelError, match="no worker serves model 'other'"):
                await c.scheduler.generate(spec("r1", model="other"))
            assert c["epd"].calls == []

    run(body)


def test_text_request_without_a_prefill_worker_is_unavailable_at_once():
    async def body():
        async with cluster(e="E", d="D") as c:
            with pytest.raises(NoWorkerAvailableError, match="runs prefill"):
                await c.scheduler.generate(spec("r1"))
            assert c.scheduler.snapshot().num_requests_by_state["prefilling"] == 0

    run(body)


def test_image_request_without_an_encode_worker_is_unavailable_but_text_is_served():
    async def body():
        async with cluster(pd="PD") as c:
            with pytest.raises(NoWorkerAvailableError, match="runs encode"):
                await c.scheduler.generate(spec("r1", images=[image("cat")]))
            assert len(await c.generate(spec("r2"))) == 4

    run(body)


def test_request_is_unavailable_when_every_capable_worker_drains():
    async def body():
        async with cluster(epd="EPD") as c:
            c.scheduler.set_draining("epd")
            with pytest.raises(NoWorkerAvailableError, match="runs prefill"):
                await c.scheduler.generate(spec("r1"))

    run(body)


def test_second_request_with_a_running_id_is_refused():
    async def body():
        async with cluster(epd="EPD") as c:
            c["epd"].is_paused = True
            await c.scheduler.generate(spec("r1"))
            with pytest.raises(DuplicateRequestError, match="'r1' is already running"):
                await c.scheduler.generate(spec("r1"))

    run(body)


def test_scheduler_imports_neither_ray_nor_torch():
    code = (
        "import importlib, pkgutil, sys, scheduler\n"
        "for m in pkgutil.iter_modules(scheduler.__path__):\n"
        "    importlib.import_module(f'scheduler.{m.name}')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'torch')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout == "[]\n"
