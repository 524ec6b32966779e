.PHONY: lint format test reference
lint:
	ruff check . && ruff format --check .
format:
	ruff check --fix . && ruff format .
test:
	python -m pytest
reference:
	python -m pyrovae config --reference
