"""Database layer: SQLAlchemy models, the engine, and every SQL statement the worker runs."""
