"""Service refusals as HTTP: the right status and a JSON body saying what to fix."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from control_plane.services.errors import ServiceError, TooManyRequests, Unauthorized


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        headers: dict[str, str] = {}
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        body: dict[str, object] = {"detail": exc.message, "code": exc.code}
        if exc.field:
            body["field"] = exc.field
        return JSONResponse(body, status_code=exc.status, headers=headers)
