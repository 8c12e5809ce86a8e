"""The store: the source of truth, in SQLAlchemy 2. Every index is derived from it."""
