"""CLI commands of the embed stage (registered by pipeline/cli.py)."""

COMMANDS: list = []
