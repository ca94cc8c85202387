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
