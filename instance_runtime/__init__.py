"""The `pocketfleet` engine: a PocketBase-compatible server in Python (see DESIGN.md)."""
