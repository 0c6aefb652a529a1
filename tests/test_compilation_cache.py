"""`config.enable_compilation_cache`: JAX's persistent compilation cache,
checked in fresh processes (the cache is process-wide state), and a
no-op elsewhere."""

import json
import os
import subprocess
import sys

import keras
import pytest

from keras_mlstm import config

BACKEND = keras.backend.backend()

# A first training step of a small model of MLSTMBlocks; prints the XLA
# compilation seconds JAX measured and the persistent cache's hits.
SCRIPT = """
import collections, json, os, sys
os.environ["KERAS_BACKEND"] = "jax"
import jax, keras, numpy as np
from keras_mlstm import MLSTMStack, config
events, seconds = collections.Counter(), collections.Counter()
jax.monitoring.register_event_listener(lambda name, **kw: events.update([name]))
jax.monitoring.register_event_duration_secs_listener(
    lambda name, s, **kw: seconds.update({name: s})
)
used = config.enable_compilation_cache(sys.argv[1])
# Write every program, not only those compiling for 1 s or more.
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
model = keras.Sequential(
    [keras.Input((8, 8)), MLSTMStack(num_layers=1, num_heads=2)]
)
model.compile("adam", "mse")
model.train_on_batch(np.ones((2, 8, 8)), np.ones((2, 8, 8)))
print(json.dumps({
    "used": used,
    "hits": events["/jax/compilation_cache/cache_hits"],
    "xla_s": seconds["/jax/core/compile/backend_compile_duration"],
}))
"""


def _first_step(directory):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(BACKEND != "jax", reason="a JAX cache")
def test_a_second_process_reads_the_compiled_step_from_disk(tmp_path):
    directory = tmp_path / "xla"
    first = _first_step(directory)
    assert first["used"] == str(directory) and first["hits"] == 0
    assert os.listdir(directory), "nothing was written"
    second = _first_step(directory)
    assert second["hits"] > 0
    # Reading the executable back is faster than compiling it.
    assert second["xla_s"] < first["xla_s"]


@pytest.mark.skipif(BACKEND == "jax", reason="JAX has the cache")
def test_other_backends_have_no_cache_to_enable(tmp_path):
    assert config.enable_compilation_cache(tmp_path / "xla") is None
    assert not (tmp_path / "xla").exists()


@pytest.mark.parametrize("directory", [3, b"dir", ["x"]])
def test_directory_must_be_a_path(directory):
    with pytest.raises(ValueError, match="`directory` must be None or a path"):
        config.enable_compilation_cache(directory)


DEFAULT_SCRIPT = """
import os
os.environ["KERAS_BACKEND"] = "jax"
from keras_mlstm import config
print(config.enable_compilation_cache())
"""


@pytest.mark.skipif(BACKEND != "jax", reason="a JAX cache")
@pytest.mark.parametrize("variable", ["JAX_COMPILATION_CACHE_DIR", "XDG"])
def test_default_directory(tmp_path, variable):
    environment = dict(os.environ)
    environment.pop("JAX_COMPILATION_CACHE_DIR", None)
    if variable == "XDG":
        environment["XDG_CACHE_HOME"] = str(tmp_path)
        expected = tmp_path / "keras_mlstm" / "jax"
    else:
        environment[variable] = str(tmp_path / "mine")
        expected = tmp_path / "mine"
    result = subprocess.run(
        [sys.executable, "-c", DEFAULT_SCRIPT],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(expected)
    assert expected.is_dir()
