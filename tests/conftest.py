import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow],
                          print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "weights", "fixtures")


def fixture_names():
    if not os.path.isdir(FIXTURES):
        return []
    return sorted(n for n in os.listdir(FIXTURES) if os.path.exists(os.path.join(FIXTURES, n, "reference.npz")))


@pytest.fixture
def reference():
    """The transformers reference helpers; skips when the `reference` extra is not installed."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tinydg import reference as ref
    return ref
