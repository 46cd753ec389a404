"""Suite-wide settings.

``HUB_REQUIRE_ALL=1`` (set by CI) turns every skip into a failure: a test that would skip for a
missing tool (node, an npm package, a server binary) fails instead, so a missing install step
cannot hide behind a green run.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

REQUIRE_ALL = os.environ.get("HUB_REQUIRE_ALL") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    # An expected failure (xfail) is reported as skipped too; it is not a missing tool.
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under HUB_REQUIRE_ALL=1: {report.longrepr}"
