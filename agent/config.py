"""The agent controller's configuration: the `agent:` section of the cluster config.

    agent:
      mcp_servers:                     # MCP servers every Responses call may use
        - label: demo                  # (required) the server_label that requests name
          url: http://127.0.0.1:8765/mcp   # streamable HTTP; or
          command: [python, -m, agent.demo_tools, --stdio]   # a local server over stdio
          allowed_tools: null          # null: all of its tools
          tools:                       # per tool, all optional
            search: {tier: 2, cache_ttl_s: 60, expected_ms: 250}
      demo_tools_port: null            # start agent/demo_tools.py on this port and declare it
                                       # as server "demo" (make serve: 8765; 0: any free port)
      models:                          # routing priors per served model (default quality 0.5)
        small: {quality: 0.8}
      default_budget_ms: null          # the latency budget of a call that sets none
      max_tool_calls: 16               # per run, when the request sets none
      tool_timeout_s: 30               # a call's hard limit when nothing tighter applies
      min_probability: {1: 0.5, 2: 0.8, 3: 0.95}   # per tier: P(returns within the budget)
      timeout_quantile: 0.95           # a tool call times out at this quantile of its latency
      routing: {quality: 1.0, cost_per_s: 0.1, latency_per_s: 0.5, stickiness: 0.2}

Unknown keys and bad values raise ValueError naming the key (the cluster config reports it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.mcp_client import McpEndpoint
from agent.tools import Tier, ToolSettings

SERVER_KEYS = {"label", "url", "command", "allowed_tools", "headers", "tools"}
TOOL_KEYS = {"tier", "cache_ttl_s", "expected_ms"}
ROUTING_KEYS = ("quality", "cost_per_s", "latency_per_s", "stickiness")


@dataclass(frozen=True)
class McpServerConfig:
    endpoint: McpEndpoint
    tools: dict[str, ToolSettings] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentConfig:
    mcp_servers: tuple[McpServerConfig, ...] = ()
    demo_tools_port: int | None = None
    model_quality: dict[str, float] = field(default_factory=dict)
    default_budget_ms: float | None = None
    max_tool_calls: int = 16
    tool_timeout_s: float = 30.0
    min_probability: dict[int, float] = field(
        default_factory=lambda: {Tier.FAST: 0.5, Tier.SLOW: 0.8, Tier.WORKFLOW: 0.95}
    )
    timeout_quantile: float = 0.95
    routing: dict[str, float] = field(default_factory=dict)

    def server(self, label: str) -> McpServerConfig | None:
        return next((s for s in self.mcp_servers if s.endpoint.label == label), None)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> AgentConfig:
        _known(raw, set(cls.__dataclass_fields__) - {"model_quality"} | {"models"}, "agent")
        values: dict[str, Any] = {}
        servers = raw.get("mcp_servers") or []
        _require(isinstance(servers, list), "agent.mcp_servers: must be a list")
        values["mcp_servers"] = tuple(
            _server(item, f"agent.mcp_servers[{i}]") for i, item in enumerate(servers)
        )
        labels = [s.endpoint.label for s in values["mcp_servers"]]
        _require(len(set(labels)) == len(labels), f"agent.mcp_servers: labels repeat: {labels}")
        for key, kind in (("default_budget_ms", float), ("tool_timeout_s", float)):
            if raw.get(key) is not None:
                values[key] = _positive(raw[key], f"agent.{key}", kind)
        for key in ("demo_tools_port", "max_tool_calls"):
            if raw.get(key) is not None:
                values[key] = _number(raw[key], f"agent.{key}", int, low=0)
        if "timeout_quantile" in raw:
            value = _number(raw["timeout_quantile"], "agent.timeout_quantile", float, low=0.0)
            _require(value < 1.0, "agent.timeout_quantile: must be in (0, 1)")
            values["timeout_quantile"] = value
        if "min_probability" in raw:
            table = _mapping(raw["min_probability"], "agent.min_probability")
            values["min_probability"] = {
                int(_number(tier, "agent.min_probability (a tier)", int, low=1)): _number(
                    p, f"agent.min_probability.{tier}", float, low=0.0
                )
                for tier, p in table.items()
            }
        models = _mapping(raw.get("models") or {}, "agent.models")
        values["model_quality"] = {
            name: _number(_mapping(v, f"agent.models.{name}").get("quality", 0.5), name, float)
            for name, v in models.items()
        }
        routing = _mapping(raw.get("routing") or {}, "agent.routing")
        _known(routing, set(ROUTING_KEYS), "agent.routing")
        values["routing"] = {k: _number(v, f"agent.routing.{k}", float) for k, v in routing.items()}
        return cls(**values)


def _server(raw: Any, where: str) -> McpServerConfig:
    raw = _mapping(raw, where)
    _known(raw, SERVER_KEYS, where)
    _require(isinstance(raw.get("label"), str) and raw["label"], f"{where}.label: required")
    command = raw.get("command") or ()
    _require(isinstance(command, (list, tuple)), f"{where}.command: must be a list of strings")
    allowed = raw.get("allowed_tools")
    headers = _mapping(raw.get("headers") or {}, f"{where}.headers")
    try:
        endpoint = McpEndpoint(
            label=raw["label"],
            url=raw.get("url"),
            command=tuple(str(part) for part in command),
            headers=tuple((str(k), str(v)) for k, v in headers.items()),
            allowed_tools=None if allowed is None else tuple(allowed),
        )
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    tools = {}
    for name, settings in _mapping(raw.get("tools") or {}, f"{where}.tools").items():
        settings = _mapping(settings, f"{where}.tools.{name}")
        _known(settings, TOOL_KEYS, f"{where}.tools.{name}")
        tier = settings.get("tier")
        _require(tier is None or tier in (0, 1, 2, 3), f"{where}.tools.{name}.tier: 0 to 3")
        expected = settings.get("expected_ms")
        tools[name] = ToolSettings(
            tier=None if tier is None else Tier(tier),
            cache_ttl_s=_number(settings.get("cache_ttl_s", 0.0), f"{name}.cache_ttl_s", float),
            expected_ms=None if expected is None else _positive(expected, name, float),
        )
    return McpServerConfig(endpoint=endpoint, tools=tools)


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    _require(isinstance(raw, Mapping), f"{where}: must be a mapping of keys to values")
    return raw


def _known(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    _require(not unknown, f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")


def _number(value: Any, where: str, kind: type, low: float | None = None):
    _require(
        isinstance(value, (int, float)) and not isinstance(value, bool),
        f"{where}: expected a number, got {value!r}",
    )
    _require(kind is float or float(value).is_integer(), f"{where}: expected an integer")
    _require(low is None or value >= low, f"{where}: must be >= {low}")
    return kind(value)


def _positive(value: Any, where: str, kind: type):
    number = _number(value, where, kind)
    _require(number > 0, f"{where}: must be > 0")
    return number


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
