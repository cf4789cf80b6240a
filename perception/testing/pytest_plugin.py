"""pytest plugin of the perception package (entry point `pytest11`: loaded by pytest once the
package is installed; `-p perception.testing.pytest_plugin` loads it explicitly).

Fixtures
- perception_node (module scope): a Session (perception.client) that started `perception fuse` on
  private endpoints (ipc sockets in a temporary directory) for the test module, stopped after it.
- perception_session: that Session for one test, with Detections left over from earlier tests
  dropped (one node per module: starting it costs seconds; steps are independent frame sets).
- perception_node_options (module scope): the keyword arguments of Session.start; override it in a
  test module or conftest.py to choose the rig, backend, model or node arguments.

Command-line options (defaults for perception_node_options): --perception-rig, --perception-model,
--perception-backend (torch), --perception-threads (1).

Assertion helpers are in perception.testing (assert_detected, assert_no_phantoms).
"""
from __future__ import annotations

import pytest

from perception import config as pconfig


def pytest_addoption(parser):
    group = parser.getgroup("perception", "perception fusion node for integration tests")
    group.addoption("--perception-rig", default=str(pconfig.DEFAULT_RIG), help="rig YAML of the node the fixtures start")
    group.addoption("--perception-model", default=None, help="model directory (default: the shipped model)")
    group.addoption("--perception-backend", default="torch", help="engine backend of the node (perception fuse --backend)")
    group.addoption("--perception-threads", type=int, default=1, help="engine threads of the node")


def _option(config, name: str, default):
    try:
        value = config.getoption(name)
    except ValueError:                 # the plugin was registered after the options were parsed
        return default
    return default if value is None else value


@pytest.fixture(scope="module")
def perception_node_options(request) -> dict:
    """Keyword arguments of perception.client.Session.start for this module's node."""
    c = request.config
    return {"rig": _option(c, "--perception-rig", str(pconfig.DEFAULT_RIG)),
            "model": _option(c, "--perception-model", None),
            "backend": _option(c, "--perception-backend", "torch"),
            "threads": _option(c, "--perception-threads", 1)}


@pytest.fixture(scope="module")
def perception_node(perception_node_options):
    """A fusion node started for this test module, as the Session that owns it."""
    from perception.client import ClientError, Session

    try:
        session = Session.start(**perception_node_options)
    except ClientError as e:
        pytest.fail(f"could not start the fusion node with {perception_node_options}: {e}", pytrace=False)
    with session:
        yield session


@pytest.fixture
def perception_session(perception_node):
    """The module's Session for one test (Detections left over from earlier tests dropped)."""
    perception_node.drain()
    yield perception_node
