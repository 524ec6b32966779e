.PHONY: lint format test reference docs
lint:
	ruff check . && ruff format --check .
format:
	ruff check --fix . && ruff format .
test:
	python -m pytest
reference:
	python -m pyrovae config --reference
docs:
	sphinx-build -W --keep-going -b html docs docs/_build/html
