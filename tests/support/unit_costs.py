"""What each work unit of the suite costs: wall seconds and CPU seconds, for `--units N`.

The suite runs on few cores, so its length is mostly CPU: a unit that sleeps costs a worker
slot, one that starts servers costs the machine. Each test phase's report carries the CPU the
worker and its children used since the previous report (`getrusage`, self + children: a
child's CPU counts once it has been waited for, so a server a module fixture started is
charged to the phase that stopped it, in that unit). The controller adds them up per unit
(`scheduling.unit_of`) and, with `--units N`, prints the N dearest units by CPU with their
wall seconds at the end of the run.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field

import pytest

from tests.support.scheduling import unit_of

REPORT_ATTR = "pf_cpu_s"


def cpu_seconds() -> float:
    """CPU used so far by this process and the children it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class PhaseMeter:
    """On a worker: the CPU since the previous phase's report."""

    last: float = field(default_factory=cpu_seconds)

    def take(self) -> float:
        now = cpu_seconds()
        spent, self.last = now - self.last, now
        return round(spent, 3)


@dataclass
class UnitCosts:
    """On the controller: seconds and CPU seconds per unit."""

    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def add(self, report: pytest.TestReport) -> None:
        unit = unit_of(report.nodeid)
        self.wall[unit] = self.wall.get(unit, 0.0) + report.duration
        spent = getattr(report, REPORT_ATTR, None)
        if isinstance(spent, (int, float)):
            self.cpu[unit] = self.cpu.get(unit, 0.0) + float(spent)

    def lines(self, top: int) -> list[str]:
        total_cpu, total_wall = sum(self.cpu.values()), sum(self.wall.values())
        rows = sorted(self.cpu.items(), key=lambda kv: -kv[1])[:top]
        out = [f"{'cpu s':>8} {'wall s':>8}  unit  (all units: {total_cpu:.0f} cpu s, "
               f"{total_wall:.0f} wall s)"]  # fmt: skip
        out += [f"{cpu:8.1f} {self.wall.get(unit, 0.0):8.1f}  {unit}" for unit, cpu in rows]
        return out
