"""The ingress's front half: a GenerateRequest (protobuf) -> a validated scheduler request.

Everything a client can get wrong is caught here, before any worker sees the request: unknown
model, empty prompt, corrupt or unsupported image, wrong number of images, prompt longer than
the context, bad sampling parameters. Each raises an InvalidRequestError subclass.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from jinja2 import TemplateError

from proto.triserve.v1 import triserve_pb2 as pb
from scheduler.request import RequestSpec, UnknownModelError
from workers.contract.errors import InvalidRequestError, PromptTooLongError
from workers.contract.images import decode_image, image_hash
from workers.contract.messages import ImageInput
from workers.contract.sampling_params import SamplingParams
from workers.engine.model_config import ModelConfig
from workers.engine.prompt import PromptBuilder, load_tokenizer

MAX_IMAGES_PER_REQUEST = 64
ADMISSIONS = {
    pb.ADMISSION_UNSPECIFIED: None,
    pb.ADMISSION_REJECT: "reject",
    pb.ADMISSION_DEGRADE: "degrade",
    pb.ADMISSION_BEST_EFFORT: "best_effort",
}
PRIORITIES = {
    pb.PRIORITY_UNSPECIFIED: "interactive",
    pb.PRIORITY_INTERACTIVE: "interactive",
    pb.PRIORITY_BATCH: "batch",
}


@dataclass
class ModelFrontend:
    """What the ingress needs of one model: its tokenizer, prompt rules and context length."""

    name: str
    tokenizer: object  # used by the build thread only
    detokenizer: object  # a second instance, for streaming text on the event loop
    prompt_builder: PromptBuilder
    max_model_len: int

    @classmethod
    def load(cls, name: str, model_dir: str | Path) -> ModelFrontend:
        config = ModelConfig.from_pretrained(model_dir)
        tokenizer = load_tokenizer(model_dir)
        return cls(
            name=name,
            tokenizer=tokenizer,
            detokenizer=load_tokenizer(model_dir),
            prompt_builder=PromptBuilder(model_dir, config, tokenizer),
            max_model_len=config.text.max_position_embeddings,
        )


class RequestBuilder:
    def __init__(self, models: dict[str, ModelFrontend]) -> None:
        if not models:
            raise ValueError("a cluster serves at least one model")
        self.models = models

    def model_for(self, name: str) -> ModelFrontend:
        if not name and len(self.models) == 1:
            return next(iter(self.models.values()))
        if name not in self.models:
            raise UnknownModelError(
                f"unknown model {name!r}; this cluster serves {sorted(self.models)}"
            )
        return self.models[name]

    def build(
        self, request: pb.GenerateRequest, arrival_time: float | None = None
    ) -> tuple[RequestSpec, ModelFrontend]:
        """`arrival_time`: when the call reached the ingress (time.time()); None: now. The SLO
        clock starts there, so waiting for the build thread counts against the TTFT."""
        model = self.model_for(request.model)
        text, image_bytes = self._prompt_text(request, model)
        if len(image_bytes) > MAX_IMAGES_PER_REQUEST:
            raise InvalidRequestError(f"at most {MAX_IMAGES_PER_REQUEST} images per request")
        images = [decode_image(data) for data in image_bytes]
        token_ids = model.prompt_builder.build(text, images).token_ids
        if len(token_ids) >= model.max_model_len:
            raise PromptTooLongError(
                f"prompt of {len(token_ids)} tokens does not fit the context of "
                f"{model.max_model_len}"
            )
        spec = RequestSpec(
            request_id=request.request_id or uuid.uuid4().hex,
            model=model.name,
            prompt_token_ids=token_ids,
            images=[
                ImageInput(image_hash(image), data, image.width * image.height)
                for image, data in zip(images, image_bytes, strict=True)
            ],
            sampling_params=sampling_params(request.sampling).with_seed(),
            slo_ttft_ms=request.slo.ttft_ms if request.slo.HasField("ttft_ms") else None,
            slo_tpot_ms=request.slo.tpot_ms if request.slo.HasField("tpot_ms") else None,
            priority=PRIORITIES.get(request.priority, "interactive"),
            admission=ADMISSIONS.get(request.admission),
            arrival_time=time.time() if arrival_time is None else arrival_time,
        )
        return spec, model

    @staticmethod
    def _prompt_text(request: pb.GenerateRequest, model: ModelFrontend) -> tuple[str, list]:
        kind = request.WhichOneof("prompt")
        if kind == "raw":
            return request.raw.text, list(request.raw.images)
        if kind is None or not request.conversation.messages:
            raise InvalidRequestError("the prompt is empty")
        messages, images = [], []
        for message in request.conversation.messages:
            parts = []
            for part in message.content:
                if part.WhichOneof("part") == "image":
                    parts.append({"type": "image"})
                    images.append(part.image)
                else:
                    parts.append({"type": "text", "text": part.text})
            messages.append({"role": message.role, "content": parts})
        try:
            text = model.tokenizer.apply_chat_template(
                messages,
                tokenize=False,
                add_generation_prompt=request.conversation.add_generation_prompt,
            )
        except (ValueError, TemplateError) as e:  # no template, or messages it rejects
            raise InvalidRequestError(f"cannot apply the model's chat template: {e}") from None
        return text, images


def has_images(request: pb.GenerateRequest) -> bool:
    """Whether the request carries an image (decided before any decoding)."""
    if request.WhichOneof("prompt") == "raw":
        return len(request.raw.images) > 0
    return any(
        part.WhichOneof("part") == "image"
        for message in request.conversation.messages
        for part in message.content
    )


def sampling_params(sampling: pb.SamplingParams) -> SamplingParams:
    """Protobuf sampling fields -> SamplingParams (InvalidSamplingParamsError when invalid)."""
    return SamplingParams(
        max_tokens=sampling.max_tokens if sampling.HasField("max_tokens") else 16,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p if sampling.HasField("top_p") else 1.0,
        seed=sampling.seed if sampling.HasField("seed") else None,
        stop_token_ids=tuple(sampling.stop_token_ids),
        stop=tuple(sampling.stop),
        ignore_eos=sampling.ignore_eos,
    )
