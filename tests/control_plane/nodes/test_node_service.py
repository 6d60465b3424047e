"""`NodeService` refusals that need no swarm: a manager that does not answer is a 503, a join
command on a driver without a swarm a 409 (the rest: tests/control_plane/api/test_nodes.py and
tests/control_plane/drivers/test_swarm_driver.py)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from control_plane.db.engine import SessionFactory
from control_plane.nodes.service import NodeService
from control_plane.services.errors import Conflict, Unavailable
from control_plane.settings import Settings

NO_DATABASE = cast(SessionFactory, None)  # join_command never reads it


async def test_an_unreachable_manager_is_unavailable(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", driver="swarm", docker_host=f"unix://{tmp_path}/none.sock"
    )
    with pytest.raises(Unavailable, match=r"does not answer|refused") as refused:
        await NodeService(settings, NO_DATABASE).join_command()
    assert refused.value.status == 503


@pytest.mark.parametrize("driver", ["process", "docker"])
async def test_no_join_command_without_a_swarm(tmp_path: Path, driver: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", driver=driver)  # type: ignore[arg-type]
    with pytest.raises(Conflict, match=f"PF_DRIVER={driver}") as refused:
        await NodeService(settings, NO_DATABASE).join_command()
    assert refused.value.status == 409
