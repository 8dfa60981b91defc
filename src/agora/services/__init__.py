"""Domain services: one module per domain; routers and web pages call these, never the models."""
