"""Sessions on the real engine: a conversation whose every turn continues the previous one's
paused KV gives exactly the tokens a fresh plain prefill of the same prompt gives, computing
only what the paused KV lacks; colocated or with turn 1 prefilled on another engine; and paused
KV that expires, is evicted under memory pressure or released leaves no block behind."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.support import make_image
from workers.contract.engine_config import EngineConfig
from workers.contract.messages import PausedKV, PausePlan, PauseReleased
from workers.contract.sampling_params import SamplingParams
from workers.engine.engine import Engine
from workers.engine.paused_kv import reused_prefix
from workers.engine.prompt import PromptBuilder

FIRST = "USER: <image>\nTell me about lighthouses{}. ASSISTANT:"
TEXT_FIRST = "USER: Tell me about lighthouses{}. ASSISTANT:"
NEXT = [" USER: And the keeper? ASSISTANT:", " USER: Why at night? ASSISTANT:"]
PLAN = PausePlan(ttl_s=600.0, expected_pause_s=5.0)
BLOCK = 16  # EngineConfig.block_size


def greedy(turn: int) -> SamplingParams:
    return SamplingParams(max_tokens=10, ignore_eos=True)


def seeded(turn: int) -> SamplingParams:
    return SamplingParams(
        max_tokens=10, temperature=1.0, top_p=0.95, seed=7 + turn, ignore_eos=True
    )


@dataclass
class Turn:
    prompt: list[int]
    answer: list[int]
    num_cached_tokens: int


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return Engine(EngineConfig(model_dir=str(tiny_model_dir)))


@pytest.fixture(scope="module")
def fresh(tiny_model_dir) -> Engine:
    """Plain prefills only: no prefix cache, so every prompt is computed from scratch."""
    return Engine(EngineConfig(model_dir=str(tiny_model_dir), enable_prefix_caching=False))


def first_prompt(engine: Engine, with_image: bool, topic: str = ""):
    """`topic`: words that make the prompt differ from other tests' (none of their blocks in the
    prefix cache, so every full block of the conversation is published: see kept_prefix)."""
    builder = PromptBuilder(engine.config.model_dir, engine.model_config, engine.tokenizer)
    images = [make_image(11)] if with_image else []
    text = (FIRST if with_image else TEXT_FIRST).format(topic)
    prompt = builder.build(text, images).token_ids
    return list(prompt), engine.encode(images) if images else []


def next_prompt(engine: Engine, turn: Turn, text: str, retokenize: bool) -> list[int]:
    """The previous prompt and answer, then `text`; `retokenize`: the answer goes back as text,
    joined to `text` and tokenised again, as a chat client that keeps only strings does."""
    if retokenize:
        answer_text = engine.tokenizer.decode(turn.answer) + text
        return turn.prompt + engine.tokenizer.encode(answer_text, add_special_tokens=False)
    return turn.prompt + turn.answer + engine.tokenizer.encode(text, add_special_tokens=False)


def run(engine: Engine, request_id: str, prompt, params, images=(), **session) -> Turn:
    engine.add_request(request_id, prompt, params, images=images, **session)
    request = engine.get_request(request_id)
    done = engine.run_to_completion()[request_id]
    assert done.finish_reason == "length"
    return Turn(prompt, done.token_ids, request.num_cached_tokens)


def kept_prefix(turn: Turn, prompt: list[int]) -> tuple[int, int]:
    """(common, reused): the common prefix of `prompt` and the tokens whose KV `turn` kept (the
    image, if any, sits at the same offset in every turn), and what a continuation reuses of
    it: all, but for the part of a full block it ends in (that block is in the prefix cache,
    so it is not overwritten)."""
    computed = turn.prompt + turn.answer[:-1]
    common = reused_prefix(computed, [], prompt[:-1], [])
    is_in_partial_block = common // BLOCK == len(computed) // BLOCK
    return common, common if is_in_partial_block else common // BLOCK * BLOCK


def assert_idle(engine: Engine) -> None:
    engine.block_pool.check_invariants()
    stats = engine.stats()
    assert (stats.num_used_blocks, stats.num_paused, stats.num_pinned_blocks) == (0, 0, 0)


def conversation(engine, tag, params_of, with_image=False, retokenize=False) -> list[Turn]:
    """Three turns, each continuing the previous one's paused KV; the last one released."""
    prompt, images = first_prompt(engine, with_image, topic=f" for {tag}")
    turns = [run(engine, f"{tag}-0", prompt, params_of(0), images, pause=PLAN)]
    for index, text in enumerate(NEXT, start=1):
        prompt = next_prompt(engine, turns[-1], text, retokenize)
        session = dict(pause=PLAN, resume_from=f"{tag}-{index - 1}")
        turns.append(run(engine, f"{tag}-{index}", prompt, params_of(index), images, **session))
    assert engine.release_paused(f"{tag}-2")
    return turns


@pytest.mark.parametrize("params_of", [greedy, seeded], ids=["greedy", "seeded"])
@pytest.mark.parametrize(
    "with_image, retokenize", [(False, False), (True, False), (False, True)],
    ids=["text", "image", "retokenized"],
)  # fmt: skip
def test_each_turn_continues_the_paused_kv_with_the_tokens_of_a_plain_prefill(
    engine, fresh, params_of, with_image, retokenize
):
    tag = f"{params_of.__name__}-{with_image}-{retokenize}"
    engine.take_pause_events()
    turns = conversation(engine, tag, params_of, with_image, retokenize)
    _, images = first_prompt(engine, with_image)
    for index, turn in enumerate(turns):
        plain = run(fresh, f"plain-{tag}-{index}", turn.prompt, params_of(index), images)
        assert turn.answer == plain.answer, f"turn {index}"
        assert plain.num_cached_tokens == 0
    num_ending_inside_the_answer = 0
    for previous, turn in zip(turns, turns[1:], strict=False):
        common, reused = kept_prefix(previous, turn.prompt)
        assert turn.num_cached_tokens == reused
        computed = len(previous.prompt) + len(previous.answer) - 1
        assert len(previous.prompt) <= common <= computed
        num_ending_inside_the_answer += common < computed
        if not retokenize:  # all of it, the partial block at the end included
            assert reused == computed
    assert (num_ending_inside_the_answer > 0) == retokenize
    pauses, releases = engine.take_pause_events()
    assert [p.request_id for p in pauses] == [f"{tag}-{i}" for i in range(3)]
    assert [(r.request_id, r.reason) for r in releases] == [
        (f"{tag}-0", "resumed"), (f"{tag}-1", "resumed"), (f"{tag}-2", "released")
    ]  # fmt: skip
    assert_idle(engine)


def test_continuation_with_another_image_in_its_place_reuses_none_of_its_kv(engine, fresh):
    prompt, images = first_prompt(engine, with_image=True, topic=" and swapped images")
    first = run(engine, "cat", prompt, greedy(0), images, pause=PLAN)
    other = engine.encode([make_image(12)])
    prompt = next_prompt(engine, first, NEXT[0], retokenize=False)
    second = run(engine, "dog", prompt, greedy(1), other, resume_from="cat")
    assert second.answer == run(fresh, "plain-dog", prompt, greedy(1), other).answer
    # The image's placeholders start inside block 0, which is in the prefix cache: dropped.
    assert 0 < prompt.index(engine.model_config.image_token_index) < BLOCK
    assert second.num_cached_tokens == 0
    assert [(r.request_id, r.reason) for r in engine.take_pause_events()[1]][-1:] == [
        ("cat", "resumed")
    ]
    assert_idle(engine)


@pytest.mark.parametrize("params_of", [greedy, seeded], ids=["greedy", "seeded"])
def test_turn_decoded_and_paused_on_a_decode_engine_continues_there_as_colocated(
    tiny_model_dir, fresh, params_of
):
    config = dict(model_dir=str(tiny_model_dir))
    prefiller = Engine(EngineConfig(stages="EP", **config))
    decoder = Engine(EngineConfig(stages="D", **config))
    prompt, images = first_prompt(prefiller, with_image=True)
    prefiller.add_request("t0", prompt, params_of(0), images=images, export_kv=True)
    (handoff,) = prefiller.step()
    decoder.add_prefilled(handoff.prefill, params_of(0), pause=PLAN)
    first = Turn(prompt, handoff.new_token_ids + decoder.run_to_completion()["t0"].token_ids, 0)
    num_kept = len(prompt) + 9  # the prompt and 9 of the 10 outputs
    assert decoder.take_pause_events()[0] == [
        PausedKV(request_id="t0", num_tokens=num_kept, num_blocks=-(-num_kept // BLOCK))
    ]
    prompt = next_prompt(decoder, first, NEXT[0], retokenize=False)
    second = run(decoder, "t1", prompt, params_of(1), images, resume_from="t0")
    assert second.num_cached_tokens == len(first.prompt) + len(first.answer) - 1
    assert decoder.take_pause_events()[1] == [PauseReleased(request_id="t0", reason="resumed")]
    for index, turn in enumerate((first, second)):
        plain = run(fresh, f"plain-disagg-{index}", turn.prompt, params_of(index), images)
        assert turn.answer == plain.answer, f"turn {index}"
    # With its paused KV gone, the decode engine prefills the continuation itself.
    again = run(decoder, "t1-again", second.prompt, params_of(1), images, resume_from="t0")
    assert again.answer == second.answer
    assert_idle(prefiller)
    assert_idle(decoder)


@pytest.mark.parametrize("prefix_caching", [False, True], ids=["no-prefix-cache", "prefix-cache"])
def test_expired_paused_kv_makes_the_continuation_a_plain_prefill(
    tiny_model_dir, fresh, prefix_caching
):
    engine = Engine(
        EngineConfig(model_dir=str(tiny_model_dir), enable_prefix_caching=prefix_caching)
    )
    prompt, _ = first_prompt(engine, with_image=False)
    gone = PausePlan(ttl_s=0.0, expected_pause_s=0.0)
    first = run(engine, "t0", prompt, greedy(0), pause=gone)
    assert engine.stats().num_paused == 1
    assert engine.expire_paused() == 1  # the worker's idle check
    prompt = next_prompt(engine, first, NEXT[0], retokenize=False)
    second = run(engine, "t1", prompt, greedy(1), resume_from="t0", pause=gone)
    assert second.answer == run(fresh, "plain-expired", prompt, greedy(1)).answer
    # The expired blocks went back to the pool; the full ones stay in the prefix cache.
    num_full = (len(first.prompt) + len(first.answer) - 1) // BLOCK
    assert second.num_cached_tokens == (num_full * BLOCK if prefix_caching else 0)
    engine.step()  # expires t1's KV at its start
    _, releases = engine.take_pause_events()
    assert [(r.request_id, r.reason) for r in releases] == [("t0", "expired"), ("t1", "expired")]
    assert_idle(engine)


def test_memory_pressure_evicts_the_paused_kv_expected_back_last_first(tiny_model_dir):
    engine = Engine(EngineConfig(model_dir=str(tiny_model_dir), num_kv_blocks=12))
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    for index, (request_id, expected_s) in enumerate((("a", 10.0), ("b", 30.0), ("c", 20.0))):
        prompt = list(range(100 + 40 * index, 130 + 40 * index))  # 30 + 7 tokens: 3 blocks
        plan = PausePlan(ttl_s=600.0, expected_pause_s=expected_s)
        run(engine, request_id, prompt, params, pause=plan)
    stats = engine.stats()
    assert (stats.num_paused, stats.num_pinned_blocks, stats.num_free_blocks) == (3, 9, 3)
    engine.take_pause_events()
    run(engine, "x", list(range(300, 360)), SamplingParams(max_tokens=4, ignore_eos=True))
    assert engine.take_pause_events()[1] == [PauseReleased(request_id="b", reason="evicted")]
    run(engine, "y", list(range(400, 500)), SamplingParams(max_tokens=4, ignore_eos=True))
    assert engine.take_pause_events()[1] == [PauseReleased(request_id="c", reason="evicted")]
    assert engine.stats().num_preemptions == 0
    assert engine.release_paused("a") and not engine.release_paused("a")
    assert engine.take_pause_events()[1] == [PauseReleased(request_id="a", reason="released")]
    assert_idle(engine)


def test_aborted_request_is_not_paused_and_reset_releases_paused_kv(tiny_model_dir):
    engine = Engine(EngineConfig(model_dir=str(tiny_model_dir)))
    prompt, _ = first_prompt(engine, with_image=False)
    engine.add_request("aborted", prompt, greedy(0), pause=PLAN)
    engine.step()
    engine.abort("aborted")
    run(engine, "paused", prompt, greedy(0), pause=PLAN)
    engine.reset_caches()
    pauses, releases = engine.take_pause_events()
    assert [p.request_id for p in pauses] == ["paused"]
    assert releases == [PauseReleased(request_id="paused", reason="released")]
    assert_idle(engine)
    assert engine.block_pool.num_cached == 0
