"""Train a small byte-level BPE tokenizer on the spot, for random-weight checkpoints.

The corpus is the docstrings of a fixed list of standard-library modules: always on the machine,
no download, and real English mixed with code.
"""

from __future__ import annotations

import importlib
import inspect
import warnings

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

CORPUS_MODULES = (
    "abc argparse ast asyncio base64 bisect calendar collections contextlib copy csv dataclasses "
    "datetime decimal difflib email enum fractions functools glob heapq html http inspect io "
    "ipaddress itertools json logging math operator os pathlib pickle random re shutil socket "
    "statistics string subprocess textwrap threading typing unittest urllib uuid zipfile"
).split()
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")
# LLaVA-1.5 style: "USER: <image>\nWhat is this? ASSISTANT:". With tools, Hermes style (the
# `hermes` tool-call format of cluster/tool_calls detects it by its `<tool_call>`): a system
# block lists the tools, the assistant answers with `<tool_call>` blocks, and tool results come
# back in a user turn as `<tool_response>` blocks. A newline right after a `{% %}` tag is
# written as {{ '\n' }}, because Hugging Face renders with trim_blocks, which drops it.
CHAT_TEMPLATE = (
    "{% macro text_of(content) %}"
    "{% if content is string %}{{ content }}"
    "{% elif content %}{% for part in content %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
    "{% set has_system = messages and messages[0]['role'] == 'system' %}"
    "{% if tools %}"
    "{% if has_system %}{{ text_of(messages[0]['content']) }}\n\n{% endif %}"
    "# Tools\n\nYou may call one or more functions to help with the request. Their signatures,"
    " one JSON object a line, are within <tools></tools> XML tags:\n<tools>"
    "{% for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{% endfor %}"
    "{{ '\\n' }}</tools>\n\nTo call a function, answer with one block per call, each a JSON"
    " object with the function's name and arguments within <tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n'
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% if not (tools and loop.first) %}{{ text_of(message['content']) }}\n{% endif %}"
    "{% elif message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% elif message['role'] == 'tool' %}"
    "{% if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}USER: {% endif %}"
    "<tool_response>\n{{ text_of(message['content']) }}\n</tool_response>"
    "{% if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %} "
    "{% else %}{{ '\\n' }}{% endif %}"
    "{% else %}ASSISTANT: {{ text_of(message['content']) }}"
    "{% for call in message['tool_calls'] or [] %}"
    "{% if call['function'] is defined %}{% set call = call['function'] %}{% endif %}"
    "{% if not loop.first or text_of(message['content']) %}{{ '\\n' }}{% endif %}"
    '<tool_call>\n{"name": {{ call[\'name\'] | tojson }}, "arguments": '
    "{% if call['arguments'] is string %}{{ call['arguments'] }}"
    "{% else %}{{ call['arguments'] | tojson }}{% endif %}"
    "}\n</tool_call>"
    "{% endfor %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def corpus() -> list[str]:
    texts = []
    with warnings.catch_warnings():  # some members are deprecated aliases (typing.io)
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in CORPUS_MODULES:
            module = importlib.import_module(name)
            texts.append(inspect.getdoc(module) or "")
            for _, member in sorted(vars(module).items()):
                doc = inspect.getdoc(member) if callable(member) else None
                if doc:
                    texts.append(doc)
    return texts


def train_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer that adds `<s>` in front, with `<image>` as a special token."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer)
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=1 << 30,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped
