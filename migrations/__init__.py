"""Alembic migrations, shipped as the package `daemon.migrations` (see pyproject.toml and daemon/store/db.py)."""
