# One budgeted, timed, logged step, shared by bench/gpu_check.sh and bench/gpu_distill.sh (sourced, not run).
#
# timed_step NAME LIMIT_S MIN_S COMMAND...: runs COMMAND under `timeout`, its limit cut to what is left of
# $BUDGET seconds since $START (not run at all when less than MIN_S is left), tees its output to $LOG, sets
# STEP_LINE to "NAME: exit RC in T s" (or why it did not run), and returns non-zero when the step failed or did
# not run.
timed_step() {
  local name=$1 limit=$2 min=$3 left rc t0
  shift 3
  left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt "$limit" ]; then limit=$left; fi
  if [ "$limit" -lt "$min" ]; then
    STEP_LINE="$name: not run (the ${BUDGET} s budget is spent)"
    echo "=== $STEP_LINE" | tee -a "$LOG"
    return 1
  fi
  echo "=== $name (limit ${limit} s)" | tee -a "$LOG"
  t0=$(date +%s.%N)
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  STEP_LINE=$(awk -v n="$name" -v rc="$rc" -v a="$t0" -v b="$(date +%s.%N)" \
    'BEGIN { printf "%s: exit %d in %.1f s%s", n, rc, b - a, (rc == 124 || rc == 137) ? " (time limit)" : "" }')
  echo "=== $STEP_LINE" | tee -a "$LOG"
  [ "$rc" -eq 0 ]
}

# device_step DEVICE: the first step of a GPU script (the caller's `step`, with $PY): print the GPU and check that
# PyTorch sees DEVICE, so that a call without one stops before any other step spends its minutes.
device_step() {
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  step "torch sees $1" 60 "$PY" -c "import sys, torch; d = torch.device('$1')
ok = torch.cuda.is_available() and (d.index or 0) < torch.cuda.device_count()
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(d) if ok else 'NO CUDA DEVICE')
sys.exit(0 if ok else 1)"
}
