# hiergen: `make demo` sets up and runs the main job, `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hiergen-installed
PROMPT ?= a large red circle moves right then up quickly

.PHONY: setup demo test test-fast clib model motion motion-stop motion-save motion-report ship backbone baseline ablations eval eval-baseline bench precision precision-bench precision-eval clean help

help:
	@echo "make setup   create $(VENV) with hiergen[train,dev] (CPU torch 2.13.0 unless a GPU is present)"
	@echo "make demo    set up, then generate PROMPT with the shipped model: out/demo.mp4, .gif, .png"
	@echo "make test    set up, then run the test suite"
	@echo "make model   retrain the default model from scratch: data, tokenizer, tokens, transformers"
	@echo "make motion  start or continue the video models' long run (resumes where it stopped)"
	@echo "make eval    score 200 held-out prompts: hierarchical, the ablations (docs/eval/generated.*), then make eval-baseline"
	@echo "make eval-baseline  the frame-by-frame baseline against the hierarchical videos (docs/eval/baseline.*)"
	@echo "make bench   time ONNX Runtime against the PyTorch reference (docs/bench/cpu.*)"
	@echo "make precision-eval  quantise the shipped model (fp16, int8-cpu, int8-qdq) and measure each against fp32:"
	@echo "             speed and size (bench), top-1 agreement, 200 held-out prompts (docs/precision/*)"
	@echo "make clib    build libhiergen, the C library, with CMake in build/clib (docs/embedding.md)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
	  echo "GPU found: installing CUDA torch and onnxruntime-gpu"; \
	  $(BIN)/pip install -q torch==2.13.0 && $(BIN)/pip install -q -e '.[train,gpu,dev]'; \
	else \
	  echo "no GPU: installing the CPU build of torch 2.13.0"; \
	  ( $(BIN)/pip install -q 'torch==2.13.0+cpu' 2>/dev/null || $(BIN)/pip install -q torch==2.13.0 ) && \
	  $(BIN)/pip install -q -e '.[train,dev]'; \
	fi
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p out
	$(BIN)/hiergen generate $(PROMPT) -o out/demo.mp4 --gif --sheet

# libhiergen, the C library (docs/embedding.md): ONNX Runtime for it (scripts/get-onnxruntime.sh), then CMake in
# build/clib. `make test` builds it first; where cmake or a C++ compiler is missing its tests are skipped.
clib: $(STAMP)
	@if command -v cmake >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1; then \
	  $(BIN)/python -m hiergen.tools.clib build; \
	else echo "warning: cmake or a C++ compiler is missing: libhiergen is not built and its tests are skipped"; fi

test: $(STAMP) clib
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The default model's recipe, end to end; each step resumes after a kill. The tokenizer and the backbone train
# on 4,000 clips (about 40 min on 2 CPU cores); the video models are the long run below (`make motion`).
model: $(STAMP)
	test -d data/synth || $(BIN)/hiergen synth --n 4000 --out data/synth
	$(BIN)/hiergen train vqvae --out checkpoints/vqvae --threads 1
	$(BIN)/hiergen tokenize --data data/synth --vqvae checkpoints/vqvae/final.safetensors --out data/tokens --jobs 2
	$(BIN)/hiergen train t2i --tokens data/tokens --out checkpoints/transformer --threads 1
	$(MAKE) motion
	$(MAKE) backbone
	$(MAKE) ship

# The backbone trained further on the first frames of the keyframe model's 20,000 clips (22 min on a core): frame 1
# from the first backbone cost the videos 13 points of motion. The video models train whole and do not depend on it.
backbone: $(STAMP)
	$(KEYFRAMES20K)
	$(BIN)/hiergen train t2i --tokens data/keyframes20k --init checkpoints/transformer/t2i.safetensors --out runs/t2i \
	  --lr 1e-3 --steps 4000 --threads 1
	cp runs/t2i/t2i.safetensors runs/t2i/t2i.history.json checkpoints/transformer/

# The video models' long run (docs/training.md, "Learning motion"): keyframe and interp side by side, one thread
# each, every weight training from the backbone (the keyframe model on the keyframes of 20,000 clips, the
# interpolation model on 8,000 whole clips); a resume point every 5 minutes and a motion
# probe every 250 steps, in runs/motion (not committed; logs there too). It takes several sessions: `make
# motion-save` copies the resume points into checkpoints/motion (commit them), and `make motion` on a fresh clone
# continues from there (the keyframe model as soon as its 20,000 keyframes are tokenized, the interpolation
# model once the 8,000 whole clips are).
RUN := runs/motion
KEYFRAMES20K := test -f data/keyframes20k/tokens.json || { \
	  { test -d data/synth20k || $(BIN)/hiergen synth --n 20000 --out data/synth20k; } && \
	  $(BIN)/hiergen tokenize --data data/synth20k --vqvae checkpoints/vqvae/final.safetensors \
	    --out data/keyframes20k --jobs 2 --keyframes-only; }
TOKENS8K := test -f data/tokens8k/tokens.json || { \
	  { test -d data/synth8k || $(BIN)/hiergen synth --n 8000 --out data/synth8k; } && \
	  $(BIN)/hiergen tokenize --data data/synth8k --vqvae checkpoints/vqvae/final.safetensors \
	    --out data/tokens8k --jobs 2; }

motion: $(STAMP)
	mkdir -p $(RUN)
	for k in keyframe interp; do \
	  test -f $(RUN)/$$k.last.safetensors || for p in last stable; do \
	    ! test -f checkpoints/motion/$$k.$$p.safetensors || \
	      { cp checkpoints/motion/$$k.$$p.safetensors $(RUN)/$$k.last.safetensors; break; }; \
	  done; \
	done
	$(KEYFRAMES20K)
	$(BIN)/hiergen train keyframe --tokens data/keyframes20k --out $(RUN) --backbone checkpoints/transformer/t2i.safetensors \
	  --threads 1 $(if $(KEYFRAME_STEPS),--steps $(KEYFRAME_STEPS)) >> $(RUN)/keyframe.log 2>&1 & k=$$!; \
	{ $(TOKENS8K); } && \
	$(BIN)/hiergen train interp --tokens data/tokens8k --out $(RUN) --backbone checkpoints/transformer/t2i.safetensors \
	  --threads 1 $(if $(INTERP_STEPS),--steps $(INTERP_STEPS)) >> $(RUN)/interp.log 2>&1 & i=$$!; \
	wait $$k && wait $$i

# Stop the long run gracefully: each model finishes its step and writes a resume point (SIGTERM).
motion-stop:
	-pkill -TERM -f "hiergen train (keyframe|interp) .*--out runs/"
	while pgrep -f "hiergen train (keyframe|interp) .*--out runs/" >/dev/null; do sleep 1; done

# The run's latest resume points (weights, optimiser state, history with the probes), to commit.
# A run that has decayed keeps only its stable-phase resume point (KIND.stable), the one a later session extends.
motion-save:
	mkdir -p checkpoints/motion
	for k in keyframe interp; do \
	  if test -f $(RUN)/$$k.stable.safetensors; then cp $(RUN)/$$k.stable.safetensors checkpoints/motion/; \
	    rm -f checkpoints/motion/$$k.last.safetensors; \
	  else cp $(RUN)/$$k.last.safetensors checkpoints/motion/; fi; \
	done
	! test -f runs/baseline/keyframe.last.safetensors || \
	  cp runs/baseline/keyframe.last.safetensors checkpoints/motion/baseline.last.safetensors

# Ship the long run's finished video models: their final weights (no optimiser) become the default model's, and
# models/default is exported again (checked, and compared with PyTorch token for token).
ship: $(STAMP)
	for k in keyframe interp; do cp $(RUN)/$$k.safetensors $(RUN)/$$k.history.json checkpoints/transformer/; done
	$(BIN)/hiergen export --out models/default --force
	$(BIN)/python -m hiergen.tools.parity --package models/default

# Curves and probe tables of the long run so far, from its resume points (docs/training/*_long.*).
motion-report: $(STAMP)
	for k in keyframe interp; do \
	  f=checkpoints/motion/$$k.last.safetensors; test -f $$f || f=checkpoints/transformer/$$k.safetensors; \
	  $(BIN)/python -m hiergen.training.recipes $$f docs/training/$${k}_long; \
	done

# The frame-by-frame baseline: a sequential model at 16 fps only, from the same (first) backbone with the keyframe
# model's recipe and budget (3,250 steps of 32), on the 8,000 whole clips; a long run too (runs/baseline; a resume
# point in checkpoints/motion/baseline.last is restored). When it has finished: cp runs/baseline/keyframe.safetensors
# checkpoints/baseline/ and `make eval-baseline`.
BASELINE_STEPS ?= 3250
baseline: $(STAMP)
	mkdir -p runs/baseline
	test -f runs/baseline/keyframe.last.safetensors || ! test -f checkpoints/motion/baseline.last.safetensors || \
	  cp checkpoints/motion/baseline.last.safetensors runs/baseline/keyframe.last.safetensors
	$(TOKENS8K)
	$(BIN)/hiergen train keyframe --fixed-rate 16 --tokens data/tokens8k --out runs/baseline \
	  --backbone checkpoints/frozen/t2i.safetensors --threads 1 --steps $(BASELINE_STEPS) \
	  >> runs/baseline/keyframe.log 2>&1

# CogVideo's two other ablations, each a keyframe model beside the shipped one (about 40 min each on one thread):
# the whole model trained from random weights (no frozen backbone), and keyframes at one fixed rate (4 fps).
ablations: $(STAMP)
	$(BIN)/hiergen train keyframe --frozen --random-backbone --tokens data/tokens --out checkpoints/ablation_random \
	  --backbone checkpoints/transformer/t2i.safetensors --threads 1 & r=$$!; \
	$(BIN)/hiergen train keyframe --frozen --fixed-rate 4 --tokens data/tokens --out checkpoints/ablation_fixed4 \
	  --backbone checkpoints/transformer/t2i.safetensors --threads 1 & f=$$!; \
	wait $$r && wait $$f

# The evaluation of generated videos (about 35 min on 2 CPU cores); needs only the shipped checkpoints.
# The frozen-recipe models (checkpoints/frozen: CogVideo's recipe, and its two ablations' keyframe models) hold only
# what trained on their backbone, checkpoints/frozen/t2i.safetensors: they are exported with it and its interp model.
eval: $(STAMP)
	$(BIN)/hiergen export --checkpoints checkpoints/frozen --out out/frozen --force
	$(BIN)/hiergen export --checkpoints checkpoints/frozen --keyframe checkpoints/ablation_random/keyframe.safetensors \
	  --out out/ablation_random --force
	$(BIN)/hiergen export --checkpoints checkpoints/frozen --keyframe checkpoints/ablation_fixed4/keyframe.safetensors \
	  --keyframe-rate 4 --out out/ablation_fixed4 --force
	$(BIN)/hiergen eval --prompts 200 --true-keyframes --keyframes-alone \
	  --ablation "CogVideo's frozen backbone=out/frozen" \
	  --ablation "random-initialised backbone=out/ablation_random" --ablation "one fixed rate (4 fps)=out/ablation_fixed4" \
	  --json docs/eval/generated.json \
	  --markdown docs/eval/generated.md --plot docs/eval/generated_by_frame.png --samples docs/eval/generated_samples.png
	$(MAKE) eval-baseline

# The frame-by-frame baseline against the hierarchical videos (the same 200 prompts and seeds; its own files, so that
# the baseline, a long run of its own, can be scored again when it has trained further).
eval-baseline: $(STAMP)
	$(BIN)/hiergen export --keyframe checkpoints/baseline/keyframe.safetensors --out out/baseline --force
	$(BIN)/hiergen eval --prompts 200 --baseline out/baseline --json docs/eval/baseline.json --markdown docs/eval/baseline.md

bench: $(STAMP) clib
	mkdir -p docs/bench
	$(BIN)/hiergen bench --backends cpu,clib,torch --runs 2 --rounds 3 --json docs/bench/cpu.json --markdown docs/bench/cpu.md

# Reduced precision (docs/precision.md): re-run all three after the shipped model changes.
PRECISIONS := fp16 int8-cpu int8-qdq
precision: $(STAMP)
	for p in $(PRECISIONS); do $(BIN)/hiergen quantize models/default --precision $$p --out out/$$p --force -q || exit 1; done

precision-bench: precision
	mkdir -p docs/precision
	$(BIN)/hiergen bench --backends cpu --compare int8-cpu=out/int8-cpu --compare fp16=out/fp16 \
	  --compare int8-qdq=out/int8-qdq --runs 2 --rounds 6 --no-rss \
	  --json docs/precision/bench.json --markdown docs/precision/bench.md

precision-eval: precision-bench
	$(BIN)/hiergen agreement out/fp16 out/int8-cpu out/int8-qdq --prompts 16 \
	  --json docs/precision/agreement.json --markdown docs/precision/agreement.md
	$(BIN)/python -m hiergen.calibration.speed models/default out/int8-cpu out/fp16 out/int8-qdq \
	  --json docs/precision/steps.json --markdown docs/precision/steps.md
	$(BIN)/python -m hiergen.calibration.speed models/default out/int8-cpu --profile keyframe \
	  --markdown docs/precision/profile.md
	$(BIN)/hiergen eval --prompts 200 --ablation fp16=out/fp16 --ablation int8-cpu=out/int8-cpu \
	  --ablation int8-qdq=out/int8-qdq --json docs/precision/eval.json --markdown docs/precision/eval.md
	$(BIN)/python -m hiergen.calibration.report --bench docs/precision/bench.json --steps docs/precision/steps.json \
	  --agreement docs/precision/agreement.json --eval docs/precision/eval.json --out docs/precision/precision.png

clean:
	rm -rf $(VENV) out build *.egg-info
