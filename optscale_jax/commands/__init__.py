"""Subcommands of the ``optscale`` CLI; each module exposes ``register(app)``."""
