"""Caddy as pocketfleet's production proxy, driven through its admin API.

- `config`: the JSON pocketfleet owns in Caddy's config (one server, its routes, TLS, logs).
- `admin`: a small async client of the admin API on its unix socket (`If-Match` concurrency,
  typed errors; TCP admin addresses are refused).
- `sink`: `CaddyRoutes`, the `RouteSink` that keeps Caddy's routes equal to the route table.
- `activity`: request activity observed by Caddy (access log, upstream counts) fed to the
  same `ActivityTracker` the embedded proxy feeds, so idle detection works behind Caddy.
- `process`: a supervised Caddy child (`pocketfleet serve --start-caddy`).

Like the rest of `proxy`, nothing here knows accounts or the control DB.
"""
