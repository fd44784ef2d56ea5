#!/usr/bin/env bash
# Everything a lent GPU can tell us, in one call of the device tool (DESIGN.md section 6):
#   the CUDA-marked tests (FP16 against float32 by PSNR, CUDA graphs, 8 streams on one engine at 1024²), the CUDA
#   plan against the reference engine (bench/cuda_plan.py: rows, PSNR, top kernels), live streams per GPU at 1024²
#   and 30 fps (bench/serve.py), generator throughput for fp32 and fp16,
#   the runtime (offline stream vs engine alone; a 60 fps realtime stream's latencies), cpp_ext's CUDA kernels
#   (built, tested against their references, and timed against the copy bandwidth), the projector's step cost, and every engine's images/s on the GPU (torch fp32/fp16/graphs, ONNX Runtime CUDA
#   where onnxruntime-gpu is installed). GPU rows only: no CPU benchmark runs inside the device call.
#
#   bash bench/gpu_check.sh                                      # on the GPU: about 5 minutes, never more than
#                                                                # STYLEMOTION_GPU_CHECK_BUDGET (540) seconds
#   STYLEMOTION_GPU_CHECK_DEVICE=cpu bash bench/gpu_check.sh     # dry run: the same steps on a tiny model
#                                                                # (tiny-32) on the CPU, in about a minute
#
# Environment: PYTHON (default: python3 on a GPU, whose own python and PyTorch are used there since the .venv of
# the CPU machines does not work on it; .venv/bin/python in a dry run when `make test` has made it); STYLEMOTION_GPU_CHECK_DEVICE (cuda, cuda:N or cpu; default cuda);
# STYLEMOTION_GPU_CHECK_BUDGET (seconds for all steps; each step is stopped at what is left);
# STYLEMOTION_GPU_CHECK_ONLY (comma-separated first words of the steps to run, e.g. "torch,cpp_ext,pytest,cuda";
# the others are listed as skipped: for a short call);
# STYLEMOTION_GPU_CHECK_RESULTS (where the results go: default bench/results/ on a GPU, a temporary folder in a
# dry run, so that dry-run figures never land in the committed results).
# Each step prints its exit status and wall time; a summary and the whole log are written beside the results,
# and, when the device tool sets $OUT, the results are archived to $OUT/results.tgz after every step (a cut-off
# call still returns what was done). Exits 1 when any step failed, 2 on a bad setting.
set -uo pipefail
if [ -n "${STYLEMOTION_GPU_CHECK_RESULTS:-}" ]; then  # relative to where the script was started from
  case "$STYLEMOTION_GPU_CHECK_RESULTS" in
    /*) ;;
    *) STYLEMOTION_GPU_CHECK_RESULTS="$PWD/$STYLEMOTION_GPU_CHECK_RESULTS";;
  esac
fi
cd "$(dirname "$0")/.."
. bench/steps.sh
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DEVICE=${STYLEMOTION_GPU_CHECK_DEVICE:-cuda}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ "$DEVICE" = cpu ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python  # the CPU machines' venv (make test)
else PY=python3
fi
BUDGET=${STYLEMOTION_GPU_CHECK_BUDGET:-540}
case "$BUDGET" in
  ''|*[!0-9]*) echo "STYLEMOTION_GPU_CHECK_BUDGET must be whole seconds, got '$BUDGET'" >&2; exit 2;;
esac

case "$DEVICE" in
  cuda|cuda:[0-9]*)
    DEST=${STYLEMOTION_GPU_CHECK_RESULTS:-bench/results}
    BIG=ffhq-1024; SMALL=ffhq-256
    # bench/run.py's GPU rows (torch fp32 baseline, fp16, fp16 + CUDA graphs, ORT CUDA / TensorRT where installed);
    # the runtime end to end is the stream step's.
    RUN_ARGS=(--batch 1,8,32 --precision fp32,fp16 --iters 10 --min-seconds 1 --no-runtime)
    EMBED_ARGS=(--batch 1,8 --amp both --steps 5)
    SEQ_ARGS=(--frames 8)
    ENGINE_ARGS=(--batch 1,8,32 --iters 10)
    # The runtime: offline stream vs engine alone at batch 1..16, and a 60 fps realtime stream (p99 <= 16.7 ms?)
    STREAM_ARGS=(--batch 1,4,8,16 --frames 64 --iters 10 --fps 60 --seconds 8)
    OPS_ARGS=()
    # Live streams per GPU: 1024², 30 fps, 4..16 streams on one engine (the hub, CUDA graphs per bucket).
    SERVE_ARGS=(--model "$BIG" --fps 30 --streams 4,8,12,16,20,24 --seconds 5)
    # The CUDA plan against the reference engine: 1024² at 1/8/32, 256² at 1/32, PSNR, top kernels.
    PLAN_ARGS=()
    ;;
  cpu)
    DEST=${STYLEMOTION_GPU_CHECK_RESULTS:-}
    BIG=tiny-32; SMALL=tiny-32
    # One thread: a dry run's figures mean nothing, and a busy 2-core machine makes a thread pool crawl.
    export OMP_NUM_THREADS=1
    RUN_ARGS=(--batch 1,2 --precision fp32,fp16 --iters 1 --warmup 1 --threads 1 --min-seconds 0 --no-runtime
              --backend torch,tensorrt)
    EMBED_ARGS=(--batch 1,2 --amp both --steps 1 --threads 1)
    SEQ_ARGS=(--frames 2 --max-steps 5)
    ENGINE_ARGS=(--batch 1,2 --iters 1 --threads 1)
    STREAM_ARGS=(--batch 1,2 --iters 1 --fps 12 --seconds 1 --threads 1)
    OPS_ARGS=(--no-compile --only 64 --threads 1)
    SERVE_ARGS=(--model "$BIG" --fps 12 --streams 1,2 --seconds 1)
    PLAN_ARGS=(--model "$BIG" --min-seconds 0 --max-iters 2)
    ;;
  *) echo "STYLEMOTION_GPU_CHECK_DEVICE must be cuda, cuda:N or cpu, got '$DEVICE'" >&2; exit 2;;
esac

RUN=$(mktemp -d "${TMPDIR:-/tmp}/stylemotion-gpu-check.XXXXXX") || exit 2
LOG="$RUN/gpu_check-${DEVICE//:/}-$(date -u +%Y-%m-%d).log"
SUMMARY="$RUN/gpu_check-${DEVICE//:/}-$(date -u +%Y-%m-%d).txt"
START=$SECONDS
status=0
summary=()

publish() {  # copy this run's files (and only them) to the results folder, and to $OUT as one archive (the device
  # tool brings back at most 8 files) beside the summary and the log, replaced after every step
  if [ -n "$DEST" ]; then mkdir -p "$DEST" && cp "$RUN"/* "$DEST"/ 2>/dev/null; fi
  if [ -n "${OUT:-}" ]; then
    tar -czf "$OUT/.results.tgz.partial" -C "$RUN" . 2>/dev/null && mv -f "$OUT/.results.tgz.partial" "$OUT/results.tgz"
    cp "$SUMMARY" "$LOG" "$OUT"/ 2>/dev/null
  fi
  return 0
}

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit (cut to the budget left), log, time, record
  local name=$1 limit=$2
  shift 2
  if [ -n "${STYLEMOTION_GPU_CHECK_ONLY:-}" ] && [[ ",$STYLEMOTION_GPU_CHECK_ONLY," != *",${name%% *},"* ]]; then
    STEP_LINE="$name: skipped (not in STYLEMOTION_GPU_CHECK_ONLY)"
    echo "=== $STEP_LINE" | tee -a "$LOG"
  else
    timed_step "$name" "$limit" 5 "$@" || status=1
  fi
  summary+=("$STEP_LINE")
  printf '%s\n' "device $DEVICE, python $PY" "${summary[@]}" > "$SUMMARY"
  publish
}

echo "gpu_check on $DEVICE: results of this run in $RUN${DEST:+, copied to $DEST}" | tee -a "$LOG"
if [ "$DEVICE" != cpu ]; then
  device_step "$DEVICE"  # no device, no point: stop before any step spends the call's minutes
else
  step "torch on the cpu" 60 "$PY" -c "import torch
print('torch', torch.__version__, 'cpu', torch.get_num_threads(), 'threads')"
fi
if [ "$status" -ne 0 ]; then
  echo "gpu_check: $DEVICE is not usable here with $PY (no PyTorch, or no such device: set PYTHON, or run" \
    "\`make test\` to create .venv); nothing else was run" >&2
  exit 1
fi
# cpp_ext first (the CUDA kernels when PyTorch sees the GPU), so the CUDA op tests below run the kernels.
step "cpp_ext build" 240 "$PY" -m stylemotion.extension build
step "pytest -m gpu" 240 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests
step "cuda plan" 180 "$PY" bench/cuda_plan.py --device "$DEVICE" "${PLAN_ARGS[@]}" --out "$RUN"
step "serve $BIG" 120 "$PY" bench/serve.py --device "$DEVICE" "${SERVE_ARGS[@]}" --out "$RUN"
step "generator $BIG" 120 "$PY" bench/run.py --model "$BIG" --device "$DEVICE" "${RUN_ARGS[@]}" --tag "$BIG" --out "$RUN"
step "stream $BIG" 120 "$PY" bench/stream.py --model "$BIG" --device "$DEVICE" "${STREAM_ARGS[@]}" --out "$RUN"
step "ops" 90 "$PY" bench/ops.py --device "$DEVICE" "${OPS_ARGS[@]}" --out "$RUN"
step "engines $BIG" 180 "$PY" bench/engines.py --model "$BIG" --device "$DEVICE" "${ENGINE_ARGS[@]}" --out "$RUN"
step "projector $BIG" 150 "$PY" bench/embed.py --model "$BIG" --device "$DEVICE" "${EMBED_ARGS[@]}" "${SEQ_ARGS[@]}" \
  --out "$RUN"
step "generator $SMALL" 90 "$PY" bench/run.py --model "$SMALL" --device "$DEVICE" "${RUN_ARGS[@]}" --tag "$SMALL" --out "$RUN"
step "projector $SMALL" 90 "$PY" bench/embed.py --model "$SMALL" --device "$DEVICE" "${EMBED_ARGS[@]}" --frames 0 \
  --out "$RUN"

echo "=== gpu_check on $DEVICE: $([ "$status" -eq 0 ] && echo passed || echo FAILED) in $((SECONDS - START)) s" \
  | tee -a "$LOG"
printf '  %s\n' "${summary[@]}"
echo "results: ${DEST:-$RUN}"
publish
exit $status
