"""Server-rendered web UI (Jinja2)."""
