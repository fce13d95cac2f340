"""The robot side: a fixed-rate controller process running an exported policy behind the safety layer.

safety.py (every check, pure functions), limits.py (deploy/<task>.yaml), shm.py and channels.py
(shared-memory slots), robot.py (RobotInterface + simulated robot process), controller.py (the
loop), supervisor.py (starts, watches, stops), runlog.py (the per-run log), rt.py (timing helpers).
See docs/deploy.md.
"""
