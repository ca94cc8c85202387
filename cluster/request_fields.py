"""Reading a GenerateRequest's fields without building it: what the door (in the ingress and
in Serve's proxy) and the request builder both need. Protobuf only: cheap to import anywhere.
"""

from __future__ import annotations

from proto.triserve.v1 import triserve_pb2 as pb

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


def has_images(request: pb.GenerateRequest) -> bool:
    """Whether the request carries an image (decided before any decoding)."""
    return len(prompt_images(request)) > 0


def prompt_images(request: pb.GenerateRequest) -> list[bytes]:
    """The request's encoded images, in prompt order (not decoded)."""
    if request.WhichOneof("prompt") == "raw":
        return list(request.raw.images)
    return [
        part.image
        for message in request.conversation.messages
        for part in message.content
        if part.WhichOneof("part") == "image"
    ]


def prompt_chars(request: pb.GenerateRequest) -> int:
    """Characters of the prompt as sent: raw text, or every chat message's role, text and tool
    calls; plus the tools' definitions and the response schema, which the prompt shows too."""
    extra = sum(len(t.name) + len(t.description) + len(t.parameters_json) for t in request.tools)
    extra += len(request.response_format.json_schema)
    if request.WhichOneof("prompt") == "raw":
        return len(request.raw.text) + extra
    return extra + sum(
        len(message.role)
        + sum(len(part.text) for part in message.content)
        + sum(len(call.name) + len(call.arguments_json) for call in message.tool_calls)
        for message in request.conversation.messages
    )
