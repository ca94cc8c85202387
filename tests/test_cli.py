"""The `triserve` command line: make-model and generate --local."""

from __future__ import annotations

import json

from cluster.cli import main
from tests.support import Oracle, make_image


def test_make_model_writes_a_checkpoint_that_transformers_loads(tmp_path, capsys):
    assert main(["make-model", str(tmp_path / "m"), "--preset", "tiny"]) == 0
    oracle = Oracle(tmp_path / "m")  # LlavaForConditionalGeneration + AutoProcessor
    assert oracle.model.config.model_type == "llava"
    assert main(["make-model", str(tmp_path / "m")]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err


def test_generate_local_json_matches_transformers(tiny_model_dir, oracle_for, tmp_path, capsys):
    image = make_image(9)
    path = tmp_path / "cat.png"
    image.save(path)
    prompt = "USER: <image>\nWhat is it? ASSISTANT:"
    argv = ["generate", "--local", "--model", str(tiny_model_dir), "--prompt", prompt]
    argv += ["--image", str(path), "--max-tokens", "12", "--ignore-eos", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["token_ids"] == oracle_for(tiny_model_dir).generate(prompt, [image], 12)
    assert isinstance(out["text"], str)


def test_generate_local_reports_bad_input_without_a_traceback(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    base = ["generate", "--local", "--model", str(tiny_model_dir)]
    assert main([*base, "--prompt", "x <image>", "--image", str(bad)]) == 2
    assert "cannot decode image" in capsys.readouterr().err
    assert main([*base, "--prompt", "hi", "--temperature", "-1"]) == 2
    assert "temperature must be in [0, 100]" in capsys.readouterr().err


def test_seeded_sampling_is_reproducible(tiny_model_dir, capsys):
    argv = ["generate", "--local", "--model", str(tiny_model_dir), "--prompt", "Once upon"]
    argv += ["--temperature", "1.0", "--top-p", "0.9", "--top-k", "50", "--json"]
    outputs = []
    for seed in ("7", "7", "8"):
        assert main([*argv, "--seed", seed, "--max-tokens", "16"]) == 0
        outputs.append(json.loads(capsys.readouterr().out)["token_ids"])
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]
