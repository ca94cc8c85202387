"""Run one prompt through a colocated engine in this process (`triserve generate --local`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workers.contract.engine_config import EngineConfig
from workers.contract.errors import InvalidImageError
from workers.contract.images import decode_image
from workers.contract.sampling_params import SamplingParams
from workers.engine.engine import Engine
from workers.engine.prompt import PromptBuilder


@dataclass(frozen=True)
class LocalResult:
    token_ids: list[int]
    text: str
    finish_reason: str | None


def generate_local(args, model_dir: Path) -> LocalResult:
    """`args` carries the CLI's prompt, image paths and sampling flags."""
    params = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop=tuple(args.stop),
        ignore_eos=args.ignore_eos,
    )
    images = []
    for path in args.image:
        try:
            images.append(decode_image(Path(path).read_bytes()))
        except OSError as e:
            raise InvalidImageError(f"cannot read {path}: {e.strerror}") from None
    engine = Engine(EngineConfig(model_dir=str(model_dir), device=args.device, dtype=args.dtype))
    prompt = PromptBuilder(model_dir, engine.model_config, engine.tokenizer).build(
        args.prompt, images
    )
    engine.add_request("local", prompt.token_ids, params, images=engine.encode(images))
    done = engine.run_to_completion()["local"]
    text = engine.detokenize(done.token_ids)
    return LocalResult(done.token_ids, trim_at_stop(text, params.stop), done.finish_reason)


def trim_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """Cut the text before the first stop string, which is not part of the answer."""
    cuts = [text.find(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text
