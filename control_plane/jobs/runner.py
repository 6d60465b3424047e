"""One run of a job: its HTTP request sent through the proxy, tried again on failure.

The request goes to the control plane's own HTTP address (`PF_HTTP`, a wildcard host made
loopback) with `Host: NAME.DOMAIN`, so it takes the path of any client's request: the embedded
proxy wakes a hibernated instance and holds the request until it answers, and counts it as
the instance's activity (it then sleeps again after its idle time, like after any request).

Contract of `JobRunner.run`: at most `PF_JOB_ATTEMPTS` attempts, each bounded by the job's
`timeout_s` (connection, wake, answer and reading the first bytes of the body all included);
an attempt that times out, gets no answer (`error`) or a 5xx is tried again after a back-off of
`PF_JOB_RETRY_WAIT_S`, doubled each time. The `RunOutcome` is the last attempt's, with the
first `RESPONSE_KEPT_BYTES` of its body (decoded as UTF-8, NUL and invalid bytes replaced) and
the time from the first attempt's start to the last one's end. It never raises for what the
instance does; cancellation propagates. The httpx client can be given another transport.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx

from control_plane.caddy_frontend import control_plane_dial
from control_plane.jobs.models import RESPONSE_KEPT_BYTES
from control_plane.settings import Settings

USER_AGENT = "pocketfleet-jobs/1"
JOB_HEADER = "X-Pocketfleet-Job"
ERROR_MAX = 500


@dataclass(frozen=True)
class JobRequest:
    """What one run sends: to `host` (an instance's `NAME.DOMAIN`) through the proxy."""

    job_id: str
    host: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    timeout_s: float = 30.0


@dataclass(frozen=True)
class RunOutcome:
    status: str  # "200", ..., "error", "timeout"
    http_status: int | None
    response: str
    error: str
    attempts: int
    duration_ms: int

    @property
    def retryable(self) -> bool:
        """Worth another attempt: no answer (an error or a timeout), or a 5xx."""
        return self.http_status is None or self.http_status >= 500


def _text(raw: bytes) -> str:
    """The kept bytes as text a database column takes (PostgreSQL refuses NUL)."""
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _headers(request: JobRequest) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    if request.body is not None:
        headers["Content-Type"] = "application/json"
    names = {name.lower(): name for name in headers}
    for name, value in request.headers.items():
        headers.pop(names.get(name.lower(), ""), None)
        headers[name] = value
    headers[JOB_HEADER] = request.job_id
    headers["Host"] = request.host
    return headers


class JobRunner:
    def __init__(
        self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.attempts = settings.job_attempts
        self.retry_wait_s = settings.job_retry_wait_s
        self._client = httpx.AsyncClient(
            base_url=f"http://{control_plane_dial(settings)}",
            transport=transport,
            timeout=None,  # each attempt is bounded as a whole, see `_attempt`
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def run(self, request: JobRequest) -> RunOutcome:
        """The job's request, tried up to `attempts` times (see the module's docstring)."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            status, http_status, response, error = await self._attempt(request)
            outcome = RunOutcome(
                status=status,
                http_status=http_status,
                response=response,
                error=error[:ERROR_MAX],
                attempts=attempt,
                duration_ms=round((time.monotonic() - started) * 1000),
            )
            if not outcome.retryable or attempt >= self.attempts:
                return outcome
            await asyncio.sleep(self.retry_wait_s * 2 ** (attempt - 1))

    async def _attempt(self, request: JobRequest) -> tuple[str, int | None, str, str]:
        """(status, HTTP status, first bytes of the body, error) of one attempt."""
        kept = bytearray()
        try:
            async with asyncio.timeout(request.timeout_s):
                async with self._client.stream(
                    request.method,
                    request.path,
                    headers=_headers(request),
                    content=request.body.encode() if request.body is not None else None,
                ) as answer:
                    async for chunk in answer.aiter_bytes():
                        kept += chunk
                        if len(kept) >= RESPONSE_KEPT_BYTES:
                            break
        except TimeoutError:
            return (
                "timeout",
                None,
                _text(bytes(kept[:RESPONSE_KEPT_BYTES])),
                f"no complete answer within {request.timeout_s:g} s",
            )
        except httpx.HTTPError as exc:
            return (
                "error",
                None,
                "",
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            )
        return (
            str(answer.status_code),
            answer.status_code,
            _text(bytes(kept[:RESPONSE_KEPT_BYTES])),
            "",
        )
