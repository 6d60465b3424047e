"""The web dashboard: server-rendered pages (Jinja2) over the control plane's services, with
small progressive enhancement (htmx, vendored by the install step, and `static/app.js`).

Every page works without JavaScript; with it, statuses and logs follow live and the create
form checks the name as it is typed. Pages call `control_plane` services only.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from dashboard import (
    account_pages,
    auth_pages,
    deploy_pages,
    domain_pages,
    file_pages,
    instance_page,
    instances_pages,
    job_pages,
    lifecycle_pages,
    node_pages,
    operator_pages,
)
from dashboard.web import STATIC_DIR


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard from `app` at `/` (next to the API under `/api`)."""
    pages = (auth_pages, instances_pages, instance_page, lifecycle_pages, account_pages)
    operators = (operator_pages, node_pages)
    for module in (*pages, deploy_pages, domain_pages, file_pages, job_pages, *operators):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
