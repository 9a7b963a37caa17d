"""The launchd agent template, shipped as package data of `daemon.launchd` (see pyproject.toml)."""
