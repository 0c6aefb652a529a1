"""Train a small character-level mLSTM language model and sample from it.

The data is ``examples/data/lighthouse.txt``, shipped with the repository.
The model stacks two ``keras_mlstm.MLSTM`` layers: training runs them over
whole windows (the chunkwise form), and generation feeds one character at a
time, carrying the layers' states (the recurrent form, O(1) work per token).

Run: ``python examples/demo.py`` (any backend; JAX unless KERAS_BACKEND says
otherwise). Prints the loss per epoch against a unigram baseline, the
held-out loss, and a sampled continuation.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402
from keras import ops  # noqa: E402

from keras_mlstm import MLSTM  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "lighthouse.txt")
WINDOW = 64


class CharModel(keras.Model):
    """Embedding, two stacked MLSTM layers, and a softmax head.

    ``call`` can carry the layers' states, so that generation feeds one
    character at a time.
    """

    def __init__(self, vocab_size, units=128, **kwargs):
        super().__init__(**kwargs)
        self.embed = layers.Embedding(vocab_size, 64)
        self.rnns = [
            MLSTM(units, return_sequences=True, return_state=True)
            for _ in range(2)
        ]
        self.head = layers.Dense(vocab_size)

    def call(self, tokens, states=None, return_states=False):
        x = self.embed(tokens)
        states = states or [None] * len(self.rnns)
        new_states = []
        for rnn, state in zip(self.rnns, states, strict=True):
            x, *state = rnn(x, initial_state=state)
            new_states.append(state)
        logits = self.head(x)
        return (logits, new_states) if return_states else logits


def windows(ids, stride):
    starts = np.arange(0, len(ids) - WINDOW - 1, stride)
    x = np.stack([ids[s : s + WINDOW] for s in starts])
    y = np.stack([ids[s + 1 : s + WINDOW + 1] for s in starts])
    return x, y


def generate(model, prompt, chars, index, length, rng):
    """Feed the prompt, then sample one character at a time, carrying the
    state: each new character costs one recurrent step."""
    tokens = np.array([[index[c] for c in prompt]])
    logits, states = model(tokens, return_states=True)
    text = prompt
    for _ in range(length):
        probs = ops.convert_to_numpy(ops.softmax(logits[0, -1] / 0.7))
        nxt = rng.choice(len(chars), p=probs / probs.sum())
        text += chars[nxt]
        logits, states = model(np.array([[nxt]]), states, return_states=True)
    return text


def main(epochs=6, sample_length=160, max_windows=None):
    """Train, report and sample; returns ``(history, sample)``."""
    keras.utils.set_random_seed(0)
    text = open(DATA, encoding="utf-8").read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = np.array([index[c] for c in text])
    split = int(0.85 * len(ids))
    x_train, y_train = windows(ids[:split], stride=8)
    x_val, y_val = windows(ids[split:], stride=WINDOW // 2)
    if max_windows:
        x_train, y_train = x_train[:max_windows], y_train[:max_windows]
        x_val, y_val = x_val[:max_windows], y_val[:max_windows]

    counts = np.bincount(ids[:split], minlength=len(chars)) + 1
    unigram = -np.sum(counts / counts.sum() * np.log(counts / counts.sum()))
    print(
        f"{len(text)} characters, {len(chars)} distinct; "
        f"unigram baseline loss {unigram:.3f} nats/char"
    )

    model = CharModel(len(chars))
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(
        x_train,
        y_train,
        batch_size=64,
        epochs=epochs,
        validation_data=(x_val, y_val),
        verbose=2,
    )
    losses = history.history["loss"]
    val = history.history["val_loss"][-1]
    print(
        f"\ntrain loss: {losses[0]:.3f} -> {losses[-1]:.3f} nats/char "
        f"(unigram baseline {unigram:.3f})"
    )
    print(f"held-out loss (last 15% of the text): {val:.3f} nats/char")
    rng = np.random.default_rng(0)
    prompt = "Day 331, winter. Wind"
    sample = generate(model, prompt, chars, index, sample_length, rng)
    print("\nsample, generated step by step with the recurrent form:\n")
    print(sample)
    return history, sample


if __name__ == "__main__":
    main()
