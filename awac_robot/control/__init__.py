"""The robot side: a fixed-rate controller process running an exported policy behind the safety layer.

safety.py (every check, pure functions), limits.py (deploy/<task>.yaml and the ranges it may take),
shm.py and channels.py (shared-memory slots), robot.py (RobotInterface + simulated robot process),
watchdog.py (the robot process's own safety: holds when commands stop being fresh), controller.py
(the loop), supervisor.py (starts, watches, stops), runlog.py (run logs written row by row), rt.py
(timing helpers). See docs/deploy.md.
"""
