"""TriserveKVConnector: vLLM's KV-connector API (KVConnectorBase_V1) over Triserve's KV format, so
that a prompt's KV moves between vLLM engines, or between vLLM and Triserve's engine, through
Triserve's transport (checksums, epochs, fail-closed re-drive all stay in the worker).

    export (prefill worker)                         import (decode worker)
    request with {"triserve_export": id}            KV put in KV_EXCHANGE.imports[id], then a
      |  scheduler side: the step that computes     request prompt + [first token] with
      |  the prompt's last chunk carries an Export  {"triserve_import": id}
      v  worker side, save_kv_layer per layer:        |  scheduler side: the imported tokens count
    rows of every prompt token read out               |  as computed (all but the first token)
      -> KV_EXCHANGE.exports[id]: [layers, 2,         v  worker side, start_load_kv (before the
         tokens, kv_heads, head_dim]              forward): rows written into the request's blocks

The engine (engine.py) fills `imports` and takes `exports`; ids are Triserve's request ids. The
worker-side instance is one per process in vLLM (a process-wide global), so it keeps no state of
its own: everything comes in the step's metadata or is in KV_EXCHANGE. Every Triserve vLLM engine
runs this connector as `kv_both`, so any worker can export and import.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

from workers.engine.kv_cache import token_slots
from workers.vllm.kv_rows import read_rows, write_rows

if TYPE_CHECKING:
    from vllm.v1.core.sched.output import SchedulerOutput

logger = logging.getLogger(__name__)
EXPORT_KEY, IMPORT_KEY = "triserve_export", "triserve_import"
# Outputs already sent before this engine's first token (the prefill worker's first token, a
# re-drive's earlier outputs): a grammar must accept them before vLLM samples under it.
SENT_KEY = "triserve_sent"
LAYER_INDEX = re.compile(r"layers\.(\d+)\.")


@dataclass
class KVExchange:
    """KV handed between the engine and the connector, by Triserve request id: arrays of
    [num_layers, 2, num_tokens, num_kv_heads, head_dim] (PromptKV's layout)."""

    imports: dict[str, torch.Tensor] = field(default_factory=dict)
    exports: dict[str, np.ndarray] = field(default_factory=dict)
    # layer index -> (K, V) rows of exports still being read in this step
    partial: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)


KV_EXCHANGE = KVExchange()


@dataclass(frozen=True)
class Transfer:
    key: str  # Triserve request id
    start: int  # first token position moved
    end: int  # one past the last
    slots: torch.Tensor  # cache slot of each token moved, the same for every layer

    @classmethod
    def of(cls, key: str, block_ids: list[int], start: int, end: int, block_size: int):
        slots = token_slots(block_ids, np.arange(start, end), block_size)
        return cls(key, start, end, torch.from_numpy(slots))


@dataclass
class TriserveMetadata(KVConnectorMetadata):
    loads: list[Transfer] = field(default_factory=list)
    exports: list[Transfer] = field(default_factory=list)


def transfer_key(request: Any, key: str) -> str | None:
    params = getattr(request, "kv_transfer_params", None) or {}
    return params.get(key)


def advance_grammar(request: Any) -> None:
    """Feed a request's grammar the outputs already sent (SENT_KEY), once. The scheduler asks
    for matched tokens only once the grammar is compiled, and before anything is sampled."""
    params = getattr(request, "kv_transfer_params", None) or {}
    sent = params.get(SENT_KEY)
    structured = getattr(request, "structured_output_request", None)
    if not sent or structured is None or structured.grammar is None:
        return
    del params[SENT_KEY]
    if not structured.grammar.accept_tokens(request.request_id, sent):
        # Not raised: this runs inside vLLM's scheduler, where an exception stops the engine
        # for every request. The prefill worker sampled these under the same grammar.
        logger.error("request %s: tokens already sent do not follow its grammar", request)


class TriserveKVConnector(KVConnectorBase_V1):
    def __init__(self, vllm_config: Any, role: KVConnectorRole, kv_cache_config: Any = None):
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        self._block_size = vllm_config.cache_config.block_size
        # scheduler side
        self._local_hits: dict[str, int] = {}  # request -> prefix-cache tokens, at the lookup
        self._loads: list[Transfer] = []  # allocated, not yet in a step's metadata
        self._exporting: dict[str, Any] = {}  # vLLM request id -> its Request, until exported

    # ----------------------------------------------------------------- scheduler side
    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int):
        """An import's tokens beyond the local prefix hit; the last prompt token (Triserve's
        first token, sent by the prefill worker) is left for vLLM to compute."""
        advance_grammar(request)
        key = transfer_key(request, IMPORT_KEY)
        kv = KV_EXCHANGE.imports.get(key) if key is not None else None
        if kv is None:
            return 0, False
        self._local_hits[request.request_id] = num_computed_tokens
        available = min(kv.shape[2], request.num_prompt_tokens - 1)
        return max(0, available - num_computed_tokens), False

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int):
        if num_external_tokens <= 0:
            return
        start = self._local_hits.pop(request.request_id, 0)
        self._loads.append(
            Transfer.of(
                transfer_key(request, IMPORT_KEY),
                list(blocks.get_block_ids()[0]),
                start,
                start + num_external_tokens,
                self._block_size,
            )
        )

    def on_new_request(self, request: Any) -> None:
        if transfer_key(request, EXPORT_KEY) is not None:
            self._exporting[request.request_id] = request

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        """This step's imports, and the exports whose prompt's last chunk this step computes
        (the earlier chunks are in the cache by then; num_computed_tokens is still the count
        before the step)."""
        meta = TriserveMetadata(loads=self._loads)
        self._loads = []
        for request_id, num_tokens in scheduler_output.num_scheduled_tokens.items():
            request = self._exporting.get(request_id)
            if request is None or request.num_computed_tokens + num_tokens < (
                request.num_prompt_tokens
            ):
                continue
            del self._exporting[request_id]
            block_ids = self._kv_cache_manager.get_block_ids(request_id)[0]
            key = transfer_key(request, EXPORT_KEY)
            num_tokens = request.num_prompt_tokens
            meta.exports.append(Transfer.of(key, list(block_ids), 0, num_tokens, self._block_size))
        return meta

    def request_finished(self, request: Any, block_ids: list[int]):
        self._exporting.pop(request.request_id, None)  # aborted before its export
        self._local_hits.pop(request.request_id, None)
        return False, None

    # ----------------------------------------------------------------- worker side
    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        if not isinstance(meta, TriserveMetadata) or not meta.loads:
            return
        for name, layer in forward_context.no_compile_layers.items():
            kv_layer = getattr(layer, "kv_cache", None)
            index = LAYER_INDEX.search(name)
            if not isinstance(kv_layer, torch.Tensor) or kv_layer.numel() == 0 or not index:
                continue
            for load in meta.loads:
                kv = KV_EXCHANGE.imports[load.key][int(index.group(1))]
                rows = slice(load.start, load.end)
                write_rows(kv_layer, load.slots, kv[0, rows], kv[1, rows])

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # start_load_kv loads every layer before the forward

    def save_kv_layer(
        self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any
    ) -> None:
        meta = self._get_connector_metadata()
        index = LAYER_INDEX.search(layer_name)
        if not isinstance(meta, TriserveMetadata) or not meta.exports or not index:
            return
        for export in meta.exports:
            rows = read_rows(kv_layer, export.slots)
            KV_EXCHANGE.partial.setdefault(export.key, {})[int(index.group(1))] = rows

    def wait_for_save(self) -> None:
        meta = self._get_connector_metadata()
        if not isinstance(meta, TriserveMetadata):
            return
        for export in meta.exports:
            layers = KV_EXCHANGE.partial.pop(export.key, {})
            kv = torch.stack([torch.stack(layers[i]) for i in range(len(layers))])
            if kv.dtype == torch.bfloat16:  # numpy has no bfloat16: carried as uint16
                KV_EXCHANGE.exports[export.key] = kv.view(torch.int16).numpy().view(np.uint16)
            else:
                KV_EXCHANGE.exports[export.key] = kv.numpy()
