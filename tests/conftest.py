"""pytest set-up: the hypothesis profiles and the `reference` fixture. Shared helpers are in helpers.py."""

import os

import pytest
from hypothesis import HealthCheck, settings

# The suite is reproducible by default (fixed examples); HYPOTHESIS_PROFILE=explore searches new ones.
settings.register_profile("default", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow],
                          print_blob=True)
settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))



@pytest.fixture
def reference():
    """The transformers reference helpers; skips when the `reference` extra is not installed."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tinydg.tools import reference as ref
    return ref
