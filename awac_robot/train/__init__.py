"""The AWAC trainer: networks, the update, the replay, the loop, configs and checkpoints.

Threads (measured with bench/updates.py, batch 256, on the 2-core dev machine): with one
other job running, 2 threads ran 137 updates/s with libgomp's default spin-waiting and 57
with OMP_WAIT_POLICY=PASSIVE; with the cores oversubscribed (load ~4) it was the other way
round, 10 vs 69, and 1 thread ran ~50-90. So the default stays "every core, spin-waiting",
and on a busy shared machine `threads: 1` in the config is the robust choice.
"""
