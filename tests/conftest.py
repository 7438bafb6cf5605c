"""Shared pytest fixtures.

Integration tests that need root, ``ip netns`` and ``/dev/net/tun`` use one of the
fixtures ``requires_netns``, ``netns_name``, ``topology`` or ``make_topology``: they are
skipped, with the reason, where that is not available. Tests under
``tests/integration/`` get the ``integration`` marker automatically.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from netstack import netns as nsh
from netstack.harness import Topology, environment_problem, topology

_PROBLEM: list[str | None] = []


def netns_problem() -> str | None:
    """Why namespace tests cannot run here (computed once per session), or None."""
    if not _PROBLEM:
        _PROBLEM.append(environment_problem())
    return _PROBLEM[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration as ``integration``."""
    root = Path(__file__).parent / "integration"
    for item in items:
        if root in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def requires_netns() -> None:
    """Skip the test unless root + ip netns + /dev/net/tun are usable."""
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")


@pytest.fixture
def netns_name(requires_netns: None) -> Iterator[str]:
    """A fresh, empty namespace (deleted afterwards, asserted)."""
    with nsh.namespace("bt") as ns:
        yield ns
    assert not nsh.exists(ns), f"namespace {ns} left behind"


@pytest.fixture
def make_topology(requires_netns: None) -> Iterator[Callable[..., Topology]]:
    """Factory: ``make_topology(mtu=9000, bridge=True, ...)`` (see netstack.harness).

    Every topology made is torn down at the end of the test; the fixture then asserts
    that its namespace is gone.
    """
    made: list[str] = []
    with contextlib.ExitStack() as stack:

        def make(**kwargs: Any) -> Topology:
            topo = stack.enter_context(topology(**kwargs))
            made.append(topo.netns)
            return topo

        yield make
    for ns in made:
        assert not nsh.exists(ns), f"namespace {ns} left behind"


@pytest.fixture
def topo(make_topology: Callable[..., Topology]) -> Topology:
    """A default topology: TAP (MTU 1500) with 10.77.0.1/24 on its kernel side."""
    return make_topology()
