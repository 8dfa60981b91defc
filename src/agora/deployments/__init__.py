"""Self-service deployments: templates, backends and the orchestrator that reconciles them."""
