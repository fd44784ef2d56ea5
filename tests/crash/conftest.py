"""Writes the kill report (STYLEMOTION_KILL_REPORT) at the end of the session."""
from __future__ import annotations


def pytest_sessionfinish(session, exitstatus):
    from .test_kill import write_report

    write_report(session.testsfailed)
