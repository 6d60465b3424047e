"""The machines instances run on: Swarm nodes with pocketfleet's label (`swarm.py`), where a
new instance goes (`placement.py`), and the operators' view of them (`service.py`, served as
`GET /api/nodes` and `pocketfleet nodes`)."""
