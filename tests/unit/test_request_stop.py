"""Request.check_stop: the finish reason a client sees after each generated token."""

from __future__ import annotations

from workers.contract.sampling_params import SamplingParams
from workers.engine.request import Request, RequestStatus

EOS = 2
PROMPT = [10, 11, 12]
MAX_MODEL_LEN = 100


def detokenize(token_ids):
    return "".join(chr(ord("a") + t) for t in token_ids)


def generate(output, max_model_len=MAX_MODEL_LEN, eos=(EOS,), **params):
    """Append `output` token by token; return (tokens kept, finish reason at the last one)."""
    request = Request("r", PROMPT, SamplingParams(**{"max_tokens": 100, **params}))
    reason = None
    for token_id in output:
        request.token_ids.append(token_id)
        reason = request.check_stop(eos, max_model_len, detokenize)
        if reason is not None:
            break
    return request.output_token_ids, reason


def test_new_request_starts_waiting_with_its_prompt_as_tokens():
    request = Request("r", (10, 11), SamplingParams())

    assert request.status is RequestStatus.WAITING
    assert request.token_ids == [10, 11]
    assert request.prompt_token_ids == [10, 11]
    assert (request.num_prompt_tokens, request.num_tokens) == (2, 2)
    assert (request.num_computed_tokens, request.num_uncomputed_tokens) == (0, 2)
    assert request.output_token_ids == []
    assert not request.is_done


def test_appending_output_does_not_change_the_prompt():
    request = Request("r", [10, 11], SamplingParams())
    request.token_ids.append(5)

    assert request.prompt_token_ids == [10, 11]
    assert request.output_token_ids == [5]


def test_generation_continues_without_a_stop_condition():
    assert generate([5, 6, 7]) == ([5, 6, 7], None)


def test_eos_token_stops():
    assert generate([5, EOS, 6]) == ([5, EOS], "stop")


def test_ignore_eos_generates_past_eos():
    assert generate([5, EOS, 6], ignore_eos=True) == ([5, EOS, 6], None)


def test_stop_token_id_stops_even_when_eos_is_ignored():
    assert generate([5, 7, 6], stop_token_ids=[7], ignore_eos=True) == ([5, 7], "stop")


def test_any_of_several_eos_ids_stops():
    assert generate([5, 9, 6], eos=(EOS, 9)) == ([5, 9], "stop")


def test_max_tokens_stops_with_length():
    assert generate([5, 6, 7, 8], max_tokens=3) == ([5, 6, 7], "length")


def test_single_token_request_stops_after_its_first_token():
    assert generate([5, 6], max_tokens=1) == ([5], "length")


def test_eos_on_the_last_allowed_token_reports_stop():
    assert generate([5, EOS], max_tokens=2) == ([5, EOS], "stop")


def test_max_model_len_stops_with_length():
    assert generate([5, 6, 7], max_model_len=len(PROMPT) + 2) == ([5, 6], "length")


def test_stop_string_stops_on_the_token_that_completes_it():
    # detokenize: 7 -> "h", 8 -> "i"
    assert generate([5, 7, 8, 6], stop=["hi"]) == ([5, 7, 8], "stop")


def test_stop_string_only_partly_generated_does_not_stop():
    assert generate([7, 5, 8], stop=["hi"]) == ([7, 5, 8], None)


def test_any_of_several_stop_strings_stops():
    assert generate([5, 6, 25, 6], stop=["xyz", "gz"]) == ([5, 6, 25], "stop")


def test_stop_string_in_the_prompt_does_not_stop():
    # The prompt detokenizes to "klm".
    assert generate([5, 6], stop=["lm"]) == ([5, 6], None)


def test_stop_string_is_found_after_a_long_output():
    output = [0] * 50 + [7, 8]
    assert generate(output, stop=["hi"]) == (output, "stop")
