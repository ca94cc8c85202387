"""What each process loads: the control plane, the ingress and the command line import no torch
(they speak the torch-free contract, workers/contract/), and the worker's modules reach the
engine only through its interface (workers/engine_interface.py)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Processes that run no engine: the control plane actor, the gRPC ingress, the `triserve`
# command line (`status` and the other remote commands included), and the contract itself.
TORCH_FREE = (
    "cluster.control_plane",
    "cluster.ingress",
    "cluster.cli",
    "cluster.commands",
    "cluster.client",
    "cluster.launcher",
    "workers.contract.messages",
    "workers.contract.worker_client",
    "workers.contract.worker_config",
    "workers.actor",  # the control plane imports it to start actors; the engine loads inside
)
# The one worker module that names an engine class.
ENGINE_FACTORY = "engine_factory.py"


def _modules_loaded_by(module: str, watched: tuple[str, ...]) -> dict[str, bool]:
    script = (
        "import importlib, json, sys; "
        f"importlib.import_module({module!r}); "
        f"print(json.dumps({{name: name in sys.modules for name in {list(watched)!r}}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", TORCH_FREE)
def test_importing_a_process_that_runs_no_engine_loads_neither_torch_nor_transformers(module):
    # transformers loads torch whenever torch is installed, so it is kept out too. The ingress
    # loads it (and so torch) only when it reads a model's tokenizer, at deployment start.
    assert _modules_loaded_by(module, ("torch", "transformers")) == {
        "torch": False,
        "transformers": False,
    }


def test_worker_modules_reach_the_engine_only_through_its_interface():
    reaching_in = {}
    for path in sorted((ROOT / "workers").glob("*.py")):
        if path.name == ENGINE_FACTORY:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            engine_modules = [name for name in names if name.startswith("workers.engine.")]
            reaching_in.update({path.name: engine_modules} if engine_modules else {})
    assert reaching_in == {}
