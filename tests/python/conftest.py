import os

import pytest
import torch

import derrumbe


@pytest.fixture
def gmm():
    """An exact float64 Gaussian-mixture denoiser on a small [C, F, H, W] item."""
    return derrumbe.GaussianMixture.random([3, 2, 4, 5], components=3, seed=7)


def max_rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def pytest_sessionfinish(session, exitstatus):
    """With DRB_REQUIRE_ALL_TESTS=1 (.ci/test: the setup installs every reference package), a
    skipped test is a failure, unless it is marked `gpu` and the machine has no GPU: a parity
    test must not pass by not running."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("DRB_REQUIRE_ALL_TESTS") != "1" or reporter is None:
        return
    skipped = [r for r in reporter.stats.get("skipped", []) if "gpu" not in getattr(r, "keywords", {})]
    if skipped:
        reporter.write_line(f"DRB_REQUIRE_ALL_TESTS: {len(skipped)} test(s) skipped, which fails the run:", red=True)
        for report in skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            reporter.write_line(f"  {report.nodeid}: {reason}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
