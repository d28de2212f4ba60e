"""The index database: schema, engine, and the group-commit writer."""
