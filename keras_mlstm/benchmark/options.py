"""What the command line accepts: int options that name themselves in
their error, and the check that a suite's optional package can be
imported."""

import argparse
import importlib

from keras_mlstm.ops.common import positive_int


def int_at_least(minimum):
    """An argparse `type` reading an int >= `minimum`; argparse names
    the option in the message when it is not one."""

    def parse(text):
        try:
            return positive_int("value", int(text), minimum)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an int >= {minimum}; received {text!r}"
            ) from None

    return parse


positive = int_at_least(1)


def add_int(parser, flag, default, help, metavar=None, minimum=1):
    """Add the option `flag`, an int >= `minimum`, or a list of them
    where `default` is a list."""
    parser.add_argument(
        flag,
        type=int_at_least(minimum),
        nargs="+" if isinstance(default, list) else None,
        default=default,
        metavar=metavar,
        help=help,
    )


def missing_package(module, pin):
    """Why `module` of the official package `pin` (`name==version`)
    cannot be imported, with the command that installs it; None when it
    can."""
    try:
        importlib.import_module(module)
    except ImportError as error:
        name = pin.split("==")[0]
        return (
            f"the official {name} package cannot be imported ({error});"
            f" install it with `pip install {pin}`"
        )
    return None
