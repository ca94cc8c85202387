"""The admission gate: what the ingress may refuse at the door, before it builds a request.

Under overload most requests are refused, and a refusal that first decodes the request's images,
tokenises its prompt and crosses to the scheduler spends the CPU that admitted requests need
(bench/serve at 3x on 2 cores: the ingress, the proxy and the control plane took about 1.5 of
the 2 cores, and refusals queued for seconds behind the image decoding of refused requests).
So the scheduler publishes, per model and request class, the TTFT admission predicts right now
for the smallest request of that class (one prompt token; one image for a pebble; nothing
cached), margin included:

    scheduler:  gate = Scheduler.admission_gate()            (the ingress asks every ~100 ms)
    ingress:    class known from the request's shape alone   (cluster/door.py)
                and its policy "reject" and gate[model][class] > its TTFT target
                    -> RESOURCE_EXHAUSTED at once, nothing built

A larger request of the class does more work before its first token, so in practice it is
predicted no sooner: the gate moves refusals the scheduler would make to the door, and lets
through everything it might admit. Sand and pebbles only: a rock (a target of seconds, and few
of them) always reaches the scheduler. Refusals at the door are counted in the ledger and the
metrics as the scheduler's own (`Scheduler.refused_at_door`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.admission import AdmissionControl, ModelInfo
from scheduler.config import SchedulerConfig
from scheduler.policy import WorkerView
from scheduler.request import RequestSpec
from scheduler.request_class import RequestClass
from workers.contract.messages import ImageInput
from workers.contract.sampling_params import SamplingParams

GATED_CLASSES = (RequestClass.SAND, RequestClass.PEBBLE)
ONE_TOKEN = SamplingParams(max_tokens=1, seed=0)
COSTING_TOKENS = 257


@dataclass(frozen=True)
class CallCosts:
    """The forecast of a text call on one model now, queues included (the agent controller
    charges its model calls with it): first token of a one-token prompt, each further prompt
    token, each output token. Zeros when the model has no worker yet."""

    first_token_ms: float = 0.0
    per_prompt_token_ms: float = 0.0
    per_output_token_ms: float = 0.0


@dataclass(frozen=True)
class ModelGate:
    least_ttft_ms: dict[str, float]  # request class -> predicted TTFT of its smallest request
    image_tokens_per_image: int  # to tell a pebble from a rock by its prompt length
    call_costs: CallCosts = CallCosts()


@dataclass(frozen=True)
class AdmissionGate:
    models: dict[str, ModelGate]
    default_ttft_ms: dict[str, float]  # request class -> the target of a request that sets none
    default_admission: str  # the policy of a request that sets none
    rock_min_images: int  # SchedulerConfig's class thresholds, for the ingress to classify
    rock_min_image_pixels: int
    rock_min_prompt_tokens: int

    def refusal(
        self,
        model: str,
        request_class: str,
        ttft_target_ms: float | None,
        admission: str | None,
        waited_ms: float = 0.0,
    ) -> tuple[float, float] | None:
        """(predicted, target) TTFT ms when a request of this class, target and admission
        policy, which has waited `waited_ms` since it reached the server, is refused at the
        door; None when the scheduler must decide."""
        gate = self.models.get(model)
        if gate is None or request_class not in gate.least_ttft_ms:
            return None
        if (admission or self.default_admission) != "reject":
            return None
        target = default = self.default_ttft_ms[request_class]
        if ttft_target_ms is not None:
            if ttft_target_ms < default:  # an earlier deadline jumps more of the queue than
                return None  # the gate's smallest request did: the scheduler decides
            target = ttft_target_ms
        predicted = gate.least_ttft_ms[request_class] + waited_ms
        return (predicted, target) if predicted > target else None


def admission_gate(
    control: AdmissionControl,
    config: SchedulerConfig,
    workers: Sequence[WorkerView],
    models: Sequence[str],
    now_s: float,
) -> AdmissionGate:
    """The gate as admission would judge the smallest sand and pebble request of each model now
    (an idle cluster closes nothing: `control.admits_at_once()`)."""
    gates = {}
    for model in models:
        info = control.model_info(model)
        least = {}
        if not control.admits_at_once():
            for request_class in GATED_CLASSES:
                spec = _smallest(model, request_class, info, now_s)
                if spec is not None:
                    prediction = control.predict(spec, workers, now_s * 1000.0)
                    least[request_class.value] = prediction.ttft_ms
        costs = _call_costs(control, workers, model, now_s)
        gates[model] = ModelGate(least, info.image_tokens_per_image, costs)
    return AdmissionGate(
        models=gates,
        default_ttft_ms={c.value: config.slo_for(c.value)[0] for c in GATED_CLASSES},
        default_admission=config.admission,
        rock_min_images=config.rock_min_images,
        rock_min_image_pixels=config.rock_min_image_pixels,
        rock_min_prompt_tokens=config.rock_min_prompt_tokens,
    )


def _call_costs(
    control: AdmissionControl, workers: Sequence[WorkerView], model: str, now_s: float
) -> CallCosts:
    """Two text prompts, of 1 and COSTING_TOKENS tokens: their TTFTs give the per-token
    prefill cost; the first gap, the per-token decode cost."""
    one, many = (
        control.predict(
            RequestSpec(
                "call-costs", model, [0] * n, arrival_time=now_s, sampling_params=ONE_TOKEN
            ),
            workers,
            now_s * 1000.0,
        )
        for n in (1, COSTING_TOKENS)
    )
    if one.forecast is None:
        return CallCosts()
    return CallCosts(
        first_token_ms=one.ttft_ms,
        per_prompt_token_ms=max(0.0, many.ttft_ms - one.ttft_ms) / (COSTING_TOKENS - 1),
        per_output_token_ms=one.first_gap_ms,
    )


def _smallest(
    model: str, request_class: RequestClass, info: ModelInfo, now_s: float
) -> RequestSpec | None:
    """One prompt token; a pebble adds one image (None: the model takes no images)."""
    image_token_id, per_image = info.image_token_id, info.image_tokens_per_image
    if request_class is RequestClass.SAND:
        return RequestSpec(
            "admission-gate", model, [0], arrival_time=now_s, sampling_params=ONE_TOKEN
        )
    if image_token_id is None or per_image <= 0:
        return None
    image = ImageInput(image_hash="admission-gate", data=b"", num_pixels=1)
    prompt = [image_token_id] * per_image + [0]
    return RequestSpec("admission-gate", model, prompt, [image], ONE_TOKEN, arrival_time=now_s)
