"""MLSTM inside a hand-written training step on each backend, checked
against `model.fit`.

What it shows: the training loop of Keras's guides "Writing a training loop
from scratch" for JAX (`model.stateless_call` under `jax.value_and_grad`,
`optimizer.stateless_apply`, all in `jax.jit`), TensorFlow
(`tf.GradientTape` in a `tf.function`) and PyTorch (`loss.backward()` and
`optimizer.apply`), around a model with an `MLSTM` layer. The loop runs on
whichever backend Keras uses. Before training, one hand-written step and one
`train_on_batch` step from the same weights are compared: the weights after
them agree.

The task (generated): classify sequences of 32 steps of 4 features by the
sign of the sum of their first feature.

Runtime: under 30 s on an idle 2-core CPU (the command below; measured
12 s and 17 s on JAX on two days, 26 s on TensorFlow, 21 s on PyTorch;
held-out accuracy 0.97-0.98 (0.977 on JAX), and the one-step check bitwise
equal on all three); longer with other work on the cores. `--smoke` runs
in seconds.
Run: `KERAS_BACKEND=torch python examples/custom_training_loop.py`.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_mlstm import MLSTM  # noqa: E402
from keras_mlstm import config  # noqa: E402

BACKEND = keras.backend.backend()


def make_data(count, rng):
    x = rng.normal(size=(count, 32, 4)).astype("float32")
    y = (x[:, :, 0].sum(axis=1) > 0).astype("int32")
    return x, y


def build_model(units, seed):
    return keras.Sequential(
        [
            keras.Input((32, 4)),
            MLSTM(units, seed=seed),
            keras.layers.Dense(2),
        ]
    )


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def jax_trainer(model, optimizer):
    """`(step, sync)`: `step(x, y) -> loss` trains `model` by one step;
    `sync()` makes the model hold what the steps learned."""
    import jax

    def loss_and_updates(trainable, non_trainable, x, y):
        logits, non_trainable = model.stateless_call(
            trainable, non_trainable, x, training=True
        )
        return LOSS(y, logits), non_trainable

    gradient = jax.value_and_grad(loss_and_updates, has_aux=True)

    @jax.jit
    def train_step(state, x, y):
        trainable, non_trainable, optimizer_variables = state
        (loss, non_trainable), grads = gradient(trainable, non_trainable, x, y)
        trainable, optimizer_variables = optimizer.stateless_apply(
            optimizer_variables, grads, trainable
        )
        return loss, (trainable, non_trainable, optimizer_variables)

    optimizer.build(model.trainable_variables)
    state = [
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    ]

    def step(x, y):
        loss, state[:] = train_step(state, x, y)
        return float(loss)

    def sync():
        """Write the values back into the model's and the optimizer's
        variables, once training is over (as Keras's JAX guide does)."""
        for variables, values in zip(
            (
                model.trainable_variables,
                model.non_trainable_variables,
                optimizer.variables,
            ),
            state,
            strict=True,
        ):
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)

    return step, sync


def tensorflow_trainer(model, optimizer):
    import tensorflow as tf

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_weights)
        optimizer.apply(grads, model.trainable_weights)
        return loss

    return (lambda x, y: float(train_step(x, y))), lambda: None


def torch_trainer(model, optimizer):
    import torch

    def step(x, y):
        loss = LOSS(y, model(x, training=True))
        model.zero_grad()
        loss.backward()
        grads = [v.value.grad for v in model.trainable_weights]
        with torch.no_grad():
            optimizer.apply(grads, model.trainable_weights)
        return float(loss)

    return step, lambda: None


TRAINERS = {
    "jax": jax_trainer,
    "tensorflow": tensorflow_trainer,
    "torch": torch_trainer,
}


def one_step_difference(units, seed, x, y):
    """Largest weight difference after one hand-written step and one
    `train_on_batch` step from the same weights (SGD), and the largest
    change that step made to a weight."""
    hand = build_model(units, seed)
    fitted = build_model(units, seed)
    before = hand.get_weights()
    fitted.set_weights(before)
    step, sync = TRAINERS[BACKEND](hand, keras.optimizers.SGD(0.1))
    step(x, y)
    sync()
    fitted.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
    fitted.train_on_batch(x, y)

    def largest(first, second):
        return max(
            float(np.max(np.abs(a - b)))
            for a, b in zip(first, second, strict=True)
        )

    after = hand.get_weights()
    return largest(after, fitted.get_weights()), largest(after, before)


def main(argv=None):
    """Checks one step against `train_on_batch`, then trains; returns the
    difference, the losses and the held-out accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if not args.smoke:  # on JAX, reruns read the compiled steps back
        config.enable_compilation_cache()
    if args.smoke:
        args.steps, args.units = 3, 8
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x, y = make_data(64 * max(args.steps, 1), rng)

    difference, change = one_step_difference(
        args.units, args.seed, x[:64], y[:64]
    )
    print(
        f"{BACKEND}: one hand-written step against train_on_batch: largest "
        f"weight difference {difference:.1e} (the step changed weights by "
        f"up to {change:.1e})"
    )

    model = build_model(args.units, args.seed)
    step, sync = TRAINERS[BACKEND](model, keras.optimizers.Adam(3e-3))
    losses = []
    for index in range(args.steps):
        batch = slice(64 * index, 64 * (index + 1))
        losses.append(step(x[batch], y[batch]))
        if index % 50 == 0 or index == args.steps - 1:
            print(f"step {index:4d}  loss {losses[-1]:.4f}")
    sync()
    x_test, y_test = make_data(1000, rng)
    predicted = np.argmax(model.predict_on_batch(x_test), axis=-1)
    accuracy = float(np.mean(predicted == y_test))
    print(f"held-out accuracy: {accuracy:.3f} (chance: 0.5)")
    return {
        "difference": difference,
        "change": change,
        "losses": losses,
        "accuracy": accuracy,
    }


if __name__ == "__main__":
    main()
