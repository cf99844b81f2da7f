#!/usr/bin/env bash
# The GPU run of the real-model control (benchmarks/real_control.py at millions of tokens per arm) and of
# benchmarks/train_mfu.py, in two calls of the device tool made back to back (docs/benchmarks.md gives them).
# Prepare first, here: `.venv/bin/python benchmarks/gpu/transport.py prepare` writes runs/gpu/{part1,part2,bundle}.
#
#   bash benchmarks/gpu/run.sh stage runs/gpu/part1   call 1: stage part 1 in $STAGE, then measure MFU
#   bash benchmarks/gpu/run.sh control runs/gpu/part2 call 2 (within 30 s): stage part 2, assemble, verify, control
#
# Everything it reports goes to $OUT as JSON (transport.json, train_mfu.json, real_control.json, control/) with the
# logs. The sizes are the environment's CONTROL_ARGS and MFU_ARGS (the tests' CPU dry run makes them tiny).
set -uo pipefail
cd "$(dirname "$0")/../.."
STAGE=${STAGE:-/tmp/alignmix-gpu}
BUNDLE=$(cd "${BUNDLE:-runs/gpu/bundle}" && pwd) || { echo "error: no bundle: run transport.py prepare first" >&2; exit 2; }
OUT=${OUT:?set OUT to the folder whose files come back}
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
CONTROL_ARGS=${CONTROL_ARGS:---items 600 --formats 8 --tokens 2000000 --seq-len 512 --batch 32 --micro-batch 32 --lr 2e-4 --lora-r 32 --lora-layers 0 --seeds 0 1 --score-batch 128 --deadline-s 240}
MFU_ARGS=${MFU_ARGS:---model pythia-160m --micro-batch 16 --seq-len 2048 --steps 20 --warmup 4}
export PYTHONPATH="$BUNDLE/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$STAGE" "$OUT"

last_json() { tail -n 1 "$1" > "$2"; }

stage_part() {  # copy one part of the GGUF into $STAGE
  local part=${1:?name the part folder}
  cp "$part"/* "$STAGE"/ && ls -l "$STAGE" | tee -a "$OUT/stage.log"
}

case "${1:-}" in
  stage)
    stage_part "${2:-runs/gpu/part1}" || exit 2
    peak=()
    if command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
      peak=(--peak-tflops 989)  # Lightning 2.6.6 does not know the name "NVIDIA H200" (docs/benchmarks.md)
    fi
    # shellcheck disable=SC2086
    $PYTHON benchmarks/train_mfu.py $MFU_ARGS "${peak[@]}" 2>&1 | tee "$OUT/train_mfu.log"
    status=${PIPESTATUS[0]}
    last_json "$OUT/train_mfu.log" "$OUT/train_mfu.json"
    exit "$status"
    ;;
  control)
    stage_part "${2:-runs/gpu/part2}" || exit 2
    $PYTHON benchmarks/gpu/transport.py assemble --manifest "$BUNDLE/manifest.json" --folder "$STAGE" \
      2>&1 | tee "$OUT/assemble.log"
    [ "${PIPESTATUS[0]}" = 0 ] || exit 2
    gguf=$($PYTHON -c "import json, sys; print(json.load(open(sys.argv[1]))['name'])" "$BUNDLE/manifest.json")
    $PYTHON benchmarks/gpu/transport.py load --gguf "$STAGE/$gguf" --tokenizer "$BUNDLE/tokenizer" \
      --reference "$BUNDLE/reference.json" --out "$STAGE/base-hf" 2>&1 | tee "$OUT/transport.log"
    [ "${PIPESTATUS[0]}" = 0 ] || exit 2
    last_json "$OUT/transport.log" "$OUT/transport.json"
    # shellcheck disable=SC2086
    $PYTHON benchmarks/real_control.py --model "$STAGE/base-hf" --scenarios "$BUNDLE/scenarios.jsonl" \
      --out "$OUT/control" $CONTROL_ARGS 2>&1 | tee "$OUT/real_control.log"
    status=${PIPESTATUS[0]}
    last_json "$OUT/real_control.log" "$OUT/real_control.json"
    exit "$status"
    ;;
  *)
    echo "usage: bash benchmarks/gpu/run.sh stage PART1_DIR | control PART2_DIR" >&2
    exit 2
    ;;
esac
