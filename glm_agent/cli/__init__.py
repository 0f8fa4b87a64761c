"""The `glm-agent` command line (typer lives here and nowhere else in the package)."""

from glm_agent.cli.app import app, main

__all__ = ["app", "main"]
