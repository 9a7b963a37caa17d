"""The systemd unit templates, shipped as package data of `daemon.systemd` (see pyproject.toml)."""
