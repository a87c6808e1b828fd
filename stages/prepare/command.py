"""CLI commands of the prepare stage (registered by pipeline/cli.py)."""

COMMANDS: list = []
