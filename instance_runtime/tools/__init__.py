"""Helpers that know nothing of core: jwt/security, etc."""
