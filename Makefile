# Two commands set everything up on a fresh machine (see README.md):
#   make demo   the daemon on generated sample videos, with an embedded Redis
#   make test   the test suite (real Redis, real H.264 video, real ONNX Runtime), including the
#               base-only check: `pip install .` without extras into .venv-base/ (tests/test_base_only.py)
.PHONY: demo test bench setup
PY := .venv/bin/python

setup:
	bash deploy/bootstrap.sh

demo: setup
	$(PY) -m forensics.cli demo

test: setup
	$(PY) -m pytest -n 2 --dist loadscope

bench: setup
	$(PY) bench/ingest.py
