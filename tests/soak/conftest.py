"""The soak tests run on demand only (PROMPTBEAM_SOAK=1): they take tens of minutes, so CI skips them."""
import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PROMPTBEAM_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="a soak test: run on demand with PROMPTBEAM_SOAK=1 (see docs/reliability.md)")
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.soak)
            item.add_marker(skip)
