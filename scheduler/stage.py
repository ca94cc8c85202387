"""The three stages of a request, and the letter each has in a worker's `stages` ("E", "P", "D")."""

from __future__ import annotations

from enum import Enum


class Stage(Enum):
    ENCODE = "encode"
    PREFILL = "prefill"
    DECODE = "decode"

    @property
    def letter(self) -> str:
        return self.value[0].upper()


def stages_for(has_images: bool) -> list[Stage]:
    """The stages a request passes through: text-only requests skip encode."""
    language = [Stage.PREFILL, Stage.DECODE]
    return [Stage.ENCODE, *language] if has_images else language
