"""The agent runs of a benchmark: seeded, so that every layout gets runs of the same shape (class,
lengths, image counts and sizes, allowed tools, tool-call limit, budget); the words and pixels
differ per layout, so that no layout finds another's prompts or images in a cache.

    run = instructions (per layout, shared by its runs, as an agent's system prompt is)
          + one user message (text + the class's images)
          + the tools it may call (the demo MCP server's), at most `max_tool_calls` calls
          -> a final answer of `max_output_tokens` tokens (EOS ignored), within `budget_ms`

The classes are seed 001 §9's, in the names of bench/serve/mix.py, and a tool-heavy one:

    class        what the user message carries     tools                          K  budget
    text         ~120 words                        lookup, read_page              2  12 s
    image        one small photo                   lookup, search                 2  12 s
    ocr          one large document page           lookup, read_page              3  15 s
    multi_image  4 photos                          lookup, search, read_page      3  20 s
    video        6 frames of one scene             lookup, search                 3  22 s
    retrieval    ~200 words, no image              search, read_page, lookup,     6  25 s
                                                   workflow

Budgets are for the small preset on a 2-core CPU with the tools' latencies scaled x10 (the
Makefile's run: tools then take the share of a run that they take in production agents):
about the client loop's E2E p50 there, so that a run has room for its calls and the budget
cuts only tails. `--budget-ms` sets one for every class.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace

import numpy as np

from bench.common.words import IMAGE_WORDS, WORDS
from bench.serve import images as draw

PHOTO_SIDE = (192, 320)  # a photo's side, drawn per run (square: the same size on every layout)
OCR_SIZE = (2400, 1200)  # width, height of a document page
VIDEO_SIDE = 160


@dataclass(frozen=True)
class RunClass:
    """What the runs of one class share."""

    kind: str
    prompt_words: int
    num_images: int
    tools: tuple[str, ...]  # the demo tools the run may call (allowed_tools)
    max_tool_calls: int  # K
    budget_ms: float


CLASSES: dict[str, RunClass] = {
    c.kind: c
    for c in (
        RunClass("text", 120, 0, ("lookup", "read_page"), 2, 12000.0),
        RunClass("image", 60, 1, ("lookup", "search"), 2, 12000.0),
        RunClass("ocr", 60, 1, ("lookup", "read_page"), 3, 15000.0),
        RunClass("multi_image", 60, 4, ("lookup", "search", "read_page"), 3, 20000.0),
        RunClass("video", 60, 6, ("lookup", "search"), 3, 22000.0),
        RunClass("retrieval", 200, 0, ("search", "read_page", "lookup", "workflow"), 6, 25000.0),
    )
}


@dataclass(frozen=True)
class AgentShape:
    num_runs: int = 24  # per layout; classes take turns in `kinds` order
    kinds: tuple[str, ...] = tuple(CLASSES)
    instructions_words: int = 80
    output_tokens: int = 32  # the final answer (EOS ignored)
    budget_ms: float | None = None  # every run's budget; None: its class's
    classes: dict[str, RunClass] = field(default_factory=lambda: dict(CLASSES))

    @classmethod
    def quick(cls) -> AgentShape:
        """A few small runs of three classes, for smoke tests: short prompts, one tool and at
        most two calls each, so that a run fits the tiny model's 1,024-token context (its
        tokenizer spends ~250 tokens on one tool's definition). The small preset's budgets
        are loose for the tiny model: they check that runs answer, not how they cut."""
        classes = {
            kind: replace(c, prompt_words=min(c.prompt_words, 24), tools=c.tools[:1],
                          max_tool_calls=min(c.max_tool_calls, 2))
            for kind, c in CLASSES.items()
        }  # fmt: skip
        return cls(
            num_runs=3, kinds=("text", "image", "retrieval"), instructions_words=20,
            output_tokens=8, classes=classes,
        )  # fmt: skip

    @classmethod
    def tool_bound(cls) -> AgentShape:
        """The runs for the tiny preset, where a model call takes a few hundred ms and the
        tools dominate a run, as they do for a GPU-served agent (tools 30-85 % of FTR in
        Sutradhara's traces). One or two tools per class, two calls and short prompts, to fit
        the tiny model's 1,024-token context; budgets about the client loop's E2E p50 with
        the tools' latencies x10 (lookup 0.2 s, read_page 1.2 s, search 2.5 s, heavy-tailed)."""
        classes = {
            c.kind: c
            for c in (
                RunClass("text", 30, 0, ("lookup",), 2, 3000.0),
                RunClass("image", 20, 1, ("search",), 2, 6000.0),
                RunClass("ocr", 20, 1, ("read_page",), 2, 4000.0),
                RunClass("multi_image", 20, 4, ("search",), 2, 6000.0),
                RunClass("video", 20, 6, ("lookup",), 2, 3000.0),
                RunClass("retrieval", 40, 0, ("search", "lookup"), 2, 6000.0),
            )
        }
        return cls(num_runs=24, instructions_words=20, output_tokens=16, classes=classes)

    def with_budget(self, budget_ms: float | None) -> AgentShape:
        return self if budget_ms is None else replace(self, budget_ms=budget_ms)


@dataclass(frozen=True)
class AgentRun:
    index: int
    kind: str
    instructions: str
    text: str
    images: tuple[bytes, ...]  # PNG
    tools: tuple[str, ...]
    max_tool_calls: int
    max_output_tokens: int
    budget_ms: float

    @property
    def image_urls(self) -> list[str]:
        return ["data:image/png;base64," + base64.b64encode(png).decode() for png in self.images]


def agent_runs(shape: AgentShape, seed: int, words_seed: int) -> list[AgentRun]:
    """The runs of one layout: shapes from `seed`, words and pixels from `words_seed` (one per
    layout). Each run draws from its own generators, so a longer run list starts with the
    runs of a shorter one."""
    instructions = _words(np.random.default_rng([words_seed, 2**31]), shape.instructions_words)
    runs = []
    for index in range(shape.num_runs):
        run_class = shape.classes[shape.kinds[index % len(shape.kinds)]]
        sizes = np.random.default_rng([seed, index])
        content = np.random.default_rng([words_seed, index])
        runs.append(
            AgentRun(
                index=index,
                kind=run_class.kind,
                instructions="You answer with the help of tools. " + instructions,
                text=_words(content, run_class.prompt_words, images=run_class.num_images > 0),
                images=_images(run_class, sizes, content),
                tools=run_class.tools,
                max_tool_calls=run_class.max_tool_calls,
                max_output_tokens=shape.output_tokens,
                budget_ms=shape.budget_ms or run_class.budget_ms,
            )
        )
    return runs


def _words(rng: np.random.Generator, n: int, images: bool = False) -> str:
    vocabulary = WORDS + IMAGE_WORDS if images else WORDS
    return " ".join(rng.choice(vocabulary, size=n))


def _images(run_class: RunClass, sizes: np.random.Generator, content) -> tuple[bytes, ...]:
    if run_class.kind == "ocr":
        return (draw.document(content, *OCR_SIZE),)
    if run_class.kind == "video":
        return tuple(draw.video(content, run_class.num_images, VIDEO_SIDE))
    sides = sizes.integers(PHOTO_SIDE[0], PHOTO_SIDE[1] + 1, size=run_class.num_images)
    return tuple(draw.photo(content, int(side), int(side)) for side in sides)
