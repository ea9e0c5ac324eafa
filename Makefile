# The two commands of README: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.diffkit-installed
OUT ?= out/demo

I18N := $(PY) -m babel.messages.frontend

.PHONY: i18n demo test test-all wheel-check docs lint bench clean-venv chromium course course-warm course-time

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m diffkit demo --out $(OUT)

# The course's editions from notebooks/: course/student/{en,es}/ (answers and solutions out, outputs
# cleared) and course/teacher/{en,es}/ (executed copies from out/notebooks/ when newer). See docs/howto/classroom.md.
course: $(STAMP)
	$(PY) -m diffkit course --out course

# Before class: the audit runs the notebooks read, into out/ (resumes; minutes the first time).
course-warm: $(STAMP)
	$(PY) -m diffkit course warm

# Each notebook's and each section's seconds as a Markdown table (ONLY="01 04" for some).
course-time: $(STAMP)
	$(PY) -m diffkit course time $(if $(ONLY),--only $(ONLY))

# The fast loop (about 4 minutes on 2 cores): lint, then every test but the notebooks, the browser
# and the slow ones, on two workers (pytest-xdist).
test: $(STAMP)
	$(PY) -m ruff check diffkit tests benchmarks mkdocs_hooks.py
	$(PY) -m ruff format --check diffkit tests benchmarks mkdocs_hooks.py
	$(PY) -m pytest -q -n 2 -m "not slow and not browser" --durations=10

# Everything CI runs: the fast loop, then the course's notebooks executed cold, the JupyterLab
# browser tests, the quality bars and the slow simulations (about 15 more minutes on 2 cores).
test-all: test chromium
	$(PY) -m pytest -q -m "slow or browser" --durations=15

# The wheel as a user gets it: built, installed with its dependencies in a fresh venv outside
# the repository, then `diffkit demo` and a small `diffkit audit run` from an empty folder (~6 min).
wheel-check: $(STAMP)
	bash .ci/wheel_check.sh $(PY)

# The declared diffusers range is the tested range: the reverse chain's equality tests again on the
# oldest diffusers pyproject.toml allows (installed beside .venv's, without touching it).
DIFFUSERS_OLDEST := 0.35.2
test-compat: $(STAMP)
	@test -d .cache/diffusers-$(DIFFUSERS_OLDEST) || $(PY) -m pip install --quiet --disable-pip-version-check \
	  --no-deps --target .cache/diffusers-$(DIFFUSERS_OLDEST) diffusers==$(DIFFUSERS_OLDEST)
	PYTHONPATH=.cache/diffusers-$(DIFFUSERS_OLDEST) DIFFKIT_EXPECT_DIFFUSERS=$(DIFFUSERS_OLDEST) \
	  $(PY) -m pytest -q -p no:cacheprovider tests/reverse/test_reverse_chain.py tests/reverse/test_recorder.py \
	  tests/reverse/test_flux.py \
	  -k "equal or clip_sample or img2img or diffusers_version"

# The browser tests drive Debian's Chromium (Playwright never downloads a browser here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing Debian's chromium for the browser tests"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The Spanish catalogue: extract every message diffkit shows (Python and the report's templates),
# merge the new ones into diffkit/locale/es/LC_MESSAGES/diffkit.po (translate those left empty), compile
# the .mo the wheel ships. tests/test_i18n.py fails while a message has no Spanish string.
i18n: $(STAMP)
	$(I18N) -q extract -F babel.cfg -k N_ -k ngettext:1,2 --no-location --sort-output \
	  --project diffkit --copyright-holder "diffkit authors" -o diffkit/locale/diffkit.pot diffkit
	$(I18N) -q update --no-fuzzy-matching -i diffkit/locale/diffkit.pot -d diffkit/locale -D diffkit -l es
	$(I18N) -q compile -d diffkit/locale -D diffkit --statistics

lint: $(STAMP)
	$(PY) -m ruff check diffkit tests benchmarks mkdocs_hooks.py
	$(PY) -m ruff format --check diffkit tests benchmarks mkdocs_hooks.py

# The site in English and Spanish (site/ and site/es/): the notebooks are the course's teacher editions,
# with their outputs when out/notebooks/ holds current executed copies (`make test-all` writes them);
# docs/notebooks/NN_name.ipynb is the English edition, NN_name.es.ipynb the Spanish one.
DOCS_COURSE := .cache/docs-course
docs: $(STAMP)
	@rm -rf $(DOCS_COURSE) docs/notebooks && mkdir -p docs/notebooks
	$(PY) -m diffkit course --out $(DOCS_COURSE)
	cp $(DOCS_COURSE)/teacher/en/[0-9][0-9]_*.ipynb docs/notebooks/
	@for nb in $(DOCS_COURSE)/teacher/es/[0-9][0-9]_*.ipynb; do \
	  cp "$$nb" "docs/notebooks/$$(basename "$$nb" .ipynb).es.ipynb" || exit 1; done
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -d site

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
