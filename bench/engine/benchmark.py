"""Engine benchmark: Triserve's Engine against transformers' generate, same checkpoint, same run.

    python -m bench.engine [--preset tiny|mini|small] [--device cpu|cuda]
                           [--dtype float32|bfloat16] [--backend native|vllm] [--json OUT] [--quick]

`--backend vllm` adds vLLM's engine (workers/vllm/, driven through the same engine interface)
as a third system next to Triserve's and transformers'.

Workloads (greedy, EOS ignored, so every request generates exactly its max_tokens):
  1. batch 1: decode tokens/s after the first token, and ms per step;
  2. a mixed batch: Triserve batches continuously; transformers runs one left-padded batch to
     the largest max_tokens, and only each request's own max_tokens count as useful tokens;
  3. TTFT of a one-image prompt (prompt building + image encode + prefill + first token);
  4. the memory-bandwidth floor of a decode step (see membw.py) next to the measured step;
  5. what constrained decoding costs: Triserve's decode step at batch 16 with and without a
     grammar (grammar.py).
No Ray import anywhere: this runs on bare GPU boxes (vLLM only with `--backend vllm`).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import torch

from bench.common import output
from bench.common.machine import describe_machine
from bench.engine.grammar import GrammarSizes, bench_grammar
from bench.engine.hf import HFRunner
from bench.engine.membw import bandwidth_report, decode_bytes, floor_report, measure_copy_bandwidth
from bench.engine.report import markdown_report
from bench.engine.triserve import TriserveRunner
from bench.engine.workloads import (
    BenchSizes,
    MixedBatch,
    PromptSource,
    batch_summary,
    single_summary,
)
from workers.engine.model_config import ModelConfig
from workers.engine.model_writer import ensure_model
from workers.engine.prompt import load_tokenizer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--preset", default="small", choices=["tiny", "mini", "small"])
    parser.add_argument(
        "--backend",
        default="native",
        choices=["native", "vllm"],
        help="vllm: vLLM's engine as well, side by side (needs vLLM installed)",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--json", type=Path, help="write every number and the machine here")
    parser.add_argument("--quick", action="store_true", help="tiny workloads, for smoke tests")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


log = partial(output.log, "bench.engine")


@contextmanager
def collector_paused():
    """A full garbage collection over transformers' heap takes up to ~200 ms on a small CPU and
    lands inside timed steps at random. Freeze the heap built so far, collect only between
    timed calls (see `untimed_collect`), never during one."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def untimed_collect() -> None:
    gc.collect()


def bench_single(systems, source: PromptSource, sizes: BenchSizes) -> dict:
    n_prompt, n_new = sizes.single_prompt_tokens, sizes.single_new_tokens
    for system in systems:  # warm-up
        system.generate_one(source.prompt(n_prompt), min(8, n_new))
    timelines = {system.name: [] for system in systems}
    for _ in range(sizes.single_repeats):
        prompt = source.prompt(n_prompt)
        for system in systems:
            untimed_collect()
            timelines[system.name].append(system.generate_one(prompt, n_new))
    first = [timelines[system.name][0].token_ids for system in systems]
    result = {name: single_summary(runs, n_prompt) for name, runs in timelines.items()}
    return {
        "prompt_tokens": n_prompt,
        "new_tokens": n_new,
        **result,
        "greedy_tokens_match": all(ids == first[0] for ids in first),
    }


def bench_batch(systems, source: PromptSource, sizes: BenchSizes, batch: MixedBatch) -> dict:
    warmup = source.mixed_batch(replace(sizes, batch_size=min(4, sizes.batch_size)))
    warmup = replace(warmup, max_tokens=[min(4, m) for m in warmup.max_tokens])
    for system in systems:
        system.generate_batch(warmup)
    runs = {system.name: [] for system in systems}
    for repeat in range(sizes.batch_repeats):
        this_batch = batch if repeat == 0 else source.redraw(batch)
        for system in systems:
            untimed_collect()
            runs[system.name].append(system.generate_batch(this_batch))
    result = {name: batch_summary(r, batch) for name, r in runs.items()}
    return {
        "batch_size": sizes.batch_size,
        "prompt_tokens_range": list(sizes.batch_prompt_tokens),
        "max_tokens_range": list(sizes.batch_max_tokens),
        "prompt_tokens": batch.num_prompt_tokens,
        "useful_tokens": batch.num_useful_tokens,
        **result,
        "useful_tok_s_ratio": result["triserve"]["useful_tok_s"]
        / result["transformers"]["useful_tok_s"],
    }


def bench_image_ttft(systems, source: PromptSource, sizes: BenchSizes, num_image_tokens) -> dict:
    for system in systems:  # warm-up
        system.image_ttft(source.image(sizes.image_size))
    samples = {system.name: [] for system in systems}
    for _ in range(sizes.ttft_repeats):
        image = source.image(sizes.image_size)
        for system in systems:
            untimed_collect()
            samples[system.name].append(system.image_ttft(image) * 1e3)
    result = {
        name: {"median_ms": statistics.median(ms), "samples_ms": ms} for name, ms in samples.items()
    }
    return {"image_size": list(sizes.image_size), "image_tokens": num_image_tokens, **result}


def run_benchmark(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    sizes = BenchSizes.quick() if args.quick else BenchSizes()
    device = torch.device(args.device)
    model_dir = ensure_model(args.preset)
    model_config = ModelConfig.from_pretrained(model_dir)
    source = PromptSource(load_tokenizer(model_dir), model_config.image_token_index, seed=args.seed)
    mixed_batch = source.mixed_batch(sizes)
    peak_tokens = [
        len(p) + m for p, m in zip(mixed_batch.prompts, mixed_batch.max_tokens, strict=True)
    ]
    log(f"loading {args.preset} from {model_dir} on {device} ({args.dtype})")
    triserve = TriserveRunner(model_dir, args.device, args.dtype, peak_tokens)
    hf = HFRunner(model_dir, args.device, args.dtype)
    systems = [triserve, hf]
    if args.backend == "vllm":
        vllm = TriserveRunner(model_dir, args.device, args.dtype, peak_tokens, backend="vllm")
        systems.insert(1, vllm)

    with collector_paused():
        bandwidth = measure_copy_bandwidth(device)
        log(f"copy bandwidth {bandwidth.bytes_per_s / 1e9:.1f} GB/s")
        single = bench_single(systems, source, sizes)
        log("batch 1 done")
        batch = bench_batch(systems, source, sizes, mixed_batch)
        log(f"batch {sizes.batch_size} done")
        image_ttft = bench_image_ttft(systems, source, sizes, model_config.num_image_tokens)
        log("image TTFT done")
        grammar_sizes = GrammarSizes.quick() if args.quick else GrammarSizes()
        prompts = [source.prompt(grammar_sizes.prompt_tokens)] * grammar_sizes.batch_size
        grammar = bench_grammar(triserve.engine, prompts, grammar_sizes)
        log(f"grammar overhead {grammar['slowdown']:+.1%} per decode step")

    step_bytes = decode_bytes(triserve.engine.model)
    floor = {
        "weight_bytes": step_bytes.weight_bytes,
        "embedding_bytes_not_counted": step_bytes.embedding_bytes,
        "kv_bytes_per_token": step_bytes.kv_bytes_per_token,
    }
    for name in ("triserve", "transformers"):
        s = single[name]
        floor[f"single_{name}"] = floor_report(
            s["ms_per_step"] / 1e3, s["mean_kv_tokens"], step_bytes, bandwidth
        )
        b = batch[name]
        if b["decode_ms_per_step"] is not None:
            floor[f"batch_{name}"] = {
                **floor_report(
                    b["decode_ms_per_step"] / 1e3, b["decode_mean_kv_tokens"], step_bytes, bandwidth
                ),
                "mean_batch": b["decode_mean_batch"],
            }
    return {
        "machine": describe_machine(device),
        "config": {
            "preset": args.preset,
            "device": args.device,
            "dtype": args.dtype,
            "quick": args.quick,
            "seed": args.seed,
            "sizes": asdict(sizes),
            "backend": args.backend,
            "systems": [system.name for system in systems],
            "engine": asdict(triserve.config),
            "engine_stats": triserve.stats(),
        },
        "bandwidth": bandwidth_report(bandwidth),
        "single": single,
        "batch": batch,
        "image_ttft": image_ttft,
        "grammar": grammar,
        "floor": floor,
        "runtime_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> dict:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    args = parse_args(argv)
    results = run_benchmark(args)
    output.publish("bench.engine", results, markdown_report(results), args.json)
    return results
