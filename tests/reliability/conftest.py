"""The reliability suite's fixtures; see tests/reliability/figures.py for how it runs."""

import pytest

from tests.reliability.figures import Figures, figures_of


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """Where a test records what it measured, for the run's summary and docs/reliability.md."""
    return figures_of(request.node.nodeid.split("::", 1)[-1])
