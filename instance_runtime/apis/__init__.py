"""HTTP API handlers, one module per endpoint group (as PocketBase's apis/)."""
