"""The layouts a run compares, and which driver runs each:

    client        layout 1: the client's loop over chat completions (client_loop.py)
    controller    layout 2: the server-side controller, every mechanism on (controller.py)
    no-parallel   the controller, tool calls one after another, each after its model call ends
    no-pause      the controller, no KV kept paused over tool calls (each call re-prefills)
    no-budget     the controller, the latency budget ignored (no skips, no early exit)
    no-routing    the controller, every model call on the request's model

The ablations turn off one mechanism each (agent/run_request.py's AgentOptions), so that the
cost of losing it is read against "controller" in the same run.
"""

from __future__ import annotations

from bench.agent.client_loop import run_client_loop
from bench.agent.controller import run_controller
from bench.agent.harness import Harness
from bench.agent.record import RunRecord
from bench.agent.workload import AgentRun

CLIENT = "client"
CONTROLLER = "controller"
MECHANISMS = ("parallel_dispatch", "pause_kv", "budget", "routing")
ABLATIONS = {
    "no-parallel": "parallel_dispatch",
    "no-pause": "pause_kv",
    "no-budget": "budget",
    "no-routing": "routing",
}
LAYOUTS = (CLIENT, CONTROLLER, *ABLATIONS)


def parse_layouts(spec: str) -> list[str]:
    """`client,controller` -> the named layouts, in LAYOUTS order; unknown names raise."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = sorted(set(names) - set(LAYOUTS))
    if unknown or not names:
        raise ValueError(f"--layouts: unknown {unknown or 'none given'}; known: {LAYOUTS}")
    return [layout for layout in LAYOUTS if layout in names]


def agent_options(layout: str) -> dict[str, bool]:
    """Every mechanism named explicitly, the layout's one off."""
    return {mechanism: mechanism != ABLATIONS.get(layout) for mechanism in MECHANISMS}


async def run_layout(harness: Harness, layout: str, run: AgentRun) -> RunRecord:
    if layout == CLIENT:
        return await run_client_loop(harness, run, layout)
    return await run_controller(harness, run, layout, agent_options(layout))
