# Alem: `make run` sets up and serves the demo; `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lock run migrate seed dbshell test lint check format messages bench bench-parts \
	clean audit collectstatic

# requirements*.txt pin every package, transitive ones included, with their hashes: pip refuses
# anything else (--require-hashes). Edit requirements*.in and run `make lock` to change them.
$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

PIP_COMPILE := $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links
lock: install
	$(PIP_COMPILE) --output-file requirements.txt requirements.in
	$(PIP_COMPILE) --output-file requirements-dev.txt requirements-dev.in

# Runs a command against the embedded PostgreSQL (data in var/postgres), started for it and
# stopped after the last command using it, unless DATABASE_URL names a server (embedded_db.py).
WITH_DB := $(BIN)/python embedded_db.py --

migrate: install
	DEBUG=$${DEBUG:-1} $(WITH_DB) $(BIN)/python manage.py migrate --no-input

seed: migrate
	DEBUG=$${DEBUG:-1} $(WITH_DB) $(BIN)/python manage.py seed_demo

# Web server and a Celery worker with embedded beat (django-celery-beat's DatabaseScheduler, so
# the schedules installed by install_schedules are editable in the admin), on the embedded
# PostgreSQL and the filesystem broker under var/ unless DATABASE_URL / REDIS_URL say otherwise
# (alem.celery creates the broker's folders). Ctrl-C stops all three.
run: seed
	DEBUG=$${DEBUG:-1} $(WITH_DB) $(BIN)/python manage.py install_schedules
	@echo "Alem on http://127.0.0.1:8000/  (API: /api/v1/, docs: /api/docs/, admin: /admin/)"
	@echo "Sign in with a one-time code: the demo users' authenticator URIs are in var/demo-otp.txt"
	@echo "(add one to an authenticator app), or print a user's current code with"
	@echo "  DEBUG=1 $(WITH_DB) $(BIN)/python manage.py otp_code committee1"
	@DEBUG=$${DEBUG:-1} $(WITH_DB) sh -c 'trap "kill 0" EXIT INT TERM; \
	$(BIN)/celery -A alem worker --beat --loglevel=info --concurrency=2 \
		--scheduler django_celery_beat.schedulers:DatabaseScheduler & \
	$(BIN)/python manage.py runserver 127.0.0.1:8000'

# psql on the database the app uses (the embedded one unless DATABASE_URL says otherwise).
dbshell: install
	DEBUG=$${DEBUG:-1} $(WITH_DB) $(BIN)/python manage.py dbshell

# Hashed, compressed static files for DEBUG off, written to STATIC_ROOT (staticfiles/) for
# whitenoise to serve; needs the production environment ("Deploying" in README.md). `make run`
# (DEBUG on) serves alem/static as it is and needs none of it.
collectstatic: install
	$(BIN)/python manage.py collectstatic --no-input

# One pytest worker per core (pytest-xdist), each with its own test database on the one
# embedded PostgreSQL (or the server DATABASE_URL names).
PYTEST_ARGS ?= -n auto
test: install
	$(WITH_DB) $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# What CI checks before the suite: lint, migrations in step with the models, and Django's
# deployment checks under the production-like throwaway values of deploy/build-time.env.
check: lint
	DEBUG=1 $(WITH_DB) $(BIN)/python manage.py makemigrations --check --dry-run
	env $$(grep -v '^#' deploy/build-time.env | xargs) \
		$(BIN)/python manage.py check --deploy --fail-level WARNING

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Known vulnerabilities in the pinned dependencies and everything they pull in (pip-audit, asking
# PyPI's vulnerability service on pypi.org). --strict: a package it could not check fails the
# audit instead of passing unchecked. Ignore a finding only with its reason, in .ci/run.
AUDIT_ARGS ?=
audit: install
	$(BIN)/pip-audit --strict --progress-spinner off -r requirements.txt -r requirements-dev.txt \
		$(AUDIT_ARGS)

# Refresh the Russian and Kazakh catalogues (alem/locale) from the marked strings, then compile
# them; needs GNU gettext. Translate every new or changed entry (no fuzzy, no empty msgstr):
# tests/test_translations.py fails until the catalogues are complete and compiled.
messages: install
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py makemessages -l ru -l kk --no-obsolete \
		--ignore=.venv --ignore=var --ignore=staticfiles --ignore=tests
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py compilemessages --ignore=.venv

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis

# Alem at the fund's real size, side by side with bare DRF / Django yardsticks on the same server
# (figures, not tests): the dataset (bench/dataset.py; 10,000 proposals, ~1,000,000 prices and
# five years of NAV at BENCH_SIZE=1; built once, reused while its migrations match), then the
# table of the issue's rows with their goals (bench/real_size.py; gunicorn, DEBUG off). A quick
# run: `make bench BENCH_SIZE=0.01`; more options: BENCH_ARGS="--rounds 3 --profile".
BENCH_SIZE ?= 1
BENCH_ARGS ?=
bench: install
	$(WITH_DB) $(BIN)/python bench/dataset.py --size $(BENCH_SIZE)
	$(WITH_DB) $(BIN)/python bench/real_size.py --size $(BENCH_SIZE) $(BENCH_ARGS)

# The focused benchmarks on small scratch data: a 5-year backfill for 20 assets against a local
# fake market, verifying an audit chain of 100,000 events, the pages of a fund of 200 proposals.
bench-parts: install
	DEBUG=1 $(WITH_DB) $(BIN)/python bench/backfill.py
	DEBUG=1 $(WITH_DB) $(BIN)/python bench/audit_chain.py
	DEBUG=1 $(WITH_DB) $(BIN)/python bench/pages.py
