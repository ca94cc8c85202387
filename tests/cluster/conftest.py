"""One real cluster (Ray actors, Ray Serve gRPC and HTTP) for the end-to-end tests of this
package.

It serves the tiny checkpoint under two names, so that every test can compare layouts in the
same cluster: `disagg` runs on separate encode, prefill and decode workers, `coloc` on one EPD
worker (the colocated baseline).
"""

from __future__ import annotations

import pytest

from agent.config import AgentConfig
from agent.demo_tools import DemoLatencies, start_demo_server
from cluster.client import TriserveClient
from cluster.config import ClusterConfig, PoolConfig
from cluster.openai.response_store import ResponsesConfig

API_TOKEN = "test-api-token"
ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(scope="package")
def demo_tools():
    """The demo MCP server, its tools fast (a few ms), declared to the cluster as "demo"."""
    server = start_demo_server(DemoLatencies(scale=0.1))
    yield server
    server.close()


@pytest.fixture(scope="package")
def cluster(ray_cluster, tiny_model_dir, tmp_path_factory, demo_tools):
    from cluster.launcher import start_cluster

    def pool(name: str, stages: str, model: str) -> PoolConfig:
        return PoolConfig(name=name, stages=stages, model=model, torch_threads=1, num_kv_blocks=256)

    config = ClusterConfig(
        models={"disagg": str(tiny_model_dir), "coloc": str(tiny_model_dir)},
        pools=(
            pool("encode", "E", "disagg"),
            pool("prefill", "P", "disagg"),
            pool("decode", "D", "disagg"),
            pool("colocated", "EPD", "coloc"),
        ),
        port=0,
        http_port=0,
        metrics_port=0,  # never the default 9464, which a running server may hold
        api_token=API_TOKEN,
        admin_token=ADMIN_TOKEN,
        responses=ResponsesConfig(path=str(tmp_path_factory.mktemp("store") / "responses.db")),
        agent=AgentConfig.from_dict(
            {
                "mcp_servers": [
                    {
                        "label": "demo",
                        "url": demo_tools.url,
                        "tools": {"lookup": {"tier": 1, "cache_ttl_s": 300}},
                    }
                ]
            }
        ),
    )
    running = start_cluster(config)
    yield running
    running.stop()


@pytest.fixture
def client(cluster):
    with TriserveClient(cluster.address, API_TOKEN, ADMIN_TOKEN, timeout_s=120) as client:
        yield client
