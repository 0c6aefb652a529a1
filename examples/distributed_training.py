"""Data- and model-parallel training of an xLSTM model with
`keras.distribution`, on virtual CPU devices and across two processes,
checked against training on one device.

What it shows: xLSTM models shard like any Keras model. The script trains
one small language model (KerasHub's `XLSTMCausalLM`: an embedding, two
xLSTM blocks, an output projection) for a few epochs on the same data in
each of these ways, each in a fresh process (JAX fixes its devices when it
starts), and compares every epoch's loss with single-device training:

- `single`: one CPU device (the reference);
- `data`: `keras.distribution.DataParallel` over two virtual CPU devices
  (`XLA_FLAGS=--xla_force_host_platform_device_count=2`): each device
  takes half of every batch;
- `model`: `keras.distribution.ModelParallel` over the same two devices,
  with the `LayoutMap` of `XLSTMBackbone.get_layout_map(mesh)`, which
  splits the blocks' up-projections by columns, their down-projections by
  rows and the embedding by vocabulary (the script reports which weights
  ended up split);
- `processes`: `DataParallel` across two processes on this machine,
  standing in for two hosts: `keras.distribution.initialize` starts JAX's
  distributed runtime (process 0 coordinates on a local port), the CPU
  collectives are Gloo's, and each process feeds its own half of every
  batch;
- `tensorflow`: on the TensorFlow backend, `tf.distribute.MirroredStrategy`
  over two logical CPU devices, against TensorFlow on one device.

PyTorch: not applied. Keras 3's distribution API (`keras.distribution`)
runs on JAX only, and on PyTorch Keras's own guide to multi-GPU training
wraps the model in `torch.nn.parallel.DistributedDataParallel` inside a
hand-written loop (see `custom_training_loop.py` for the loop itself);
there is nothing specific to this package in it.

Needs the `hub` extra (KerasHub), as the `test` extra installs it.
Runtime: about a minute on a 2-core CPU (the processes start together);
`--smoke` is about as long (process start-up and compilation).
Run: `python examples/distributed_training.py`.
"""

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys

EPOCHS = 4
WAYS = ("single", "data", "model", "processes", "tensorflow")


def train(args, process_id=None):
    """Trains the model under the distribution named by `args.run` (in
    this process); returns the epoch losses."""
    import keras
    import numpy as np

    from keras_mlstm import config
    from keras_mlstm.models.xlstm import XLSTMBackbone
    from keras_mlstm.models.xlstm import XLSTMCausalLM

    if not args.smoke:  # on JAX, reruns read the compiled steps back
        config.enable_compilation_cache()
    keras.utils.set_random_seed(0)
    if args.run in ("data", "processes"):
        devices = keras.distribution.list_devices()
        distribution = keras.distribution.DataParallel(devices=devices)
        if args.run == "processes":
            distribution.auto_shard_dataset = False  # each feeds its half
        keras.distribution.set_distribution(distribution)
    elif args.run == "model":
        mesh = keras.distribution.DeviceMesh(
            (1, 2), ["batch", "model"], keras.distribution.list_devices()
        )
        keras.distribution.set_distribution(
            keras.distribution.ModelParallel(
                layout_map=XLSTMBackbone.get_layout_map(mesh),
                batch_dim_name="batch",
            )
        )
    scope = contextlib.nullcontext()
    if args.run == "tensorflow" and args.devices == 2:
        import tensorflow as tf

        scope = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope()
    with scope:
        backbone = XLSTMBackbone(
            vocabulary_size=32,
            num_layers=2,
            hidden_dim=args.width,
            num_heads=2,
            block_variant="mlstm",
            seed=0,
        )
        model = XLSTMCausalLM(backbone)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        data = np.random.default_rng(0).integers(0, 32, size=(16, args.length))
        data = data.astype("int32")
        tokens, targets = data[:, :-1], data[:, 1:]
        batch = 16
        if process_id is not None:  # this process's half of every batch
            tokens, targets = tokens[process_id::2], targets[process_id::2]
            batch = 8
        inputs = {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}
        history = model.fit(
            inputs,
            targets,
            batch_size=batch,
            epochs=EPOCHS,
            shuffle=False,
            verbose=0,
        )
    return history.history["loss"], split_over_model(model)


def split_over_model(model):
    """The paths of the weights split over the mesh's "model" axis (JAX
    arrays carry their sharding; other backends' split nothing here)."""
    split = []
    for weight in model.weights:
        sharding = getattr(weight.value, "sharding", None)
        if "model" in tuple(getattr(sharding, "spec", None) or ()):
            split.append(weight.path)
    return split


def run_child(args):
    """One training in this (fresh) process; prints its losses as JSON."""
    process_id = None
    if args.run == "processes":
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        import keras

        process_id = args.process_id
        keras.distribution.initialize(
            f"localhost:{args.port}", num_processes=2, process_id=process_id
        )
    if args.run == "tensorflow" and args.devices == 2:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
    losses, split = train(args, process_id)
    print(
        "LOSSES " + json.dumps({"losses": losses, "split": split}), flush=True
    )


def child(run, args, backend="jax", devices=1, extra=()):
    """Starts a fresh process of this script for one training."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    if devices > 1 and backend == "jax":
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    command = [sys.executable, __file__, "--run", run]
    command += ["--devices", str(devices), "--width", str(args.width)]
    command += ["--length", str(args.length), *extra]
    command += ["--smoke"] if args.smoke else []
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def result_of(process):
    """`{"losses", "split"}` of a training process."""
    out, err = process.communicate(timeout=600)
    for line in out.decode().splitlines():
        if line.startswith("LOSSES "):
            return json.loads(line[len("LOSSES ") :])
    raise RuntimeError(f"a training process failed:\n{err.decode()[-3000:]}")


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def main(argv=None):
    """Runs every way of training, one after another; returns the losses
    and each way's largest relative difference from one device."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--length", type=int, default=65)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--run", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=1, help="(internal)")
    parser.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run is not None:
        return run_child(args)
    if args.smoke:
        args.width, args.length = 16, 17

    # The JAX trainings start together (each is mostly start-up and
    # compilation), then the TensorFlow pair.
    print("training: single, data, model, processes (JAX) ...", flush=True)
    port = free_port()
    started = {
        "single": child("single", args),
        "data": child("data", args, devices=2),
        "model": child("model", args, devices=2),
    }
    workers = [
        child(
            "processes",
            args,
            extra=("--process-id", str(i), "--port", str(port)),
        )
        for i in range(2)
    ]
    results = {run: result_of(process) for run, process in started.items()}
    losses = {run: result["losses"] for run, result in results.items()}
    per_process = [result_of(worker)["losses"] for worker in workers]
    losses["processes"] = per_process[0]
    print("training: tensorflow, one and two devices ...", flush=True)
    tf_runs = [
        child("tensorflow", args, backend="tensorflow", devices=devices)
        for devices in (1, 2)
    ]
    tf_single, losses["tensorflow"] = (result_of(p)["losses"] for p in tf_runs)

    def gap(these, reference):
        pairs = zip(these, reference, strict=True)
        return max(abs(a - b) / abs(b) for a, b in pairs)

    differences = {run: gap(losses[run], losses["single"]) for run in WAYS[1:4]}
    differences["processes, between processes"] = gap(*per_process)
    differences["tensorflow"] = gap(losses["tensorflow"], tf_single)
    print(f"\nloss per epoch ({EPOCHS} epochs), and the largest relative")
    print("difference from one device (the same backend):")
    print(
        f"  {'single (JAX)':<32}"
        + " ".join(f"{v:.5f}" for v in losses["single"])
    )
    for run in WAYS[1:]:
        values = " ".join(f"{v:.5f}" for v in losses[run])
        print(f"  {run:<32}{values}  {differences[run]:.1e}")
    print(
        "  processes, between processes   "
        f"{differences['processes, between processes']:.1e}"
    )
    split = results["model"]["split"]
    print(f"\nsplit over the 'model' axis ({len(split)} weights):")
    for path in split:
        print(f"  {path}")
    return {"losses": losses, "differences": differences, "split": split}


if __name__ == "__main__":
    main()
