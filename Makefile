# The two commands of README.md: `make pipeline` (the main job) and `make test`.
.PHONY: setup pipeline test lint

setup:
	bash scripts/setup.sh

pipeline: setup
	.venv/bin/rexnet-deploy models

lint: setup
	.venv/bin/ruff check rexnet_deploy tests

test: setup lint
	.venv/bin/python -m pytest -q tests
