"""Streamed dispatch: CallAssembler reports each tool call the moment its arguments close."""

from agent.dispatch import CallAssembler
from agent.model_calls import CallDelta, FinishedCall


def first(index: int, call_id: str, name: str, arguments: str) -> CallDelta:
    return CallDelta(index=index, call_id=call_id, name=name, arguments=arguments)


def more(index: int, arguments: str) -> CallDelta:
    return CallDelta(index=index, call_id=None, name=None, arguments=arguments)


def test_a_call_is_reported_the_moment_its_closing_brace_arrives():
    assembler = CallAssembler()
    assert assembler.add(first(0, "c0", "lookup", '{"a"')) == []
    assert assembler.add(more(0, ": 1")) == []
    assert assembler.num_reported == 0
    assert assembler.add(more(0, "}")) == [FinishedCall("c0", "lookup", '{"a": 1}')]
    assert assembler.num_reported == 1
    assert assembler.finish() == []


def test_a_call_is_reported_once_even_when_fragments_follow_its_close():
    assembler = CallAssembler()
    assert assembler.add(first(0, "c0", "lookup", '{"a": 1}')) == [
        FinishedCall("c0", "lookup", '{"a": 1}')
    ]
    assert assembler.add(more(0, " ")) == []
    assert assembler.finish() == []


def test_a_fragment_of_the_next_call_closes_the_call_before_it_whatever_its_text():
    assembler = CallAssembler()
    assert assembler.add(first(0, "c0", "search", '{"query": "x"')) == []
    closed = assembler.add(first(1, "c1", "lookup", '{"key"'))
    assert closed == [FinishedCall("c0", "search", '{"query": "x"')]
    assert assembler.add(more(1, ': "k"}')) == [FinishedCall("c1", "lookup", '{"key": "k"}')]


def test_a_call_that_closes_in_the_same_fragment_as_its_predecessor_is_closed_reports_both():
    assembler = CallAssembler()
    assembler.add(first(0, "c0", "search", '{"query": "x"'))
    closed = assembler.add(first(1, "c1", "lookup", '{"key": "k"}'))
    assert closed == [
        FinishedCall("c0", "search", '{"query": "x"'),
        FinishedCall("c1", "lookup", '{"key": "k"}'),
    ]


def test_finish_reports_the_calls_still_open_with_their_arguments_as_written():
    assembler = CallAssembler()
    assembler.add(first(0, "c0", "search", '{"query": "x"}'))
    assembler.add(first(1, "c1", "lookup", '{"key": "k'))
    assert assembler.finish() == [FinishedCall("c1", "lookup", '{"key": "k')]
    assert assembler.num_reported == 2
    assert assembler.finish() == []


def test_finish_prefers_the_parsers_whole_calls_for_those_not_yet_reported():
    assembler = CallAssembler()
    assembler.add(first(0, "c0", "search", '{"query": "x"}'))
    assembler.add(first(1, "c1", "lookup", '{"key": "k'))
    whole = (
        FinishedCall("c0", "search", '{"query": "x"}'),
        FinishedCall("c1", "lookup", '{"key": "k"}'),
        FinishedCall("c2", "read_page", '{"url": "u"}'),
    )
    assert assembler.finish(whole) == [whole[1], whole[2]]
    assert assembler.num_reported == 3


def test_braces_inside_nested_objects_and_strings_do_not_close_a_call_early():
    assembler = CallAssembler()
    assert assembler.add(first(0, "c0", "f", '{"a": {"b": 1}')) == []
    assert assembler.add(more(0, ', "s": "}')) == []
    assert assembler.add(more(0, ' {}"')) == []
    assert assembler.add(more(0, ', "t": "x}"')) == []
    closed = assembler.add(more(0, "}"))
    assert closed == [FinishedCall("c0", "f", '{"a": {"b": 1}, "s": "} {}", "t": "x}"}')]


def test_a_closing_brace_that_ends_a_json_array_or_a_nested_object_only_is_not_a_call():
    assembler = CallAssembler()
    assert assembler.add(first(0, "c0", "f", '{"a": [{"b": 1}')) == []
    assert assembler.add(more(0, "]")) == []
    assert assembler.add(more(0, "}")) == [FinishedCall("c0", "f", '{"a": [{"b": 1}]}')]


def test_calls_are_reported_in_call_order_as_they_close():
    assembler = CallAssembler()
    reported = []
    for delta in (
        first(0, "c0", "search", '{"query":'),
        more(0, ' "a"}'),
        first(1, "c1", "lookup", "{"),
        more(1, '"key": "b"}'),
        first(2, "c2", "read_page", '{"url": "c"}'),
    ):
        reported.extend(call.call_id for call in assembler.add(delta))
    assert reported == ["c0", "c1", "c2"]
    assert assembler.finish() == []


def test_an_empty_argument_object_closes_the_call():
    assembler = CallAssembler()
    assert assembler.add(first(0, "c0", "now", "{}")) == [FinishedCall("c0", "now", "{}")]
