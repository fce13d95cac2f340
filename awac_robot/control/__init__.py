"""The robot side: a fixed-rate controller process running an exported policy behind the safety layer.

safety.py (every check, pure functions), limits.py (deploy/<task>.yaml and the ranges it may take),
shm.py and channels.py (shared-memory slots), robot.py (RobotInterface + the robot process around any
driver), drivers/ (the driver contract; the simulated robot, a robot over the network; finding one by
--robot), watchdog.py (the robot process's own safety: holds when commands stop being fresh, limits,
holds on stale state), controller.py (the loop), supervisor.py (starts, watches, stops), drills.py (the
fault drills of `check-robot`), runlog.py (run logs written row by row), rt.py (timing helpers).
See docs/deploy.md.
"""
