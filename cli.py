"""Conventions shared by every script: one-line errors (exit status 2), --device, --config files."""
import argparse
import sys
import tomllib
from pathlib import Path


class UserError(Exception):
    """Bad input from the user: reported as one line, exit status 2, no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors as one line (not the whole usage block), exit status 2."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def run(main):
    """Call main(); turn a UserError into `error: ...` on stderr and exit status 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def resolve_device(name):
    """auto | cpu | cuda | cuda:N -> torch.device, refusing a CUDA device that is not there."""
    import torch  # here: packing photos (photo_packing.py, bench_preprocess.py) imports cli and never needs torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown --device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) here")
    elif device.type != "cpu":
        raise UserError(f"unsupported --device {name!r}: use auto, cpu, cuda or cuda:N")
    return device


def read_toml(path):
    """A TOML config as a flat dict with dashes folded to underscores (`lr-g` == `lr_g`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config {path} not found: pick one from configs/")
    try:
        with path.open("rb") as f:
            table = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"config {path} is not valid TOML: {err}") from None
    return {key.replace("-", "_"): value for key, value in table.items()}


def parse_with_config(parser, defaults, argv=None):
    """Parse argv over defaults < --config file < command line; returns (settings dict, keys given on the CLI).

    Every option of `parser` defaults to None so that "given on the command line" can be told apart.
    Values from the file are checked against the option's choices and the default's type, so a typo in a
    config fails at start-up with one line instead of deep inside training.
    """
    args = parser.parse_args(argv)
    given = {key for key, value in vars(args).items() if value is not None}
    settings = dict(defaults)
    if args.config:
        file_values = read_toml(args.config)
        unknown = sorted(set(file_values) - set(defaults))
        if unknown:
            raise UserError(f"unknown key(s) {', '.join(unknown)} in {args.config}: "
                            f"the valid ones are the long options of --help, with _ for -")
        choices = {action.dest: action.choices for action in parser._actions if action.choices}
        for key, value in file_values.items():
            _check_type(key, value, defaults[key], choices.get(key), args.config)
        settings.update(file_values)
    settings.update({key: value for key, value in vars(args).items() if value is not None})
    return settings, given


def _check_type(key, value, default, choices, source):
    expected = float if isinstance(default, float) else type(default)
    ok = (default is None or isinstance(value, expected) or (expected is float and isinstance(value, int))) \
        and not (isinstance(value, bool) and expected is not bool)
    if not ok:
        raise UserError(f"{key} = {value!r} in {source} should be a {expected.__name__}")
    if choices and value not in choices:
        raise UserError(f"{key} = {value!r} in {source} is not one of {', '.join(map(str, choices))}")
