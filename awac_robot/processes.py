"""Child processes that live exactly as long as their parent.

Shared by the deployment's robot and controller processes and the trainer's workers: a child
left running after its parent is gone holds a core (and, for a robot, an actuator) that
nobody owns any more, and a parent killed with SIGKILL runs no cleanup that could stop it.
"""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send this process `sig` when its parent dies (prctl PR_SET_PDEATHSIG).

    SIGTERM lets a child stop cleanly (the controller holds the robot first); SIGKILL also ends
    a child that is stopped or stuck. A child that has already lost its parent before this call
    (the race) gets `sig` at once.
    Where prctl does not exist the caller must notice the parent's death itself: the control
    loops compare os.getppid() with `parent_pid` every period, the trainer's workers read the
    end of their pipe.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
