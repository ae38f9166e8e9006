"""Ctrl-C during a distributed fit: every process stops after the same step and keeps the same weights.

    mpiexec -n 2 python interrupt.py OUT     (then SIGINT to mpiexec, which forwards it to every process)

Each process writes its process id to OUT/pid<R> (to send SIGINT to one of them),
rank 0 prints ``training`` once a few steps are done; steps are slowed down so
that the signal arrives mid-fit. Writes OUT/rank<R>.npz.
"""

import os
import signal
import time

import numpy as np
from _common import count_training_steps, image_data, start, tiny_cnn, weights

EPOCHS, N, BATCH = 1000, 64, 8

comm, rank, out = start()
(out / f"pid{rank}").write_text(str(os.getpid()))


def slowly(step):
    if step == 3 and rank == 0:
        print("training", flush=True)
    time.sleep(0.02)


X, t = image_data(N)
cnn = tiny_cnn()
steps = count_training_steps(cnn, slowly)
scores = cnn.fit(X, t, epochs=EPOCHS, batch_size=BATCH, verbose=False, comm=comm)
epochs_done = int(np.sum(np.isfinite(scores["train_error"])))
handler_restored = signal.getsignal(signal.SIGINT) is signal.default_int_handler
np.savez(out / f"rank{rank}.npz", steps=len(steps), epochs_done=epochs_done, steps_per_epoch=N // BATCH,
         handler_restored=handler_restored, **weights(cnn))
