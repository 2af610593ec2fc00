"""Suite-wide rule for CI: with SESAME_PI_NO_SKIP=1 a skipped test is a failed test.

A system or fault test skips when this machine lacks what it needs (root, network namespaces, a
sound server). Locally that is a fair answer; in CI it would hide a suite that never ran, so
`.ci/run` sets the variable and every skip turns red with its reason.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

NO_SKIP = os.environ.get("SESAME_PI_NO_SKIP") == "1"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, and SESAME_PI_NO_SKIP=1 forbids it: {report.longrepr}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A whole file skipped as it is collected (`importorskip`, `skip(allow_module_level=True)`)
    is a collection report, not a test's: the rule above never saw it."""
    report = yield
    if NO_SKIP and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped, and SESAME_PI_NO_SKIP=1 forbids it: {report.longrepr}"
    return report
