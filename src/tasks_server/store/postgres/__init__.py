"""The scale-out store: many nodes on one PostgreSQL database."""

from tasks_server.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
