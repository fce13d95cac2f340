"""The AWAC trainer: networks, the update, the replay, the loop, configs and checkpoints.

Threads (measured with bench/updates.py, batch 256, on the 2-core dev machine): with one
other job running, 2 threads ran 137 updates/s with libgomp's default spin-waiting and 57
with OMP_WAIT_POLICY=PASSIVE; with the cores oversubscribed (load ~4) it was the other way
round, 10 vs 69, and 1 thread ran ~50-90. Beside one other busy process (a second training
run) 2 threads fell to 2.2 updates/s while 1 thread ran 90. A 40x cliff whenever anything
else runs is worse than giving up ~35% on an idle machine, so the default is `threads: 1`;
set `threads: 0` (every core) on a machine dedicated to training. Measured again on
2026-12-01 beside other helpers' runs (load 4.3-5.1, batch 256): 1 thread 78-81 updates/s, 2
threads 2.4-6.7 with spinning and 54-56 with OMP_WAIT_POLICY=PASSIVE (docs/benchmarks.md,
"Speed of the update"). The run's own evaluation worker counts as "anything else" too: beside it 2
threads ran 4.4 updates/s and 1 thread 30 (load ~5; docs/benchmarks.md, "Wall time of a
finetune"), so the update keeps one core and the evaluation and exploration workers
(train/eval_worker.py, train/explorer.py) use the other.
"""
