"""Which ingress build lane a request takes: text never queues behind image decoding."""

from __future__ import annotations

from cluster.client import build_request
from cluster.request_fields import has_images


def test_raw_prompts_take_the_image_lane_only_with_images():
    assert not has_images(build_request(prompt="just text"))
    assert has_images(build_request(prompt="<image> what?", images=[b"png"]))


def test_chat_messages_take_the_image_lane_when_any_part_is_an_image():
    text_only = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert not has_images(build_request(messages=text_only))
    with_image = text_only + [
        {
            "role": "user",
            "content": [{"type": "image", "image": b"png"}, {"type": "text", "text": "?"}],
        }
    ]
    assert has_images(build_request(messages=with_image))
