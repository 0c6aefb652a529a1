"""Train a small xLSTM byte-level language model on Python source code.

What it shows: a language model of `MLSTMBlock`s (`keras_mlstm.MLSTMStack`)
learns real text, here the source code of the running Python's own standard
library (read from disk; nothing is downloaded or copied into this
repository). The script

1. reads a fixed list of standard-library modules: `VALIDATION_MODULES` are
   held out whole, the others are the training text;
2. trains the xLSTM model, then an LSTM language model of about the same
   parameter count, each for the same training time (`--seconds`) or the
   same number of steps (`--steps`), with a Keras progress bar. The first
   step, which compiles the training step, is timed and reported apart and
   is not part of the time budget, nor is validation;
3. reports, for both and for a unigram model (the training text's byte
   frequencies), validation bits per byte after the budget and at the
   largest step count both models reached (which the machine's load does
   not move, unlike the steps a time budget buys), the training tokens per
   second and the compile time, and writes a PNG of both learning curves;
4. saves the xLSTM model to a `.keras` file, loads it back (its validation
   loss must not change), and samples a continuation of a prompt from the
   loaded model one byte at a time: the recurrent form, O(1) work per byte,
   through a compiled step model.

The module texts differ between Python versions, so figures are comparable
between runs of one Python version. With `--steps` and `--seed` a run is
repeatable; with a time budget the number of steps depends on the machine.

On JAX the compiled training steps are kept on disk
(`keras_mlstm.config.enable_compilation_cache`, under
`~/.cache/keras_mlstm/jax` unless `--compilation-cache` names another
directory), so that a second run reads them back instead of compiling them
again; `--no-compilation-cache` compiles afresh.

Runtime: about 3 minutes on a 2-core CPU with the defaults (60 s of training
per model, plus compilation, validation and sampling); `--smoke` runs a
tiny configuration in seconds (the test suite runs it on every backend).

Run: `python examples/demo.py` (any backend; JAX unless KERAS_BACKEND says
otherwise). `python examples/demo.py --help` lists the flags.
"""

import argparse
import codecs
import math
import os
import sys
import sysconfig
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_mlstm import MLSTMStack  # noqa: E402
from keras_mlstm import config  # noqa: E402

# Modules of the standard library (paths under its directory, without
# ".py"), present in Python 3.11 to 3.13.
TRAIN_MODULES = (
    "argparse",
    "ast",
    "base64",
    "bisect",
    "calendar",
    "collections/__init__",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "difflib",
    "enum",
    "fnmatch",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "gzip",
    "heapq",
    "hmac",
    "inspect",
    "ipaddress",
    "json/decoder",
    "json/encoder",
    "locale",
    "logging/__init__",
    "mimetypes",
    "numbers",
    "operator",
    "optparse",
    "pickle",
    "pprint",
    "queue",
    "random",
    "sched",
    "secrets",
    "selectors",
    "shutil",
    "socket",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "threading",
    "timeit",
    "tokenize",
    "traceback",
    "typing",
    "uuid",
    "warnings",
    "weakref",
)
VALIDATION_MODULES = ("fractions", "shlex", "textwrap")
VOCABULARY = 256  # bytes
LSTM_LAYERS = 2
BITS = 1.0 / math.log(2.0)  # nats -> bits


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--seconds", type=float, default=60.0, help="training time per model")
    add(
        "--steps",
        type=int,
        default=None,
        help="train this many steps per "
        "model instead of --seconds (repeatable with --seed)",
    )
    add("--width", type=int, default=128, help="xLSTM model width D")
    add("--blocks", type=int, default=2, help="xLSTM blocks")
    add("--heads", type=int, default=4, help="heads per block")
    add(
        "--block-variant",
        choices=("mlstm", "large"),
        default=None,
        help="xLSTM block: the paper's or the xLSTM 7B's (default: "
        "MLSTMStack's)",
    )
    add("--window", type=int, default=256, help="training sequence length")
    add("--batch-size", type=int, default=16)
    add("--learning-rate", type=float, default=2e-3)
    add(
        "--eval-every",
        type=int,
        default=25,
        help="steps between validation points of the learning curves",
    )
    add(
        "--val-bytes",
        type=int,
        default=32768,
        help="validation bytes (the start of the held-out modules)",
    )
    add("--prompt", default="def ")
    add("--sample-bytes", type=int, default=300)
    add("--temperature", type=float, default=0.7)
    add("--seed", type=int, default=0)
    add("--output-dir", default="demo_output")
    add(
        "--compilation-cache",
        default=None,
        metavar="DIR",
        help="on JAX, keep the compiled training steps in DIR so that a "
        "rerun skips compiling them (keras_mlstm.config."
        "enable_compilation_cache; default: ~/.cache/keras_mlstm/jax)",
    )
    add(
        "--no-compilation-cache",
        action="store_true",
        help="compile afresh (the default with --smoke)",
    )
    add("--smoke", action="store_true", help="a tiny, seconds-long run")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 2:
        parser.error("--steps must be >= 2 (the first step compiles)")
    if args.smoke:
        args.steps, args.width, args.blocks, args.heads = 2, 16, 1, 2
        args.window, args.batch_size, args.eval_every = 32, 2, 1
        args.val_bytes, args.sample_bytes = 2 * 33, 4
    return args


def read_modules(names):
    """The bytes of the named standard-library modules, joined by newlines,
    as int32 token ids; missing ones are reported and skipped."""
    root = sysconfig.get_paths()["stdlib"]
    texts, missing = [], []
    for name in names:
        path = os.path.join(root, name + ".py")
        if os.path.exists(path):
            with open(path, "rb") as f:
                texts.append(f.read())
        else:
            missing.append(name)
    if missing:
        print(f"not in this Python's standard library, skipped: {missing}")
    if not texts:
        raise SystemExit(f"none of {names} found under {root}")
    return np.frombuffer(b"\n".join(texts), dtype=np.uint8).astype("int32")


def unigram_bits(train, val):
    """Bits per byte of `val` under `train`'s byte frequencies (add-one)."""
    counts = np.bincount(train, minlength=VOCABULARY) + 1.0
    return float(-np.mean(np.log2(counts / counts.sum())[val]))


def batches(ids, window, batch_size, rng):
    """Endless (inputs, next-byte targets) batches of random windows."""
    offsets = np.arange(window + 1)
    while True:
        starts = rng.integers(0, len(ids) - window - 1, size=batch_size)
        rows = ids[starts[:, None] + offsets]
        yield rows[:, :-1], rows[:, 1:]


def validation_set(ids, window, size):
    """Consecutive windows over the first `size` held-out bytes."""
    count = max(1, min(size, len(ids) - 1) // (window + 1))
    rows = ids[: count * (window + 1)].reshape(count, window + 1)
    return rows[:, :-1], rows[:, 1:]


def xlstm_model(width, blocks, heads, seed, block_variant=None):
    tokens = keras.Input((None,), dtype="int32", name="bytes")
    x = keras.layers.Embedding(VOCABULARY, width, name="embedding")(tokens)
    variant = {} if block_variant is None else {"block_variant": block_variant}
    x = MLSTMStack(blocks, num_heads=heads, seed=seed, name="stack", **variant)(
        x
    )
    logits = keras.layers.Dense(VOCABULARY, name="logits")(x)
    return keras.Model(tokens, logits, name="xlstm")


def lstm_parameters(width, embedding):
    """Weights of `lstm_model(width, embedding)`, counted analytically."""
    count = VOCABULARY * embedding + width * VOCABULARY + VOCABULARY
    inputs = embedding
    for _ in range(LSTM_LAYERS):
        count += 4 * width * (inputs + width + 1)
        inputs = width
    return count


def lstm_model(width, embedding):
    tokens = keras.Input((None,), dtype="int32", name="bytes")
    x = keras.layers.Embedding(VOCABULARY, embedding, name="embedding")(tokens)
    for _ in range(LSTM_LAYERS):
        x = keras.layers.LSTM(width, return_sequences=True)(x)
    logits = keras.layers.Dense(VOCABULARY, name="logits")(x)
    return keras.Model(tokens, logits, name="lstm")


def matching_lstm(params, embedding):
    """The LSTM (width a multiple of 8) with the parameter count nearest
    `params`, embedding width `embedding`."""
    widths = range(8, 4096, 8)
    width = min(
        widths, key=lambda w: abs(lstm_parameters(w, embedding) - params)
    )
    return lstm_model(width, embedding)


class TrainingClock(keras.callbacks.Callback):
    """Times `fit` and stops it after `seconds` of training or after
    `steps` steps. The first step, which compiles the training step, is
    timed apart (`compile_seconds`) and is not part of the time budget,
    nor is validation. Shows a Keras progress bar of the steps (out of
    `steps`, or open-ended under a time budget) and records the learning
    curve as `(seconds, steps, validation bits/byte)`."""

    def __init__(self, seconds, steps):
        super().__init__()
        self.seconds, self.steps = seconds, steps
        self.bar = keras.utils.Progbar(
            steps, stateful_metrics=["bits/byte", "val bits/byte"]
        )
        self.curve, self.done, self.compile_seconds = [], 0, None

    def on_train_begin(self, logs=None):
        self.start, self.excluded = time.perf_counter(), 0.0

    def elapsed(self):
        return time.perf_counter() - self.start - self.excluded

    def on_test_begin(self, logs=None):
        self.test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self.excluded += time.perf_counter() - self.test_start

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.compile_seconds is None:
            self.compile_seconds = self.elapsed()
            self.on_train_begin()  # the budget starts after the first step
            print(
                "first step (compiles the training step): "
                f"{self.compile_seconds:.1f} s, outside the budget"
            )
        values = [("bits/byte", float(logs["loss"]) * BITS)]
        if self.curve:
            values.append(("val bits/byte", self.curve[-1][2]))
        finished = self.finished()
        self.bar.update(self.done, values=values, finalize=finished)
        if finished:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if "val_loss" in logs:
            val = float(logs["val_loss"]) * BITS
            self.curve.append((self.elapsed(), self.done, val))

    def finished(self):
        if self.steps is not None:
            return self.done >= self.steps
        return self.elapsed() >= self.seconds


def train(name, model, args, train_ids, val):
    print(f"\n{name}: {model.count_params():,} weights")
    model.compile(
        optimizer=keras.optimizers.Adam(
            args.learning_rate, global_clipnorm=1.0
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    clock = TrainingClock(args.seconds, args.steps)
    rng = np.random.default_rng(args.seed)
    model.fit(
        batches(train_ids, args.window, args.batch_size, rng),
        steps_per_epoch=args.eval_every,
        epochs=10**9,  # the clock stops training
        validation_data=val,
        validation_batch_size=args.batch_size,
        callbacks=[clock],
        shuffle=False,  # the batches are random windows already
        verbose=0,
    )
    # `fit` validates at the end of the epoch it stopped in, so the last
    # point of the curve is the final model's.
    seconds, steps, final = clock.curve[-1]
    tokens_per_second = (steps - 1) * args.batch_size * args.window / seconds
    print(
        f"{name}: {steps} steps, {seconds:.0f} s of training after the "
        f"first ({tokens_per_second:,.0f} tokens/s); validation {final:.3f} "
        "bits/byte"
    )
    return {
        "steps": steps,
        "bits": final,
        "curve": clock.curve,
        "seconds": seconds,
        "tokens_per_second": tokens_per_second,
        "compile_seconds": clock.compile_seconds,
    }


def at_equal_steps(results):
    """`(steps, {name: bits})` at the last validation point that every
    model has (every `--eval-every` steps): a comparison the machine's
    load does not move."""
    curves = [
        {steps: bits for _, steps, bits in result["curve"]}
        for result in results.values()
    ]
    common = max(set.intersection(*(set(curve) for curve in curves)))
    return common, {
        name: curve[common] for name, curve in zip(results, curves, strict=True)
    }


def evaluate_bits(model, val, batch_size):
    return float(model.evaluate(*val, batch_size=batch_size, verbose=0)) * BITS


def plot(results, unigram, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    for name, result in results.items():
        seconds, _, bits = zip(*result["curve"], strict=True)
        axes.plot(seconds, bits, marker=".", label=name)
    axes.axhline(unigram, color="gray", linestyle="--", label="unigram")
    axes.set_xlabel("training seconds (the compiling first step excluded)")
    axes.set_ylabel("validation bits per byte")
    axes.set_title(f"Python standard library source, {keras.backend.backend()}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def step_model(model):
    """A model of one step: `[byte (1, 1), *state] -> [logits, *state]`
    with `model`'s weights; `predict_on_batch` compiles it (XLA on JAX, a
    graph on TensorFlow). Returns it and the flat initial state.

    The stack is a copy (same config and weights): a functional model
    expects a layer's outputs to have the structure of its first call,
    and the trained model called the stack without its state.
    """
    embedding, head = model.get_layer("embedding"), model.get_layer("logits")
    trained = model.get_layer("stack")
    stack = trained.__class__.from_config(trained.get_config())
    initial = trained.get_initial_state(1)  # one list of tensors per block
    token = keras.Input(batch_shape=(1, 1), dtype="int32")
    state = [
        [
            keras.Input(
                batch_shape=tuple(s.shape),
                dtype=keras.backend.standardize_dtype(s.dtype),
            )
            for s in block
        ]
        for block in initial
    ]
    x, new_state = stack(
        embedding(token), initial_state=state, return_state=True
    )
    stack.set_weights(trained.get_weights())
    flat = [s for block in state for s in block]
    new_flat = [s for block in new_state for s in block]
    step = keras.Model([token, *flat], [head(x), *new_flat])
    initial = [keras.ops.convert_to_numpy(s) for b in initial for s in b]
    return step, initial


def sample(model, prompt, length, temperature, seed, out=sys.stdout):
    """Feed `prompt`, then sample `length` bytes one at a time, printing
    each as it comes; returns the text."""
    start = time.perf_counter()
    step, state = step_model(model)
    rng = np.random.default_rng(seed)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    data = list(prompt.encode("utf-8"))
    out.write(prompt)
    logits = None
    for position in range(len(data) + length):
        if position >= len(data):
            scaled = logits[0, -1].astype("float64") / temperature
            probs = np.exp(scaled - scaled.max())
            data.append(int(rng.choice(VOCABULARY, p=probs / probs.sum())))
            out.write(decoder.decode(bytes(data[-1:])))
            out.flush()
        token = np.array([[data[position]]], "int32")
        logits, *state = step.predict_on_batch([token, *state])
    out.write(decoder.decode(b"", final=True) + "\n")
    seconds = time.perf_counter() - start
    out.write(
        f"\n({len(data)} bytes in {seconds:.1f} s, compilation included)\n"
    )
    return bytes(data).decode("utf-8", errors="replace")


def main(argv=None):
    """Runs the demo; returns its figures as a dict."""
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    print(
        f"Python {sys.version.split()[0]}, Keras {keras.__version__}, "
        f"backend {keras.backend.backend()}"
    )
    cache = None
    if not args.no_compilation_cache and (
        args.compilation_cache or not args.smoke
    ):
        cache = config.enable_compilation_cache(args.compilation_cache)
    if cache is not None:
        print(f"compilation cache: {cache} (a rerun reads the steps back)")
    train_ids = read_modules(TRAIN_MODULES)
    val_ids = read_modules(VALIDATION_MODULES)
    val = validation_set(val_ids, args.window, args.val_bytes)
    unigram = unigram_bits(train_ids, val[1].ravel())
    print(
        f"training text: {len(train_ids):,} bytes of {len(TRAIN_MODULES)} "
        f"modules; validation: {val[1].size:,} bytes of "
        f"{', '.join(VALIDATION_MODULES)}; unigram {unigram:.3f} bits/byte"
    )

    xlstm = xlstm_model(
        args.width, args.blocks, args.heads, args.seed, args.block_variant
    )
    lstm = matching_lstm(xlstm.count_params(), args.width)
    results = {
        "xLSTM": train("xLSTM", xlstm, args, train_ids, val),
        "LSTM": train("LSTM", lstm, args, train_ids, val),
    }
    curves = os.path.join(args.output_dir, "learning_curves.png")
    plot(results, unigram, curves)

    steps, equal = at_equal_steps(results)
    print(
        "\nvalidation bits per byte (lower is better); the first step, "
        "which compiles, is outside the training time:"
    )
    print(
        f"  {'model':<8} {'bits/byte':>9} {'steps':>6} {'seconds':>8} "
        f"{'tokens/s':>9} {'compile s':>9} {f'at {steps} steps':>14}"
    )
    print(f"  {'unigram':<8} {unigram:9.3f}")
    for name, result in results.items():
        print(
            f"  {name:<8} {result['bits']:9.3f} {result['steps']:6d} "
            f"{result['seconds']:8.0f} {result['tokens_per_second']:9,.0f} "
            f"{result['compile_seconds']:9.1f} {equal[name]:14.3f}"
        )
    print(f"learning curves: {curves}")

    path = os.path.join(args.output_dir, "xlstm_python.keras")
    xlstm.save(path)
    reloaded = keras.saving.load_model(path)
    reloaded_bits = evaluate_bits(reloaded, val, args.batch_size)
    print(
        f"saved and reloaded {path}: validation {reloaded_bits:.3f} bits/byte"
    )
    print(
        f"\nsample from the reloaded model (temperature {args.temperature}):\n"
    )
    text = sample(
        reloaded, args.prompt, args.sample_bytes, args.temperature, args.seed
    )
    return {
        "unigram_bits": unigram,
        "results": results,
        "at_equal_steps": (steps, equal),
        "reloaded_bits": reloaded_bits,
        "curves": curves,
        "compilation_cache": cache,
        "model": path,
        "sample": text,
    }


if __name__ == "__main__":
    main()
