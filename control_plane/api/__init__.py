"""The HTTP API: one module per endpoint group, thin over `control_plane.services`."""
