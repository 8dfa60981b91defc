"""The inference gateway: OpenAI-compatible routing, limits and metering in front of deployments."""
