"""Routing of NAME.domain to instances: the route table and the embedded ASGI proxy."""
