"""A small seeded training run of a model with an MLSTM layer, run as its
own process by `tests/test_interruption.py` (set KERAS_BACKEND: Keras fixes
its backend at import).

    python tests/interruption_worker.py --dir DIR [--save-freq N|epoch]
        [--kill-after-batch K] [--replay-from-batch G]

It trains `EPOCHS` epochs of `STEPS_PER_EPOCH` batches under
`keras.callbacks.BackupAndRestore(DIR/backup, save_freq)` and writes:
`DIR/start.npz`, the state when training starts (after BackupAndRestore
has restored a backup, if there is one); `DIR/final.npz`, the state at the
end; `DIR/trace.txt`, one line `pid epoch batch loss` per trained batch,
written as it goes so that it survives a kill. A state is the model's
weights (`w0`, `w1`, ...) and the optimizer's variables (`o0`, ...: the
step count, the learning rate and Adam's moments).

`--kill-after-batch K`: SIGKILL the process right after its K-th batch
(counted from 1), once per directory (a marker file remembers it): the same
command run again restarts from the backup and finishes, as a preempted job
that is started again as is.

`--replay-from-batch G`: also keep the state after batch G
(`DIR/snapshot.npz`); after training, restore it in memory and train again
from the start of batch G's epoch to the end (`DIR/replay.npz`). This is
what a restart from a backup taken after batch G does, without the kill,
the files or the new process.
"""

import argparse
import os
import signal

import keras
import numpy as np

from keras_mlstm import MLSTM

SEED = 1234
SAMPLES, LENGTH, FEATURES = 64, 12, 4
BATCH_SIZE = 8
STEPS_PER_EPOCH = SAMPLES // BATCH_SIZE
EPOCHS = 3


class EpochShuffledBatches(keras.utils.PyDataset):
    """Batches of `(x, y)` in an order drawn from `(seed, epoch)` only.

    An epoch's order must not depend on what this process ran before: a
    restarted run starts at a later epoch, in a fresh process. Keras's own
    shuffling draws from global generators (`fit(shuffle=True)` permutes
    arrays with NumPy's, or tf.data's on TensorFlow, and the batches of a
    PyDataset with Python's `random`), so after a restart it would replay
    the first epoch's order. `SetEpoch` sets `epoch`, as PyTorch's
    `DistributedSampler.set_epoch` does.
    """

    def __init__(self, x, y, seed):
        super().__init__()
        self.x, self.y, self.seed = x, y, seed
        self.epoch = 0

    def __len__(self):
        return len(self.x) // BATCH_SIZE

    def __getitem__(self, index):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(
            len(self.x)
        )
        rows = order[index * BATCH_SIZE : (index + 1) * BATCH_SIZE]
        return self.x[rows], self.y[rows]


class SetEpoch(keras.callbacks.Callback):
    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.epoch = epoch


class Trace(keras.callbacks.Callback):
    """Writes `start.npz` and `trace.txt`; kills the process after batch
    `kill_after`; keeps the state after batch `snapshot_after`."""

    def __init__(self, directory, kill_after=None, snapshot_after=None):
        super().__init__()
        self.directory = directory
        self.kill_after = kill_after
        self.snapshot_after = snapshot_after
        self.snapshot = None
        self.epoch = None
        self.count = 0

    def on_train_begin(self, logs=None):
        # Called after BackupAndRestore's `on_train_begin`, which restores.
        save_state(state_of(self.model), self.path("start.npz"))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.count += 1
        with open(self.path("trace.txt"), "a") as trace:
            trace.write(f"{os.getpid()} {self.epoch} {batch} {logs['loss']}\n")
        if self.count == self.kill_after and not os.path.exists(
            self.path("killed")
        ):
            open(self.path("killed"), "w").close()
            # A hard kill: no exception, no `finally`, no `on_train_end`.
            os.kill(os.getpid(), signal.SIGKILL)
        if self.count == self.snapshot_after:
            self.snapshot = state_of(self.model)

    def path(self, name):
        return os.path.join(self.directory, name)


def state_of(model):
    """The model's weights and the optimizer's variables, as NumPy."""
    weights = [keras.ops.convert_to_numpy(v) for v in model.weights]
    optimizer = [
        keras.ops.convert_to_numpy(v) for v in model.optimizer.variables
    ]
    return weights, optimizer


def save_state(state, path):
    weights, optimizer = state
    arrays = {f"w{i}": value for i, value in enumerate(weights)}
    arrays.update({f"o{i}": value for i, value in enumerate(optimizer)})
    np.savez(path, **arrays)


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, LENGTH, FEATURES)).astype("float32")
    # Targets that need a memory: sums over the first and the last steps.
    y = np.stack([x[:, :3, 0].sum(1), x[:, -3:, 1].sum(1)], axis=-1)
    return x, y


def build_model():
    # One MLSTM layer: a second one doubles JAX's compile time, in every
    # process, and adds nothing a kill and a restart could lose.
    model = keras.Sequential(
        [
            keras.Input((LENGTH, FEATURES)),
            MLSTM(16),
            keras.layers.Dense(2),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--save-freq", default="epoch")
    parser.add_argument("--kill-after-batch", type=int)
    parser.add_argument("--replay-from-batch", type=int)
    args = parser.parse_args()
    save_freq = args.save_freq
    if save_freq != "epoch":
        save_freq = int(save_freq)

    keras.utils.set_random_seed(SEED)
    x, y = data()
    dataset = EpochShuffledBatches(x, y, SEED)
    model = build_model()
    backup = keras.callbacks.BackupAndRestore(
        os.path.join(args.dir, "backup"), save_freq=save_freq
    )
    trace = Trace(args.dir, args.kill_after_batch, args.replay_from_batch)
    # `shuffle=False`: the dataset shuffles itself, restartably.
    model.fit(
        dataset,
        epochs=EPOCHS,
        callbacks=[SetEpoch(dataset), backup, trace],
        shuffle=False,
        verbose=0,
    )
    save_state(state_of(model), os.path.join(args.dir, "final.npz"))

    if args.replay_from_batch is not None:
        save_state(trace.snapshot, os.path.join(args.dir, "snapshot.npz"))
        weights, optimizer = trace.snapshot
        model.set_weights(weights)
        for variable, value in zip(
            model.optimizer.variables, optimizer, strict=True
        ):
            variable.assign(value)
        model.fit(
            dataset,
            initial_epoch=(args.replay_from_batch - 1) // STEPS_PER_EPOCH,
            epochs=EPOCHS,
            callbacks=[SetEpoch(dataset)],
            shuffle=False,
            verbose=0,
        )
        save_state(state_of(model), os.path.join(args.dir, "replay.npz"))


if __name__ == "__main__":
    main()
