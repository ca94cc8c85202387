from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ToolChoiceMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOOL_CHOICE_MODE_AUTO: _ClassVar[ToolChoiceMode]
    TOOL_CHOICE_MODE_NONE: _ClassVar[ToolChoiceMode]
    TOOL_CHOICE_MODE_REQUIRED: _ClassVar[ToolChoiceMode]

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_INTERACTIVE: _ClassVar[Priority]
    PRIORITY_BATCH: _ClassVar[Priority]

class Admission(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADMISSION_UNSPECIFIED: _ClassVar[Admission]
    ADMISSION_REJECT: _ClassVar[Admission]
    ADMISSION_DEGRADE: _ClassVar[Admission]
    ADMISSION_BEST_EFFORT: _ClassVar[Admission]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_CANCELLED: _ClassVar[FinishReason]
TOOL_CHOICE_MODE_AUTO: ToolChoiceMode
TOOL_CHOICE_MODE_NONE: ToolChoiceMode
TOOL_CHOICE_MODE_REQUIRED: ToolChoiceMode
PRIORITY_UNSPECIFIED: Priority
PRIORITY_INTERACTIVE: Priority
PRIORITY_BATCH: Priority
ADMISSION_UNSPECIFIED: Admission
ADMISSION_REJECT: Admission
ADMISSION_DEGRADE: Admission
ADMISSION_BEST_EFFORT: Admission
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_CANCELLED: FinishReason

class ContentPart(_message.Message):
    __slots__ = ("text", "image")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content", "tool_calls", "tool_call_id")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: _containers.RepeatedCompositeFieldContainer[ContentPart]
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCall]
    tool_call_id: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[_Iterable[_Union[ContentPart, _Mapping]]] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ..., tool_call_id: _Optional[str] = ...) -> None: ...

class Tool(_message.Message):
    __slots__ = ("name", "description", "parameters_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters_json: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters_json: _Optional[str] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("id", "name", "arguments_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    arguments_json: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class ToolChoice(_message.Message):
    __slots__ = ("mode", "function")
    MODE_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    mode: ToolChoiceMode
    function: str
    def __init__(self, mode: _Optional[_Union[ToolChoiceMode, str]] = ..., function: _Optional[str] = ...) -> None: ...

class ResponseFormat(_message.Message):
    __slots__ = ("json_object", "json_schema")
    JSON_OBJECT_FIELD_NUMBER: _ClassVar[int]
    JSON_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    json_object: bool
    json_schema: str
    def __init__(self, json_object: _Optional[bool] = ..., json_schema: _Optional[str] = ...) -> None: ...

class RawPrompt(_message.Message):
    __slots__ = ("text", "images")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    text: str
    images: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, text: _Optional[str] = ..., images: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("max_tokens", "temperature", "top_k", "top_p", "seed", "stop_token_ids", "stop", "ignore_eos")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    seed: int
    stop_token_ids: _containers.RepeatedScalarFieldContainer[int]
    stop: _containers.RepeatedScalarFieldContainer[str]
    ignore_eos: bool
    def __init__(self, max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ..., stop_token_ids: _Optional[_Iterable[int]] = ..., stop: _Optional[_Iterable[str]] = ..., ignore_eos: _Optional[bool] = ...) -> None: ...

class SLO(_message.Message):
    __slots__ = ("ttft_ms", "tpot_ms")
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TPOT_MS_FIELD_NUMBER: _ClassVar[int]
    ttft_ms: float
    tpot_ms: float
    def __init__(self, ttft_ms: _Optional[float] = ..., tpot_ms: _Optional[float] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("request_id", "model", "conversation", "raw", "sampling", "slo", "priority", "admission", "tools", "tool_choice", "parallel_tool_calls", "response_format", "session", "proxy_received_unix_s")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SLO_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PROXY_RECEIVED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    conversation: Conversation
    raw: RawPrompt
    sampling: SamplingParams
    slo: SLO
    priority: Priority
    admission: Admission
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    tool_choice: ToolChoice
    parallel_tool_calls: bool
    response_format: ResponseFormat
    session: Session
    proxy_received_unix_s: float
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., conversation: _Optional[_Union[Conversation, _Mapping]] = ..., raw: _Optional[_Union[RawPrompt, _Mapping]] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., slo: _Optional[_Union[SLO, _Mapping]] = ..., priority: _Optional[_Union[Priority, str]] = ..., admission: _Optional[_Union[Admission, str]] = ..., tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ..., tool_choice: _Optional[_Union[ToolChoice, _Mapping]] = ..., parallel_tool_calls: _Optional[bool] = ..., response_format: _Optional[_Union[ResponseFormat, _Mapping]] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., proxy_received_unix_s: _Optional[float] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "pause", "resume_of", "expected_pause_s")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PAUSE_FIELD_NUMBER: _ClassVar[int]
    RESUME_OF_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_PAUSE_S_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    pause: bool
    resume_of: str
    expected_pause_s: float
    def __init__(self, session_id: _Optional[str] = ..., pause: _Optional[bool] = ..., resume_of: _Optional[str] = ..., expected_pause_s: _Optional[float] = ...) -> None: ...

class Conversation(_message.Message):
    __slots__ = ("messages", "add_generation_prompt", "prefix_token_ids", "num_prefix_messages")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    ADD_GENERATION_PROMPT_FIELD_NUMBER: _ClassVar[int]
    PREFIX_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    NUM_PREFIX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    add_generation_prompt: bool
    prefix_token_ids: _containers.RepeatedScalarFieldContainer[int]
    num_prefix_messages: int
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., add_generation_prompt: _Optional[bool] = ..., prefix_token_ids: _Optional[_Iterable[int]] = ..., num_prefix_messages: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "cached_prompt_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("request_id", "token_ids", "text", "finish_reason", "usage", "tool_calls")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    text: str
    finish_reason: FinishReason
    usage: Usage
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCall]
    def __init__(self, request_id: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., text: _Optional[str] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ...) -> None: ...

class GetClusterStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerState(_message.Message):
    __slots__ = ("worker_id", "stages", "draining", "epoch", "encode_queued", "waiting", "running", "kv_blocks_total", "kv_blocks_used", "kv_blocks_cached", "embedding_cache_entries", "prefix_cache_blocks", "cost_model", "suspected", "pinned_blocks", "paused_requests")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ENCODE_QUEUED_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_USED_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_CACHED_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_CACHE_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    PREFIX_CACHE_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    COST_MODEL_FIELD_NUMBER: _ClassVar[int]
    SUSPECTED_FIELD_NUMBER: _ClassVar[int]
    PINNED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    PAUSED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    stages: str
    draining: bool
    epoch: int
    encode_queued: int
    waiting: int
    running: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_blocks_cached: int
    embedding_cache_entries: int
    prefix_cache_blocks: int
    cost_model: WorkerCostModel
    suspected: bool
    pinned_blocks: int
    paused_requests: int
    def __init__(self, worker_id: _Optional[str] = ..., stages: _Optional[str] = ..., draining: _Optional[bool] = ..., epoch: _Optional[int] = ..., encode_queued: _Optional[int] = ..., waiting: _Optional[int] = ..., running: _Optional[int] = ..., kv_blocks_total: _Optional[int] = ..., kv_blocks_used: _Optional[int] = ..., kv_blocks_cached: _Optional[int] = ..., embedding_cache_entries: _Optional[int] = ..., prefix_cache_blocks: _Optional[int] = ..., cost_model: _Optional[_Union[WorkerCostModel, _Mapping]] = ..., suspected: _Optional[bool] = ..., pinned_blocks: _Optional[int] = ..., paused_requests: _Optional[int] = ...) -> None: ...

class WorkerCostModel(_message.Message):
    __slots__ = ("encode_base_ms", "encode_ms_per_image_token", "prefill_base_ms", "prefill_ms_per_token", "decode_base_ms", "decode_ms_per_seq", "decode_ms_per_context_token", "corrections", "num_observations", "max_num_batched_tokens", "max_encode_images")
    class CorrectionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class NumObservationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ENCODE_BASE_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_PER_IMAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PREFILL_BASE_MS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_MS_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DECODE_BASE_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_PER_SEQ_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_PER_CONTEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CORRECTIONS_FIELD_NUMBER: _ClassVar[int]
    NUM_OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_BATCHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_ENCODE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    encode_base_ms: float
    encode_ms_per_image_token: float
    prefill_base_ms: float
    prefill_ms_per_token: float
    decode_base_ms: float
    decode_ms_per_seq: float
    decode_ms_per_context_token: float
    corrections: _containers.ScalarMap[str, float]
    num_observations: _containers.ScalarMap[str, int]
    max_num_batched_tokens: int
    max_encode_images: int
    def __init__(self, encode_base_ms: _Optional[float] = ..., encode_ms_per_image_token: _Optional[float] = ..., prefill_base_ms: _Optional[float] = ..., prefill_ms_per_token: _Optional[float] = ..., decode_base_ms: _Optional[float] = ..., decode_ms_per_seq: _Optional[float] = ..., decode_ms_per_context_token: _Optional[float] = ..., corrections: _Optional[_Mapping[str, float]] = ..., num_observations: _Optional[_Mapping[str, int]] = ..., max_num_batched_tokens: _Optional[int] = ..., max_encode_images: _Optional[int] = ...) -> None: ...

class PoolState(_message.Message):
    __slots__ = ("name", "stages", "model", "target_workers", "workers", "live_workers", "starting_workers", "suspected_workers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_WORKERS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    LIVE_WORKERS_FIELD_NUMBER: _ClassVar[int]
    STARTING_WORKERS_FIELD_NUMBER: _ClassVar[int]
    SUSPECTED_WORKERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    stages: str
    model: str
    target_workers: int
    workers: _containers.RepeatedCompositeFieldContainer[WorkerState]
    live_workers: int
    starting_workers: int
    suspected_workers: int
    def __init__(self, name: _Optional[str] = ..., stages: _Optional[str] = ..., model: _Optional[str] = ..., target_workers: _Optional[int] = ..., workers: _Optional[_Iterable[_Union[WorkerState, _Mapping]]] = ..., live_workers: _Optional[int] = ..., starting_workers: _Optional[int] = ..., suspected_workers: _Optional[int] = ...) -> None: ...

class RequestClassState(_message.Message):
    __slots__ = ("request_class", "finished", "attained", "rejected", "degraded", "best_effort", "failed", "cancelled")
    REQUEST_CLASS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    ATTAINED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    BEST_EFFORT_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    request_class: str
    finished: int
    attained: int
    rejected: int
    degraded: int
    best_effort: int
    failed: int
    cancelled: int
    def __init__(self, request_class: _Optional[str] = ..., finished: _Optional[int] = ..., attained: _Optional[int] = ..., rejected: _Optional[int] = ..., degraded: _Optional[int] = ..., best_effort: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ...) -> None: ...

class ClusterState(_message.Message):
    __slots__ = ("pools", "requests_in_flight", "requests_by_state", "queued_by_stage", "classes", "prefix_hit_rate", "embedding_hit_rate", "agent")
    class RequestsByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class QueuedByStageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    POOLS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_BY_STAGE_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    PREFIX_HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[PoolState]
    requests_in_flight: int
    requests_by_state: _containers.ScalarMap[str, int]
    queued_by_stage: _containers.ScalarMap[str, int]
    classes: _containers.RepeatedCompositeFieldContainer[RequestClassState]
    prefix_hit_rate: float
    embedding_hit_rate: float
    agent: _containers.RepeatedCompositeFieldContainer[AgentClassState]
    def __init__(self, pools: _Optional[_Iterable[_Union[PoolState, _Mapping]]] = ..., requests_in_flight: _Optional[int] = ..., requests_by_state: _Optional[_Mapping[str, int]] = ..., queued_by_stage: _Optional[_Mapping[str, int]] = ..., classes: _Optional[_Iterable[_Union[RequestClassState, _Mapping]]] = ..., prefix_hit_rate: _Optional[float] = ..., embedding_hit_rate: _Optional[float] = ..., agent: _Optional[_Iterable[_Union[AgentClassState, _Mapping]]] = ...) -> None: ...

class AgentClassState(_message.Message):
    __slots__ = ("request_class", "runs", "completed", "incomplete", "failed", "cancelled", "within_budget", "ftr_p50_ms", "ftr_p90_ms", "ftr_p99_ms", "e2e_p50_ms", "e2e_p90_ms", "e2e_p99_ms", "tool_calls_per_run", "tool_share_of_ftr", "tool_cache_hit_rate", "cached_share", "reprefilled_tokens", "cost_per_successful_run_s")
    REQUEST_CLASS_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    INCOMPLETE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    WITHIN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    FTR_P50_MS_FIELD_NUMBER: _ClassVar[int]
    FTR_P90_MS_FIELD_NUMBER: _ClassVar[int]
    FTR_P99_MS_FIELD_NUMBER: _ClassVar[int]
    E2E_P50_MS_FIELD_NUMBER: _ClassVar[int]
    E2E_P90_MS_FIELD_NUMBER: _ClassVar[int]
    E2E_P99_MS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_PER_RUN_FIELD_NUMBER: _ClassVar[int]
    TOOL_SHARE_OF_FTR_FIELD_NUMBER: _ClassVar[int]
    TOOL_CACHE_HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    CACHED_SHARE_FIELD_NUMBER: _ClassVar[int]
    REPREFILLED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_PER_SUCCESSFUL_RUN_S_FIELD_NUMBER: _ClassVar[int]
    request_class: str
    runs: int
    completed: int
    incomplete: int
    failed: int
    cancelled: int
    within_budget: int
    ftr_p50_ms: float
    ftr_p90_ms: float
    ftr_p99_ms: float
    e2e_p50_ms: float
    e2e_p90_ms: float
    e2e_p99_ms: float
    tool_calls_per_run: float
    tool_share_of_ftr: float
    tool_cache_hit_rate: float
    cached_share: float
    reprefilled_tokens: int
    cost_per_successful_run_s: float
    def __init__(self, request_class: _Optional[str] = ..., runs: _Optional[int] = ..., completed: _Optional[int] = ..., incomplete: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ..., within_budget: _Optional[int] = ..., ftr_p50_ms: _Optional[float] = ..., ftr_p90_ms: _Optional[float] = ..., ftr_p99_ms: _Optional[float] = ..., e2e_p50_ms: _Optional[float] = ..., e2e_p90_ms: _Optional[float] = ..., e2e_p99_ms: _Optional[float] = ..., tool_calls_per_run: _Optional[float] = ..., tool_share_of_ftr: _Optional[float] = ..., tool_cache_hit_rate: _Optional[float] = ..., cached_share: _Optional[float] = ..., reprefilled_tokens: _Optional[int] = ..., cost_per_successful_run_s: _Optional[float] = ...) -> None: ...

class ScalePoolRequest(_message.Message):
    __slots__ = ("pool", "workers")
    POOL_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    pool: str
    workers: int
    def __init__(self, pool: _Optional[str] = ..., workers: _Optional[int] = ...) -> None: ...

class ScalePoolResponse(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: PoolState
    def __init__(self, pool: _Optional[_Union[PoolState, _Mapping]] = ...) -> None: ...

class GetTraceRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class TraceEvent(_message.Message):
    __slots__ = ("event", "time_ms", "worker_id", "duration_ms", "bytes", "detail", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EVENT_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    event: str
    time_ms: float
    worker_id: str
    duration_ms: float
    bytes: int
    detail: str
    values: _containers.ScalarMap[str, float]
    def __init__(self, event: _Optional[str] = ..., time_ms: _Optional[float] = ..., worker_id: _Optional[str] = ..., duration_ms: _Optional[float] = ..., bytes: _Optional[int] = ..., detail: _Optional[str] = ..., values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Trace(_message.Message):
    __slots__ = ("request_id", "state", "model", "events", "arrival_unix_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    state: str
    model: str
    events: _containers.RepeatedCompositeFieldContainer[TraceEvent]
    arrival_unix_ms: float
    def __init__(self, request_id: _Optional[str] = ..., state: _Optional[str] = ..., model: _Optional[str] = ..., events: _Optional[_Iterable[_Union[TraceEvent, _Mapping]]] = ..., arrival_unix_ms: _Optional[float] = ...) -> None: ...
