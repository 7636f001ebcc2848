import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

HAS_DASSL = importlib.util.find_spec("dassl") is not None


def pytest_collection_modifyitems(config, items):
    if HAS_DASSL:
        return
    skip = pytest.mark.skip(reason="Dassl is not installed (see README.md, Set up)")
    for item in items:
        if "dassl" in item.keywords:
            item.add_marker(skip)
