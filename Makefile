# ibd-book: `make book` executes every chapter with papermill and builds the HTML book;
# `make test` runs the unit tests, every chapter at the ci profile (checked by nbval) and the -W book build.
PYTHON  ?= python3
PROFILE ?= converged
DEVICE  ?= auto
# Offline copies of the datasets beside the clone are used when present; otherwise files are downloaded into data/.
ifeq ($(IBD_DATA_DIR),)
ifneq ($(wildcard ../shared/data/SHA256SUMS),)
export IBD_DATA_DIR := $(abspath ../shared/data)
endif
endif

.PHONY: setup book chapters html test unit test-chapters sync-url clean

setup:            ## install everything (torch 2.13.0 CPU wheel locally; Colab keeps its own torch)
	$(PYTHON) -m pip install -q -r requirements.txt
	$(PYTHON) -m pip install -q --no-deps -e .

book: setup chapters html   ## main job: execute the chapters in place, then build the book

chapters:         ## at converged, first re-render chapters 6-7's table and figure pages from results/converged
	@if [ "$(PROFILE)" = converged ]; then $(PYTHON) -m ibd_lite reproduce --profile converged --render-only --quiet; fi
	$(PYTHON) scripts/execute_chapters.py --profile $(PROFILE) --device $(DEVICE) --in-place

html:
	$(PYTHON) -c "from jupyter_book.cli.main import main; main()" build . -W --keep-going -q

test: setup unit test-chapters html   ## the test command (.ci/run calls it)

unit:
	$(PYTHON) -m pytest -q tests

test-chapters:
	$(PYTHON) scripts/execute_chapters.py --profile ci --device cpu --out-dir build/ci-chapters
	$(PYTHON) -m pytest -q --nbval-lax -p no:cacheprovider build/ci-chapters

sync-url:         ## write ibd_lite.book.REPO_URL into the Colab cells, _config.yml, book/index.md and README.md
	$(PYTHON) -m ibd_lite.book sync

clean:
	rm -rf _build build
