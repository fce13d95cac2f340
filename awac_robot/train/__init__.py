"""The AWAC trainer: networks, the update, the replay, the loop, configs and checkpoints.

Threads: one by default, because with libgomp's spin-waiting two threads fall from ~130 to a
few updates/s whenever any other process (a second run, the run's own workers) wants a core;
so the update keeps one core and the evaluation and exploration workers (train/eval_worker.py,
train/explorer.py) use the other. docs/defaults.md has the figures.
"""
