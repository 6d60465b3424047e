"""Services: every rule of the control plane, usable without HTTP (API, CLI and dashboard)."""
