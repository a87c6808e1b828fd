"""CLI commands of the fit stage (registered by pipeline/cli.py)."""

COMMANDS: list = []
