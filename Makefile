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

# one pytest process per test file: in one process for the whole suite, native memory corruption from one of
# the runtimes loaded side by side (torch, ONNX Runtime, OpenVINO/NNCF) crashed the run with SIGSEGV at a
# different place each time, two files later (README, "Tests")
test: setup lint
	@failed=""; shared=$$(mktemp -d); export REXNET_DEPLOY_TEST_SHARED=$$shared; \
	for f in tests/test_*.py; do \
	    echo "== $$f"; .venv/bin/python -m pytest -q -p no:cacheprovider "$$f" || failed="$$failed $$f"; \
	done; rm -rf "$$shared"; \
	if [ -n "$$failed" ]; then echo "make test: failed:$$failed"; exit 1; fi
