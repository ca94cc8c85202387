"""The engine benchmark's results as markdown tables (the JSON holds every number)."""

from __future__ import annotations

from bench.common.output import table_row

NAMES = {"triserve": "Triserve", "vllm": "vLLM", "transformers": "transformers"}


def _num(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _comparison_row(workload: str, metric: str, values: tuple, higher_is_better: bool, digits=1):
    """Each system's value, then each engine's speedup over transformers (the last value)."""
    *engines, hf = values
    speedups = [e / hf if higher_is_better else hf / e for e in engines]
    cells = [_num(v, digits) for v in values] + [f"{x:.2f}x" for x in speedups]
    return table_row([workload, metric, *cells])


def comparison_table(results: dict) -> list[str]:
    single, batch, image = results["single"], results["batch"], results["image_ttft"]
    systems = results["config"].get("systems", ["triserve", "transformers"])
    engines = systems[:-1]

    def pair(section: dict, key: str) -> tuple:
        return tuple(section[name][key] for name in systems)

    one = f"batch 1 ({single['prompt_tokens']}-token prompt, {single['new_tokens']} new)"
    many = (
        f"batch {batch['batch_size']} mixed (prompts {batch['prompt_tokens_range']}, "
        f"max_tokens {batch['max_tokens_range']})"
    )
    img = f"1 image ({image['image_tokens']} image tokens)"
    lines = [
        table_row(
            ["Workload", "Metric", *(NAMES[n] for n in systems)]
            + [f"{NAMES[n]} speedup" for n in engines]
        ),
        table_row(["---", "---"] + ["---:"] * (2 * len(systems) - 1)),
        _comparison_row(one, "decode tok/s (after 1st token)", pair(single, "decode_tok_s"), True),
        _comparison_row(one, "ms per decode step", pair(single, "ms_per_step"), False, 2),
        _comparison_row(one, "TTFT, text prompt (ms)", pair(single, "ttft_ms"), False),
        _comparison_row(many, "useful tok/s", pair(batch, "useful_tok_s"), True),
        _comparison_row(many, "wall time (s)", pair(batch, "wall_s"), False, 2),
        _comparison_row(img, "TTFT median (ms)", pair(image, "median_ms"), False),
    ]
    return lines


def floor_table(results: dict) -> list[str]:
    floor = results["floor"]
    lines = [
        table_row(
            ["Decode step", "measured ms", "floor ms", "MB read", "KV tokens", "measured/floor"]
        ),
        table_row(["---", "---:", "---:", "---:", "---:", "---:"]),
    ]
    for key, label in (
        ("single_triserve", "batch 1, Triserve"),
        ("single_transformers", "batch 1, transformers"),
        ("batch_triserve", "mixed batch, Triserve pure-decode steps"),
        ("batch_transformers", "mixed batch, transformers (padded)"),
    ):
        if key not in floor:
            continue
        f = floor[key]
        if "mean_batch" in f:
            label += f" (mean batch {f['mean_batch']:.1f})"
        lines.append(
            table_row(
                [
                    label,
                    _num(f["measured_ms_per_step"], 2),
                    _num(f["floor_ms_per_step"], 2),
                    _num(f["bytes_per_step"] / 1e6),
                    _num(f["kv_tokens"], 0),
                    f"{f['measured_over_floor']:.2f}",
                ]
            )
        )
    return lines


def grammar_lines(grammar: dict) -> list[str]:
    return [
        "### Constrained decoding",
        "",
        f"Decode step at batch {grammar['batch_size']} ({grammar['prompt_tokens']}-token "
        f"prompts, {grammar['new_tokens']} new tokens, seeded sampling): "
        f"{grammar['free_ms_per_step']:.2f} ms free, {grammar['grammar_ms_per_step']:.2f} ms "
        f"under a JSON tool-call grammar (llguidance mask each step): "
        f"**{grammar['slowdown']:+.1%}** (median of {grammar['num_steps']['grammar']} steps; "
        "the target is under +10 %).",
    ]


def markdown_report(results: dict) -> str:
    machine, config, batch = results["machine"], results["config"], results["batch"]
    bandwidth, floor = results["bandwidth"], results["floor"]
    hf = batch["transformers"]
    device = machine["gpu_name"] or machine["cpu_model"]
    lines = [
        f"## Engine benchmark: preset {config['preset']}, {config['device']}, {config['dtype']}",
        "",
        f"{device}; {machine['num_cpus']} CPUs; torch {machine['torch']}, "
        f"transformers {machine['transformers']}"
        + (f", vLLM {machine['vllm']}" if machine.get("vllm") else "")
        + ". Greedy, EOS ignored by every system; vLLM runs in-process through Triserve's "
        "engine interface (workers/vllm/), 32-token KV blocks.",
        "",
        *comparison_table(results),
        "",
        f"Mixed batch: Triserve adds all {batch['batch_size']} requests and steps until done "
        f"(continuous batching). transformers runs them as one left-padded batch to the largest "
        f"max_tokens; only each request's own max_tokens count as useful "
        f"({batch['useful_tokens']} useful of {hf['generated_tokens']} generated, "
        f"{hf['generated_tok_s']:,.1f} tok/s counting all). "
        f"Greedy tokens match across systems at batch 1: "
        f"{results['single']['greedy_tokens_match']}.",
        "",
        f"### Memory-bandwidth floor ({bandwidth['gb_per_s']:.1f} GB/s measured, "
        f"median copy {bandwidth['median_gb_per_s']:.1f} GB/s)",
        "",
        *floor_table(results),
        "",
        f"Floor = (weights {floor['weight_bytes'] / 1e6:,.1f} MB + KV tokens x "
        f"{floor['kv_bytes_per_token']:,} B) / bandwidth. Weights: decoder layers, final norm and "
        f"lm_head; the input embedding table ({floor['embedding_bytes_not_counted'] / 1e6:,.1f} "
        "MB) is left out because a step gathers one row of it per sequence. Bandwidth: "
        f"{bandwidth['definition']} of {bandwidth['num_repeats']} copies of "
        f"{bandwidth['copy_bytes'] / 2**20:,.0f} MiB.",
        "",
        *grammar_lines(results["grammar"]),
        "",
        f"Runtime {results['runtime_s']:.1f} s.",
    ]
    return "\n".join(lines)
