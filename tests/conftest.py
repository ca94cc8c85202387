"""Shared fixtures: random-weight checkpoints written on the spot, and the transformers oracle."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import VARIANT_SPEC, Oracle, boost_token_logit


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from workers.engine.model_writer import ensure_model

    return ensure_model("tiny")


@pytest.fixture(scope="session")
def variant_model_dir(tmp_path_factory) -> Path:
    from workers.engine.model_writer import variant, write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "variant", variant(**VARIANT_SPEC))


@pytest.fixture(scope="session", params=["tiny", "variant"])
def model_dir(request) -> Path:
    """Each parity test runs on both architectures."""
    return request.getfixturevalue(f"{request.param}_model_dir")


_oracles: dict[Path, Oracle] = {}


@pytest.fixture(scope="session")
def oracle_for():
    def get(model_dir: Path) -> Oracle:
        if model_dir not in _oracles:
            _oracles[model_dir] = Oracle(model_dir)
        return _oracles[model_dir]

    return get


@pytest.fixture(scope="session")
def image_token_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny checkpoint with the image placeholder's logit boosted, so the model writes it."""
    return boost_token_logit(
        tiny_model_dir, tmp_path_factory.mktemp("ckpt") / "image-token", token_name="<image>"
    )


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every Ray test of the session (small: this box has 2 cores)."""
    import os

    os.environ["RAY_AUTH_MODE"] = "disabled"  # Ray >= 2.59 would write ~/.ray/auth_token
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=128 * 2**20,
        log_to_driver=False,
        namespace="triserve-tests",
    )
    yield ray
    ray.shutdown()
