"""CLI commands of the evaluate stage (registered by pipeline/cli.py)."""

COMMANDS: list = []
