#!/usr/bin/env bash
# Everything a lent GPU can tell us, in one call of the device tool (DESIGN.md section 6):
#   the CUDA-marked tests (FP16 against float32 by PSNR, CUDA graphs), generator throughput for fp32 and fp16,
#   the projector's step cost, and every engine's images/s (torch fp32/fp16/graphs, ONNX Runtime).
# Runs with the machine's own python3 and PyTorch (the .venv of the CPU machines does not work there).
# Results go to bench/results/ and, when the device tool sets $OUT, are copied there to come back.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
$PY -m pytest -q -p no:cacheprovider -m gpu tests || status=1
$PY bench/run.py --model ffhq-1024 --device cuda --batch 1,8,32 --precision fp32,fp16 --iters 10 || status=1
$PY bench/run.py --model ffhq-256 --device cuda --batch 1,8,32 --precision fp32,fp16 --iters 10 || status=1
$PY bench/embed.py --model ffhq-1024 --device cuda --batch 1,8 --amp both --steps 5 || status=1
$PY bench/embed.py --model ffhq-256 --device cuda --batch 1,8 --amp both --steps 5 || status=1
$PY bench/engines.py --model ffhq-1024 --batch 1,8,32 --iters 20 || status=1
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT/results" && cp bench/results/* "$OUT/results/" 2>/dev/null; fi
exit $status
