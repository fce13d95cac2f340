"""A deliberately broken driver, to show the drill kit can fail (an instrument must be able to fail)."""

from __future__ import annotations

from awac_robot.control.drivers.sim import SimDriver


class RecklessDriver(SimDriver):
    """The simulated robot whose hold does not hold: it keeps applying whatever it applied last."""

    def hold(self) -> None:
        self._step(self.applied)
