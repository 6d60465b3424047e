"""Drivers: where and how instances run (child processes now, containers later)."""
