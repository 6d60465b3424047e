"""Deploys of an instance's code folders: one checked archive, one switch, kept for rollback."""
