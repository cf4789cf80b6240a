"""The example tests use the plugin's fixtures. An installed package (pip install -e .) registers
them through its pytest11 entry point; a checkout on PYTHONPATH alone has no entry point, so the
plugin is registered here when pytest has not loaded it already."""


def pytest_configure(config):
    from perception.testing import pytest_plugin

    if not config.pluginmanager.is_registered(pytest_plugin):
        config.pluginmanager.register(pytest_plugin, "perception")
