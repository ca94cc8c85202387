"""A GenerateRequest's prompt as text for the tokenizer: a raw prompt as is, or the chat
conversation through the model's chat template (with the tools, which the template shows).

A session's continuation (`Conversation.prefix_token_ids`) keeps its earlier turns as the
model's own tokens, the prompt and the answer of the call it continues, and renders only what
comes after that answer:

    rendered:  [ earlier turns .......... ][ gap ][ answer text ][ tail: the answer's end,
               = the template with a generation                   new messages, the
                 prompt after the earlier turns                   generation prompt ]
    prompt:    [ prefix_token_ids: the earlier prompt + answer ids ][ tail, tokenised   ]

so that it extends the earlier call's tokens exactly and its paused KV is reused to the last
token. Re-rendering the answer from its text would not: a byte-level tokenizer seldom gives a
sampled answer back the ids it was sampled as, and templates put a space before an answer
that the model did not see. The tail is used only where the template renders the earlier
turns unchanged, then the answer as written (`gap` whitespace); otherwise (an answer with tool
calls, which the template writes its own way) the whole conversation is rendered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jinja2 import TemplateError

from proto.triserve.v1 import triserve_pb2 as pb
from workers.contract.errors import InvalidRequestError


@dataclass(frozen=True)
class PromptText:
    text: str  # to expand (each "<image>" slot) and tokenise
    images: list[bytes]  # every image, in prompt order (encoded)
    prefix_token_ids: list[int] = field(default_factory=list)  # ids before `text`
    num_prefix_images: int = 0  # images whose placeholders are in prefix_token_ids
    whole_text: str = ""  # a continuation's whole conversation, rendered (its fallback)

    def rendered_whole(self) -> PromptText:
        """The continuation as a plain prompt: the whole conversation rendered."""
        return PromptText(self.whole_text, self.images) if self.prefix_token_ids else self


def prompt_text(request: pb.GenerateRequest, tokenizer, tools: list[dict]) -> PromptText:
    """The request's prompt (InvalidRequestError when empty or the template refuses it)."""
    kind = request.WhichOneof("prompt")
    if kind == "raw":
        return PromptText(request.raw.text, list(request.raw.images))
    conversation = request.conversation
    if kind is None or not conversation.messages:
        raise InvalidRequestError("the prompt is empty")
    messages, images, images_before = [], [], []
    for message in conversation.messages:
        images_before.append(len(images))
        parts = []
        for part in message.content:
            if part.WhichOneof("part") == "image":
                parts.append({"type": "image"})
                images.append(part.image)
            else:
                parts.append({"type": "text", "text": part.text})
        messages.append(_template_message(message, parts))
    text = _render(tokenizer, messages, tools, conversation.add_generation_prompt)
    n = conversation.num_prefix_messages
    if conversation.prefix_token_ids and 0 < n < len(messages):
        tail = _tail_after_answer(tokenizer, messages, n, tools, text)
        if tail is not None:
            prefix = _prefix_ids(tokenizer, list(conversation.prefix_token_ids), tail)
            return PromptText(tail, images, prefix, images_before[n], whole_text=text)
    return PromptText(text, images)


def _tail_after_answer(tokenizer, messages: list[dict], n: int, tools, text: str) -> str | None:
    """What `text` renders after the answer that ends the first `n` messages; None when the
    template does not render it as written."""
    answer = messages[n - 1]
    if answer["role"] != "assistant" or answer.get("tool_calls"):
        return None
    written = "".join(p.get("text", "") for p in answer["content"] if p["type"] == "text")
    before = _render(tokenizer, messages[: n - 1], tools, add_generation_prompt=True)
    if not written or not text.startswith(before):
        return None
    start = text.find(written, len(before))
    if start < 0 or text[len(before) : start].strip():
        return None
    return text[start + len(written) :]


def _prefix_ids(tokenizer, prefix: list[int], tail: str) -> list[int]:
    """The earlier ids, less a final EOS that the tail writes again (it closes the answer)."""
    if any(not 0 <= token < len(tokenizer) for token in prefix):
        raise InvalidRequestError(f"conversation.prefix_token_ids must be in [0, {len(tokenizer)})")
    eos = tokenizer.eos_token
    if prefix and prefix[-1] == tokenizer.eos_token_id and eos and tail.startswith(eos):
        prefix = prefix[:-1]
    return prefix


def _render(tokenizer, messages: list[dict], tools: list[dict], add_generation_prompt: bool):
    try:
        return tokenizer.apply_chat_template(
            messages,
            tools=tools or None,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
    except (ValueError, TemplateError) as e:  # no template, or messages it rejects
        raise InvalidRequestError(f"cannot apply the model's chat template: {e}") from None


def _template_message(message: pb.ChatMessage, parts: list[dict]) -> dict:
    """One chat message as Hugging Face chat templates take it (OpenAI's shape)."""
    rendered: dict = {"role": message.role, "content": parts}
    if message.tool_calls:
        rendered["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json or "{}"},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        rendered["tool_call_id"] = message.tool_call_id
    return rendered
