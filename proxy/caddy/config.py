"""The part of Caddy's JSON config that pocketfleet owns, built from a `CaddyLayout`.

pocketfleet owns, in whatever config Caddy has (the rest is left as it is):

- `admin`, entirely: the admin endpoint on pocketfleet's unix socket (`admin_config`), nothing
  else (no TCP listener, no remote admin, no config loader). Every config pocketfleet pushes
  carries it, so that no push can move the admin API to another address.
- `apps.http.servers.pocketfleet`: one server listening on the HTTP address (plain) and, with
  TLS, on the HTTPS address (`apps.http.http_port`/`https_port` say which listener is which).
  Its routes, in this order (`INSTANCES_INDEX` is fixed, so the instance list has a stable
  `/config/...` path for `If-Match`):
    0. `pocketfleet-pre`: `EPOCH_PATH` on host `PROBE_HOST` answers the `epoch` of the last full
       push (finding it proves that Caddy still holds what pocketfleet pushed last, without
       a request to the admin API, which logs a line per request); with `redirect_http`,
       plain-HTTP requests go to HTTPS (308), except domain-verification paths; `/_pf/*` on
       instance hosts goes to the control plane (the embedded proxy answers sign-in
       hand-offs there).
    1. `pocketfleet-instances`: a subroute holding one route per instance host, each with
       `@id` `host_id(host)` (see `instance_route`).
    2. the apex host (`PF_DOMAIN`): the control plane (API and dashboard).
    3. `/.well-known/pocketfleet/*` on any host: the control plane (domain verification).
    4. `pocketfleet-fallback`: any other host gets pocketfleet's JSON 404 (Caddy alone would
       answer an empty 200).
- `apps.tls.automation.on_demand.ask` and the catch-all automation policy (`@id`
  `pocketfleet-tls`, on-demand, issuer ACME or Caddy's internal CA; Caddy allows a single
  catch-all, so another one is replaced), kept last so that other sites' policies with
  subjects still match first.
- `apps.pki.certificate_authorities.local.install_trust = false` (never touch the system
  trust store).
- `logging.logs.pocketfleet_access`: the server's access log, as JSON datagrams to the
  control plane (host, method, status, size, duration: no URI, headers or addresses), and
  that logger (with `admin.api`, which pocketfleet's own polling would flood) excluded from
  the default log.

Every function here is pure: it returns JSON-ready dicts and never talks to Caddy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from proxy.caddy.admin import admin_listen
from proxy.routes import Route, RouteState, Upstream

SERVER = "pocketfleet"
ACCESS_LOGGER = "pocketfleet_access"
TLS_POLICY_ID = "pocketfleet-tls"
INSTANCES_ID = "pocketfleet-instances"
INSTANCES_INDEX = 1
HOST_ID_PREFIX = "pocketfleet-host-"
EPOCH_PATH = "/.well-known/pocketfleet-epoch"
PROBE_HOST = "pocketfleet.invalid"
VERIFY_PREFIX = "/.well-known/pocketfleet/"
HANDOFF_PREFIX = "/_pf/"
# Loggers kept out of Caddy's default log: the access log (it goes to the control plane) and
# the admin API's line per request (pocketfleet polls it).
QUIET_LOGGERS = frozenset({f"http.log.access.{ACCESS_LOGGER}", "admin.api"})
INSTANCES_PATH = f"/config/apps/http/servers/{SERVER}/routes/{INSTANCES_INDEX}/handle/0/routes"

Json = dict[str, Any]


@dataclass(frozen=True)
class CaddyLayout:
    """What pocketfleet's part of the config depends on (all but the routes themselves).

    `control_plane` is the address Caddy dials for the API, wakes and hand-offs
    (`127.0.0.1:8090`); `admin_socket` the unix socket of Caddy's admin API (pinned in every
    config pushed); `http_listen`/`https_listen` are Caddy listener addresses
    (`:80`, `127.0.0.1:18443`); `https_listen=None` serves plain HTTP only. `tls_issuer` is
    `acme` (Let's Encrypt, with `acme_email` if given) or `internal` (Caddy's own CA). `ask_url`
    is the control plane's on-demand TLS approval endpoint; `access_log` a Caddy network
    address for the access log (`udp/127.0.0.1:PORT`), or None for none.
    """

    domain: str
    control_plane: str
    admin_socket: Path
    http_listen: str
    https_listen: str | None
    tls_issuer: Literal["acme", "internal"] = "internal"
    acme_email: str | None = None
    ask_url: str = ""
    access_log: str | None = None
    redirect_http: bool = False


def listen_port(address: str) -> int:
    """The port of a listener address: `:80` -> 80, `127.0.0.1:18080` -> 18080."""
    return int(address.rsplit(":", 1)[1])


def local_dial(address: str) -> str:
    """How to reach a listener address from this machine: `:80` -> `127.0.0.1:80`."""
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def host_id(host: str) -> str:
    """The `@id` of the route of instance host `host`."""
    return HOST_ID_PREFIX + host.lower()


def _json_error(status: int, message: str, *, placeholders: bool = False) -> Json:
    """A static response in PocketBase's error shape. Braces are Caddy placeholders: unless
    `placeholders`, the message's braces become parentheses."""
    text = message if placeholders else message.replace("{", "(").replace("}", ")")
    body = orjson.dumps({"status": status, "message": text, "data": {}}).decode()
    return {
        "handler": "static_response",
        "status_code": status,
        "headers": {"Content-Type": ["application/json"]},
        "body": body,
    }


# An instance restarting itself (PocketBase does when its hooks change) refuses connections
# for a moment: Caddy dials again for this long before it answers 502, as the embedded proxy.
RESTART_TRY_DURATION = "3s"
RESTART_TRY_INTERVAL = "100ms"


def _proxy_to(dial: str, host: str | None = None) -> Json:
    handler: Json = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": dial}],
        "load_balancing": {
            "try_duration": RESTART_TRY_DURATION,
            "try_interval": RESTART_TRY_INTERVAL,
        },
    }
    if host is not None:
        handler["headers"] = {"request": {"set": {"Host": [host]}}}
    return handler


def instance_route(
    route: Route,
    layout: CaddyLayout,
    aliases: tuple[str, ...] = (),
    draining: Upstream | None = None,
) -> Json:
    """The Caddy route of one instance host (and its verified custom domains, `aliases`).

    - `UP`: proxied straight to the upstream.
    - `ASLEEP`: proxied to the control plane with `Host` set to the instance host, where the
      embedded proxy holds the request, wakes the instance and forwards it. With `draining`,
      the route also keeps a never-matching branch to that upstream, so that Caddy keeps
      counting the requests still in flight to it (`/reverse_proxy/upstreams`) while they
      drain; see `proxy.caddy.activity`.
    - `STOPPED`: 503 with the route's reason.
    """
    handler: Json
    if route.state is RouteState.UP and route.upstream is not None:
        handler = _proxy_to(f"{route.upstream.host}:{route.upstream.port}")
    elif route.state is RouteState.ASLEEP:
        handler = _proxy_to(layout.control_plane, route.host)
        if draining is not None:
            keep = {
                "match": [{"not": [{}]}],  # matches no request
                "handle": [_proxy_to(f"{draining.host}:{draining.port}")],
            }
            handler = {"handler": "subroute", "routes": [keep, {"handle": [handler]}]}
    else:
        name = route.host.partition(".")[0]
        handler = _json_error(503, route.reason or f"Instance {name} is stopped.")
    hosts = [route.host.lower(), *(alias for alias in aliases if alias != route.host.lower())]
    return {"@id": host_id(route.host), "match": [{"host": hosts}], "handle": [handler]}


def server(layout: CaddyLayout, instance_routes: list[Json], epoch: str) -> Json:
    """The whole `pocketfleet` server."""
    cp = layout.control_plane
    pre: list[Json] = [
        {
            "match": [{"host": [PROBE_HOST], "path": [EPOCH_PATH]}],
            "handle": [{"handler": "static_response", "body": epoch}],
        }
    ]
    if layout.redirect_http and layout.https_listen is not None:
        port = listen_port(layout.https_listen)
        suffix = "" if port == 443 else f":{port}"
        pre.append(
            {
                "match": [{"protocol": "http", "not": [{"path": [VERIFY_PREFIX + "*"]}]}],
                "handle": [
                    {
                        "handler": "static_response",
                        "status_code": 308,
                        "headers": {
                            "Location": [
                                f"https://{{http.request.host}}{suffix}{{http.request.uri}}"
                            ]
                        },
                    }
                ],
            }
        )
    pre.append(
        {
            "match": [{"host": [f"*.{layout.domain}"], "path": [HANDOFF_PREFIX + "*"]}],
            "handle": [_proxy_to(cp)],
        }
    )
    # Go's HTTP server only accepts host names without quotes or backslashes: the placeholder
    # cannot break the JSON.
    fallback = _json_error(404, "No instance is served at {http.request.host}.", placeholders=True)
    routes: list[Json] = [
        {"@id": "pocketfleet-pre", "handle": [{"handler": "subroute", "routes": pre}]},
        {
            "@id": INSTANCES_ID,
            "handle": [{"handler": "subroute", "routes": instance_routes}],
        },
        {"match": [{"host": [layout.domain]}], "handle": [_proxy_to(cp)]},
        {"match": [{"path": [VERIFY_PREFIX + "*"]}], "handle": [_proxy_to(cp)]},
        {"@id": "pocketfleet-fallback", "handle": [fallback]},
    ]
    srv: Json = {"listen": [layout.http_listen], "routes": routes}
    if layout.https_listen is not None:
        srv["listen"].append(layout.https_listen)
        srv["tls_connection_policies"] = [{}]
    # TLS is pocketfleet's business here: certificates on demand (see `apply`), no redirects
    # or certificate management derived from the route hosts.
    srv["automatic_https"] = {"disable": True}
    if layout.access_log is not None:
        srv["logs"] = {"default_logger_name": ACCESS_LOGGER}
    return srv


def _tls_policy(layout: CaddyLayout) -> Json:
    issuer: Json = {"module": layout.tls_issuer}
    if layout.tls_issuer == "acme" and layout.acme_email:
        issuer["email"] = layout.acme_email
    return {"@id": TLS_POLICY_ID, "issuers": [issuer], "on_demand": True}


def _access_log(layout: CaddyLayout) -> Json:
    assert layout.access_log is not None
    dropped = (
        "request>uri",
        "request>headers",
        "request>tls",
        "request>remote_ip",
        "request>remote_port",
        "resp_headers",
        "user_id",
    )
    return {
        "writer": {"output": "net", "address": layout.access_log},
        "encoder": {
            "format": "filter",
            "wrap": {"format": "json"},
            "fields": {field: {"filter": "delete"} for field in dropped},
        },
        "include": [f"http.log.access.{ACCESS_LOGGER}"],
    }


def apply(config: Json, layout: CaddyLayout, instance_routes: list[Json], epoch: str) -> Json:
    """A copy of Caddy's whole `config` with pocketfleet's parts replaced (see the module
    docstring); everything else (other servers, storage, other policies) is kept."""
    new = copy.deepcopy(config) if config else {}
    new["admin"] = admin_config(layout.admin_socket)
    apps = new.setdefault("apps", {})
    http = apps.setdefault("http", {})
    http["http_port"] = listen_port(layout.http_listen)
    if layout.https_listen is not None:
        http["https_port"] = listen_port(layout.https_listen)
    http.setdefault("servers", {})[SERVER] = server(layout, instance_routes, epoch)

    tls = apps.setdefault("tls", {})
    automation = tls.setdefault("automation", {})
    # Caddy allows one catch-all policy (no subjects): with TLS, pocketfleet's is that one.
    policies = [
        p
        for p in automation.get("policies", [])
        if p.get("@id") != TLS_POLICY_ID and (p.get("subjects") or layout.https_listen is None)
    ]
    if layout.https_listen is not None:
        automation.setdefault("on_demand", {})["ask"] = layout.ask_url
        policies.append(_tls_policy(layout))
    if policies:
        automation["policies"] = policies
    else:
        automation.pop("policies", None)
    if not automation:
        tls.pop("automation", None)
    if not tls:
        apps.pop("tls")
    pki = apps.setdefault("pki", {}).setdefault("certificate_authorities", {})
    pki.setdefault("local", {})["install_trust"] = False

    logs = new.setdefault("logging", {}).setdefault("logs", {})
    default = logs.setdefault("default", {})
    default["exclude"] = sorted(set(default.get("exclude", [])) | QUIET_LOGGERS)
    if layout.access_log is not None:
        logs[ACCESS_LOGGER] = _access_log(layout)
    else:
        logs.pop(ACCESS_LOGGER, None)
    return new


def admin_config(socket: Path) -> Json:
    """Caddy's whole `admin` object: the API on the unix socket `socket` only, its config kept
    in memory (pocketfleet pushes it again after a restart). `origins` stays unset: on a unix
    socket Caddy then accepts the empty `Host` only (see `proxy.caddy.admin`)."""
    return {"listen": admin_listen(socket), "config": {"persist": False}}


def bootstrap(admin_socket: Path, storage_root: str, log_file: str) -> Json:
    """The config a supervised Caddy starts with: its admin endpoint (on `admin_socket`),
    storage and its own log (rolled by Caddy at 10 MB, 3 kept); pocketfleet pushes the rest
    (see `apply`)."""
    writer = {"output": "file", "filename": log_file, "roll_size_mb": 10, "roll_keep": 3}
    return {
        "admin": admin_config(admin_socket),
        "storage": {"module": "file_system", "root": storage_root},
        "logging": {"logs": {"default": {"writer": writer, "exclude": sorted(QUIET_LOGGERS)}}},
    }
