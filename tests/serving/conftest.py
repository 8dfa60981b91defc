"""A live Agora with its gateway (the fixtures of tests/gateway and tests/deployments)."""

from tests.deployments.conftest import platform, platform_factory  # noqa: F401 - fixtures
from tests.gateway.conftest import gateway_factory, gw  # noqa: F401 - fixtures
