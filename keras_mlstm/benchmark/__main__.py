"""`python -m keras_mlstm.benchmark`: see `keras_mlstm.benchmark.cli`."""

from keras_mlstm.benchmark.cli import main

if __name__ == "__main__":
    main()
