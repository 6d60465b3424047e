"""pocketfleet's images on every node of a swarm (`PF_DRIVER=swarm`), without a registry.

An engine's image is built on the manager's engine (`docker_images.EngineImages`). Before a
service is pinned to another node, `NodeImages.ensure` makes sure that node's engine holds the
image: when it does not, the image is streamed from the manager's engine (`docker save`, the
SDK's `get_image`) into the node's (`docker load`), chunk by chunk (never whole in memory).
`docker load` keeps the image's id, which the service names (`sha256:...`), so Swarm's agent
on the node finds it there and pulls nothing.

- The node's engine API is `PF_SWARM_NODE_ENGINES[NODE]`, NODE being the node's id or its
  hostname (`unix://`, `ssh://` through the `ssh` client, or `tcp://` on a private network:
  the API is root on that machine, and is used only to inspect and load images).
- The manager's own node needs nothing (the image was built there). A node without an entry
  cannot be checked: it must hold the image already (else its task fails with "No such
  image", which the start reports).
- A node's engine that does not answer, or refuses the load, is a `StartError` naming it.
- What was checked (node, image id) is remembered for the driver's lifetime (an image is never
  removed by pocketfleet).

Blocking (engine API calls): the driver calls it from its threads.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import docker
import docker.errors
import requests.exceptions

from control_plane.drivers.base import StartError

log = logging.getLogger(__name__)

_API_TIMEOUT_S = 300  # a load of a large image takes a while on a slow link
_CHUNK = 1 << 20


class NodeImages:
    """Loads images into the engines of a swarm's nodes (see the module docstring)."""

    def __init__(self, engines: dict[str, str]) -> None:
        self.engines = dict(engines)
        self._checked: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def engine_of(self, node: str, hostname: str) -> str | None:
        """The engine API of `node` (by id first, then by hostname), None when unknown."""
        return self.engines.get(node) or self.engines.get(hostname)

    def ensure(self, manager: Any, node: str, image_id: str, tag: str) -> None:
        """Make `node`'s engine hold the image `image_id` (`tag` on the manager's engine),
        loading it from the manager's engine when it does not. Raises `StartError`."""
        if (node, image_id) in self._checked:
            return
        with self._lock:
            if (node, image_id) in self._checked:
                return
            hostname = str(
                ((manager.inspect_node(node).get("Description") or {}).get("Hostname")) or ""
            )
            url = self.engine_of(node, hostname)
            if url is None:
                log.info("node %s (%s): no engine API known; its image must be there", node, tag)
                self._checked.add((node, image_id))
                return
            self._load_if_missing(manager, node, url, image_id, tag)
            self._checked.add((node, image_id))

    def _load_if_missing(self, manager: Any, node: str, url: str, image_id: str, tag: str) -> None:
        try:
            target = docker.APIClient(
                base_url=url,
                version="auto",
                timeout=_API_TIMEOUT_S,
                use_ssh_client=url.startswith("ssh://"),
            )
        except docker.errors.DockerException as err:
            raise StartError(f"the engine of node {node} at {url} does not answer: {err}") from err
        try:
            try:
                target.inspect_image(image_id)  # type: ignore[no-untyped-call]  # (the stubs)
                return
            except docker.errors.ImageNotFound:
                pass
            began = time.monotonic()
            sent = 0

            def chunks() -> Any:
                nonlocal sent
                for chunk in manager.get_image(tag, chunk_size=_CHUNK):
                    sent += len(chunk)
                    yield chunk

            answer = target.load_image(chunks())  # type: ignore[no-untyped-call]
            for line in answer or []:
                if isinstance(line, dict) and line.get("errorDetail"):
                    raise StartError(f"node {node} refused the image {tag}: {line['errorDetail']}")
            target.inspect_image(image_id)  # type: ignore[no-untyped-call]  # (the stubs)
            took_ms = (time.monotonic() - began) * 1000
            log.info("node %s: loaded %s (%d bytes) in %.0f ms", node, tag, sent, took_ms)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
            raise StartError(f"the image {tag} could not be loaded on node {node}: {err}") from err
        finally:
            target.close()
