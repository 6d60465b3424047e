"""Engines: what an instance runs (the real PocketBase at a version, or our own runtime)."""
