# Herald: the two commands a new machine needs are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# `make run` needs only Herald's runtime dependencies; the test and lint tools come with `make test`.
RUN_STAMP := $(VENV)/.installed-run
# The suite runs on Kafka 3.9; the distributed end-to-end smoke test runs again on Kafka 4.x.
KAFKA_SUITE_VERSION ?= 3.9.2
KAFKA_SMOKE_VERSION ?= 4.3.1

.PHONY: run test test-unit lint format fix clean kafka-fetch validator image deploy-check

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e . --config-settings editable_mode=strict
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(PY) -m pip install --quiet -e '.[test]' --config-settings editable_mode=strict
	touch $(STAMP)

## run: embedded Herald (SQLite file herald.db, in-process bus), FHIR API at http://127.0.0.1:8080/fhir
run: $(RUN_STAMP)
	HERALD_LOG_FORMAT=$${HERALD_LOG_FORMAT:-text} $(VENV)/bin/herald run

kafka-fetch:
	KAFKA_VERSION=$(KAFKA_SUITE_VERSION) deploy/local/kafka.sh fetch
	KAFKA_VERSION=$(KAFKA_SMOKE_VERSION) deploy/local/kafka.sh fetch

# The HL7 FHIR validator (HAPI) for tests/e2e/test_validator.py: Maven resolves its jars into
# ~/.m2 once; the test runs tests/validator/Validate.java on this class path.
VALIDATOR_CP := tests/validator/target/classpath.txt
$(VALIDATOR_CP): tests/validator/pom.xml
	mvn -B -q -f tests/validator/pom.xml dependency:build-classpath -Dmdep.outputFile=target/classpath.txt

validator: $(VALIDATOR_CP)

## test: lint, type-check, then the whole suite on real Kafka and PostgreSQL (started by the fixtures)
test: $(STAMP) lint kafka-fetch validator
	KAFKA_VERSION=$(KAFKA_SUITE_VERSION) $(PY) -m pytest
	KAFKA_VERSION=$(KAFKA_SMOKE_VERSION) $(PY) -m pytest tests/e2e/test_distributed.py -k backbone
	$(MAKE) -C integrations/canvas test

## image: the OCI image (deploy/container/Containerfile) with podman, tagged $(IMAGE)
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' services/__init__.py)
IMAGE ?= localhost/herald:$(VERSION)
HOST_CA ?= /etc/ssl/certs/ca-certificates.crt
image: $(RUN_STAMP)
	rm -rf build/wheel
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir build/wheel .
	podman build --network host --secret id=hostca,src=$(HOST_CA) \
	  --build-arg VERSION=$(VERSION) --build-arg BASE=$${HERALD_BASE_IMAGE:-$$(deploy/container/base.sh)} \
	  -f deploy/container/Containerfile -t $(IMAGE) .

## deploy-check: image, wheel, compose stack, Helm chart, alert rules and dashboard checks (CI)
deploy-check: $(STAMP)
	IMAGE=$(IMAGE) deploy/ci/run.sh

## test-unit: the fast tests of the pure core, no services needed
test-unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
