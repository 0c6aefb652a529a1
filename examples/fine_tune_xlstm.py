"""Load an official PyTorch `xlstm` language model into Keras, fine-tune it
with LoRA, and generate.

What it shows: `XLSTMCausalLM.from_xlstm` turns an official
`xLSTMLMModel` into a KerasHub causal LM with the same weights (the script
checks the logits against the official model's); `enable_lora` freezes
them and adds low-rank adapters; `fit` on raw strings trains only the
adapters (the script checks that the frozen weights did not move); and
`generate` samples with a KerasHub sampler.

The official model here is built with random weights (nothing is
downloaded) and byte-level vocabulary, so the fine-tuned text is what the
adapters learn in a few hundred steps: Python source from this Python's
standard library (`textwrap.py`). With a trained model, load it the same
way (`XLSTMCausalLM.from_xlstm(module)` for an official `xlstm` module,
`XLSTMCausalLM.from_preset("hf://NX-AI/xLSTM-7b")` for the `transformers`
checkpoint of xLSTM 7B; see docs/hub.md) and fine-tune as below.

Needs the `hub` extra, `torch` and `xlstm` (all in the `test` extra).
Runtime: about a minute on an idle 2-core CPU (TensorFlow, the command
below; measured 39 s: logits within 4.7e-7 of the official model's, loss
4.68 -> 3.30 nats per byte over 20 epochs: random base weights teach the
adapters little); longer with other work on the cores. `--smoke` runs in
seconds.
Run: `KERAS_BACKEND=tensorflow python examples/fine_tune_xlstm.py`.
"""

import argparse
import os
import sysconfig

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from xlstm.blocks.mlstm.block import mLSTMBlockConfig  # noqa: E402
from xlstm.blocks.mlstm.layer import mLSTMLayerConfig  # noqa: E402
from xlstm.xlstm_lm_model import xLSTMLMModel  # noqa: E402
from xlstm.xlstm_lm_model import xLSTMLMModelConfig  # noqa: E402

from keras_mlstm import config  # noqa: E402
from keras_mlstm.models.xlstm import XLSTMByteTokenizer  # noqa: E402
from keras_mlstm.models.xlstm import XLSTMCausalLM  # noqa: E402
from keras_mlstm.models.xlstm import XLSTMCausalLMPreprocessor  # noqa: E402


def official_model(width, blocks, context, seed):
    """An official `xLSTMLMModel` of mLSTM blocks over bytes."""
    torch.manual_seed(seed)
    config = xLSTMLMModelConfig(
        mlstm_block=mLSTMBlockConfig(mlstm=mLSTMLayerConfig(num_heads=4)),
        embedding_dim=width,
        num_blocks=blocks,
        context_length=context,
        vocab_size=256,
        tie_weights=True,
    )
    model = xLSTMLMModel(config)
    model.reset_parameters()  # the official initialisation
    return model.eval()


def text_pieces(length, count):
    """`count` consecutive pieces of `length` characters of textwrap.py."""
    path = os.path.join(sysconfig.get_paths()["stdlib"], "textwrap.py")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [text[i : i + length] for i in range(0, count * length, length)]


def main(argv=None):
    """Converts, checks, fine-tunes and samples; returns the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--pieces", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if not args.smoke:  # on JAX, reruns read the compiled steps back
        config.enable_compilation_cache()
    if args.smoke:
        args.width, args.blocks, args.sequence_length = 32, 1, 16
        args.pieces, args.epochs, args.rank = 8, 1, 2
    keras.utils.set_random_seed(args.seed)

    # 1. The official model, and the same model in Keras.
    official = official_model(
        args.width, args.blocks, args.sequence_length, args.seed
    )
    preprocessor = XLSTMCausalLMPreprocessor(
        XLSTMByteTokenizer(), sequence_length=args.sequence_length
    )
    lm = XLSTMCausalLM.from_xlstm(official, preprocessor)
    tokens = np.frombuffer(b"def wrap(text):", np.uint8).astype("int64")
    with torch.no_grad():
        expected = official(torch.from_numpy(tokens[None])).numpy()
    ours = keras.ops.convert_to_numpy(
        lm(
            {
                "token_ids": tokens[None].astype("int32"),
                "padding_mask": np.ones((1, len(tokens)), "int32"),
            }
        )
    )
    logit_error = float(
        np.max(np.abs(ours - expected)) / np.max(np.abs(expected))
    )
    print(
        f"official xLSTMLMModel -> XLSTMCausalLM: {lm.count_params():,} "
        f"weights, logits within {logit_error:.1e} of the official model's "
        "(relative to the largest)"
    )

    # 2. LoRA: adapters on the default projections, the rest frozen.
    lm.backbone.enable_lora(args.rank)
    frozen = [v for v in lm.weights if not v.trainable]
    before = [keras.ops.convert_to_numpy(v) for v in frozen]
    adapters = sum(int(np.prod(v.shape)) for v in lm.trainable_weights)
    print(f"LoRA rank {args.rank}: {adapters:,} trainable weights")

    # 3. Fine-tune on raw strings.
    lm.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        sampler=keras_hub.samplers.TopKSampler(k=5, seed=args.seed),
    )
    history = lm.fit(
        text_pieces(args.sequence_length, args.pieces),
        batch_size=8,
        epochs=args.epochs,
        verbose=2,
    )
    moved = max(
        float(np.max(np.abs(keras.ops.convert_to_numpy(v) - b)))
        for v, b in zip(frozen, before, strict=True)
    )
    losses = history.history["loss"]
    print(
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; largest change of a "
        f"frozen weight: {moved:.1e}"
    )

    # 4. Generate.
    # Byte 0 is the tokenizer's end token: generate the full length
    # rather than stop at it, and drop it from the text.
    sample = lm.generate(
        "def ", max_length=args.sequence_length, stop_token_ids=None
    ).replace("\x00", "")
    print(f"\nsample:\n{sample}")
    return {
        "logit_error": logit_error,
        "frozen_change": moved,
        "losses": losses,
        "sample": sample,
    }


if __name__ == "__main__":
    main()
