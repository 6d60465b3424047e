"""pocketfleet's part of Caddy's config: what `apply` owns, keeps and replaces."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from proxy.caddy.config import (
    INSTANCES_INDEX,
    SERVER,
    TLS_POLICY_ID,
    CaddyLayout,
    Json,
    apply,
    bootstrap,
    host_id,
    instance_route,
)
from proxy.routes import Route, RouteState, Upstream

LAYOUT = CaddyLayout(
    domain="example.com",
    control_plane="127.0.0.1:8090",
    admin_socket=Path("/run/pocketfleet-caddy/admin.sock"),
    http_listen=":80",
    https_listen=":443",
    tls_issuer="acme",
    acme_email="ops@example.com",
    ask_url="http://127.0.0.1:8090/api/tls/ask",
    access_log="udp/127.0.0.1:9999",
)
UP = Route("a.example.com", "i1", RouteState.UP, Upstream("127.0.0.1", 20001))


def test_apply_keeps_what_others_own_and_replaces_the_catch_all_policy() -> None:
    other_site = {"listen": [":8443"], "routes": [{"handle": [{"handler": "static_response"}]}]}
    theirs = {"subjects": ["shop.example.org"], "issuers": [{"module": "acme"}]}
    config = {
        "admin": {"listen": "unix//run/pocketfleet-caddy/admin.sock"},
        "storage": {"module": "file_system", "root": "/var/lib/caddy"},
        "apps": {
            "http": {"servers": {"other": other_site}},
            "tls": {"automation": {"policies": [theirs, {"issuers": [{"module": "internal"}]}]}},
        },
    }
    new = apply(config, LAYOUT, [instance_route(UP, LAYOUT)], "e1")

    assert new["storage"] == config["storage"]
    assert new["apps"]["http"]["servers"]["other"] == other_site
    policies = new["apps"]["tls"]["automation"]["policies"]
    assert policies[0] == theirs  # a site's own policy still matches first
    assert policies[-1]["@id"] == TLS_POLICY_ID and policies[-1]["on_demand"] is True
    assert policies[-1]["issuers"] == [{"module": "acme", "email": "ops@example.com"}]
    assert len(policies) == 2  # Caddy allows a single catch-all: ours replaced theirs
    assert new["apps"]["tls"]["automation"]["on_demand"]["ask"] == LAYOUT.ask_url
    assert new["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"] is False
    assert config["apps"]["http"]["servers"] == {"other": other_site}  # input not modified


def test_server_layout_instance_list_and_fallback() -> None:
    server = apply({}, LAYOUT, [instance_route(UP, LAYOUT)], "e1")["apps"]["http"]["servers"][
        SERVER
    ]
    assert server["listen"] == [":80", ":443"]
    assert server["tls_connection_policies"] == [{}]
    instances = server["routes"][INSTANCES_INDEX]["handle"][0]["routes"]
    assert [r["@id"] for r in instances] == [host_id("a.example.com")]
    fallback = server["routes"][-1]["handle"][0]
    assert fallback["status_code"] == 404
    assert "{http.request.host}" in fallback["body"]


def test_plain_http_only_has_no_tls_parts() -> None:
    layout = CaddyLayout(
        "example.com", "127.0.0.1:8090", LAYOUT.admin_socket, ":8080", None, access_log=None
    )
    new = apply({}, layout, [], "e1")
    server = new["apps"]["http"]["servers"][SERVER]
    assert server["listen"] == [":8080"] and "tls_connection_policies" not in server
    assert "tls" not in new["apps"] and "logs" not in server


def test_instance_routes_by_state() -> None:
    up = instance_route(UP, LAYOUT, ("shop.example.org",))
    assert up["match"] == [{"host": ["a.example.com", "shop.example.org"]}]
    assert up["handle"] == [
        {
            "handler": "reverse_proxy",
            "upstreams": [{"dial": "127.0.0.1:20001"}],
            "load_balancing": {"try_duration": "3s", "try_interval": "100ms"},
        }
    ]

    asleep = Route("a.example.com", "i1", RouteState.ASLEEP)
    handler = instance_route(asleep, LAYOUT)["handle"][0]
    assert handler["upstreams"] == [{"dial": "127.0.0.1:8090"}]
    assert handler["headers"]["request"]["set"]["Host"] == ["a.example.com"]

    draining = instance_route(asleep, LAYOUT, draining=Upstream("127.0.0.1", 20001))
    keep, wake = draining["handle"][0]["routes"]
    assert keep["match"] == [{"not": [{}]}]  # never matches: only keeps the upstream counted
    assert wake["handle"][0]["upstreams"] == [{"dial": "127.0.0.1:8090"}]

    stopped = Route("a.example.com", "i1", RouteState.STOPPED, None, "Instance {a} is stopped.")
    body = instance_route(stopped, LAYOUT)["handle"][0]
    assert body["status_code"] == 503
    assert orjson.loads(body["body"])["message"] == "Instance (a) is stopped."  # no placeholder


def test_bootstrap_is_admin_and_storage_only() -> None:
    config = bootstrap(Path("/srv/caddy/admin.sock"), "/srv/caddy", "/srv/caddy/caddy.log")
    assert config["admin"] == {"listen": "unix//srv/caddy/admin.sock", "config": {"persist": False}}
    assert "apps" not in config


@pytest.mark.parametrize(
    "theirs",
    [
        {"listen": "127.0.0.1:2019"},  # TCP, no authentication
        {"listen": "unix//run/pocketfleet-caddy/admin.sock", "remote": {"listen": ":2021"}},
        {"disabled": True},
        {"listen": "unix//tmp/elsewhere.sock", "origins": ["evil.example"]},
        {"config": {"load": {"module": "http", "url": "http://10.0.0.1/config"}}},
    ],
)
def test_every_pushed_config_keeps_the_admin_api_on_our_socket_only(theirs: Json) -> None:
    """Whatever `admin` Caddy holds (or someone pushed), pocketfleet's push replaces it: the
    unix socket only, no TCP listener, no remote admin, no config loader."""
    new = apply({"admin": theirs}, LAYOUT, [], "e1")
    assert new["admin"] == {
        "listen": "unix//run/pocketfleet-caddy/admin.sock",
        "config": {"persist": False},
    }
    assert apply({}, LAYOUT, [], "e1")["admin"] == new["admin"]  # also when none was there
