# The two commands of README.md: `make pipeline` (the main job) and `make test`.
.PHONY: setup pipeline pipeline-quick test lint

setup:
	bash scripts/setup.sh

pipeline: setup
	.venv/bin/rexnet-deploy pipeline

# the short pipeline CI runs as the project's own accuracy-regression check (baseline pipeline-quick)
pipeline-quick: setup
	.venv/bin/rexnet-deploy pipeline --quick

lint: setup
	.venv/bin/ruff check rexnet_deploy tests scripts

test: setup lint
	.venv/bin/python -m pytest -q -p no:cacheprovider
