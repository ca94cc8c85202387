#!/usr/bin/env bash
# Benchmark a running `triserve serve` with NVIDIA AIPerf, a standard OpenAI-API benchmark
# client that Triserve does not ship (the successor of genai-perf).
#
# What it does: three `aiperf profile` runs against the OpenAI chat endpoint
# (/v1/chat/completions), streamed, with synthetic prompts (~128 input tokens, 64 output tokens
# forced with `ignore_eos`, which Triserve accepts as an extra body field):
#   chat_c4        text only, concurrency 4, 150 requests
#   chat_c1        text only, concurrency 1, 100 requests
#   chat_image_c4  text + one synthetic 64x64 PNG per request (an image_url data: URL),
#                  concurrency 4, 100 requests
# Each run sends 8 warm-up requests first (prefixed with "[warmup]" so that they do not fill the
# prefix cache for the measured requests) and uses its own random seed, so the runs' prompts do
# not overlap. Token counts come from the server's `usage` (stream_options.include_usage).
# Results land in $OUT_DIR/<run>/ (profile_export_aiperf.{json,csv} is the summary).
#
# It expects a running server, e.g. from the repository root:
#   RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 .venv/bin/triserve serve --preset tiny \
#       --http-port 8000 --port 50051 > /tmp/triserve-serve.log 2>&1 &
#   (wait until `curl -s localhost:8000/health` answers 200 and /v1/models lists "tiny")
# Rerunning against the same server process reuses its prefix cache (same seeds, same prompts):
# restart the server, or change SEED, for cold numbers.
#
# AIPerf is not a dependency of Triserve: install it into its own venv, never into .venv, e.g.
#   python3 -m venv /tmp/aiperf-venv && /tmp/aiperf-venv/bin/pip install aiperf==0.13.0
# and point AIPERF at it (default /tmp/aiperf-venv/bin/aiperf). The tokenizer is the served
# model's local checkpoint directory (TOKENIZER); the model name is what /v1/models reports.
# Worker counts are pinned to 1 because the reference machine has 2 cores shared with the server.
#
# Usage: bench/openai_client/aiperf.sh [run ...]     (default: chat_c4 chat_c1 chat_image_c4)
set -euo pipefail

AIPERF="${AIPERF:-/tmp/aiperf-venv/bin/aiperf}"
URL="${URL:-http://localhost:8000}"
MODEL="${MODEL:-tiny}"
TOKENIZER="${TOKENIZER:-$HOME/.cache/triserve/models/tiny-v2}"
OUT_DIR="${OUT_DIR:-/tmp/aiperf-artifacts}"
SEED="${SEED:-42}"
ISL="${ISL:-128}"
OSL="${OSL:-64}"

curl -sf "$URL/health" > /dev/null || { echo "no server answering at $URL/health" >&2; exit 1; }

common=(
    --model "$MODEL" --tokenizer "$TOKENIZER" --url "$URL"
    --endpoint-type chat --streaming --use-server-token-count
    --extra-inputs ignore_eos:true
    --isl "$ISL" --isl-stddev 0 --osl "$OSL" --osl-stddev 0
    --warmup-request-count 8 --cache-bust warmup-isolation-first-turn
    --max-workers 1 --record-processors 1
    --no-server-metrics --no-gpu-telemetry --ui none
)

run() {
    local name="$1"; shift
    echo "== $name: $AIPERF profile ${common[*]} $*"
    "$AIPERF" profile "${common[@]}" "$@" --artifact-dir "$OUT_DIR/$name"
}

runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(chat_c4 chat_c1 chat_image_c4)
for name in "${runs[@]}"; do
    case "$name" in
        chat_c4) run chat_c4 --concurrency 4 --request-count 150 --random-seed "$SEED" ;;
        chat_c1) run chat_c1 --concurrency 1 --request-count 100 --random-seed $((SEED + 1)) ;;
        chat_image_c4)
            run chat_image_c4 --concurrency 4 --request-count 100 --random-seed $((SEED + 2)) \
                --image-batch-size 1 --image-width-mean 64 --image-height-mean 64 \
                --image-format png ;;
        *) echo "unknown run: $name (chat_c4, chat_c1, chat_image_c4)" >&2; exit 2 ;;
    esac
done
