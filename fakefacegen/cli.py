"""Conventions shared by every script: one-line errors (exit status 2), numbers checked where they are parsed,
--device, --config files."""
import argparse
import errno
import math
import re
import sys
import tomllib
from pathlib import Path

PROGRESS_DELAY_S = 10  # a progress bar appears once its step has run this long: quick steps stay quiet
SEED_MAX = 2**31 - 1  # seeds are 0 .. 2**31 - 1: the range numpy, torch and the toy faces all accept
# Why reading or writing a path fails that the user can fix: no space, over quota, over the size limit, no
# permission, a read-only filesystem, a file where a folder should be (or the other way), a name too long, a
# symlink loop.
USER_FIXABLE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP)


class UserError(Exception):
    """Bad input from the user: reported as one line, exit status 2, no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors as one line (not the whole usage block), exit status 2."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class Range:
    """The valid values of a numeric option: a finite int or float within bounds (each optional; `above` and
    `below` exclude the bound). As an argparse `type` it turns a flag's text into the checked number, so a bad
    value is argparse's one-line error naming the flag; `check` does the same for a config file's or a
    checkpoint's values. Every refusal states the range, and `why` says where a cap comes from."""

    def __init__(self, kind, low=None, high=None, above=None, below=None, why=""):
        self.kind, self.low, self.high, self.above, self.below, self.why = kind, low, high, above, below, why
        self.__name__ = "whole number" if kind is int else "number"  # argparse's name for the type

    def describe(self):
        if self.kind is int and self.low is not None and self.high is not None:
            return f"a whole number from {self.low} to {self.high}"
        bounds = [f"{word} {bound:g}" for word, bound in (("above", self.above), ("at least", self.low),
                                                            ("at most", self.high), ("below", self.below))
                  if bound is not None]
        return f"a {self.__name__} {' and '.join(bounds)}".rstrip()

    def check(self, value, typed=None):
        """value if it is a finite number of the kind and in range, else ValueError stating the range and the
        value as `typed` (a flag's text: 1e30, not the 31 digits it parses to)."""
        kinds = (int,) if self.kind is int else (int, float)
        number = isinstance(value, kinds) and not isinstance(value, bool) \
            and (isinstance(value, int) or math.isfinite(value))
        ok = number and (self.low is None or value >= self.low) and (self.high is None or value <= self.high) \
            and (self.above is None or value > self.above) and (self.below is None or value < self.below)
        if not ok:
            why = f" ({self.why})" if self.why else ""
            rule = self.describe()
            if number and self.high is not None and value > self.high:
                rule = f"at most {self.high} ({rule})"
            shown = typed if typed is not None else f"{value:.6g}" if isinstance(value, int) and number \
                and abs(value) >= 10**15 else str(value)
            raise ValueError(f"must be {rule}, not {shown[:30]}{'...' if len(shown) > 30 else ''}{why}")
        return self.kind(value)

    def __call__(self, text):
        """argparse's type: the flag's text -> the checked number ("1e6" is a whole number too)."""
        try:
            value = _number(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, not {text[:30]!r}") from None
        if self.kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        try:
            return self.check(value, typed=text.strip())
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None


def _number(text):
    try:
        return int(text)
    except ValueError:
        return float(text)  # nan and inf parse, and are refused by Range.check


def integer(low=None, high=None, why=""):
    """An argparse type for a whole number in [low, high]."""
    return Range(int, low, high, why=why)


def number(low=None, high=None, above=None, below=None, why=""):
    """An argparse type for a finite float within the bounds (above/below: exclusive)."""
    return Range(float, low, high, above, below, why)


SEED = integer(0, SEED_MAX)


def seed_list(text):
    """An argparse type: --seeds 0,1,2 -> [0, 1, 2], each a valid seed, none twice."""
    seeds = [SEED(part.strip()) for part in text.split(",")]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"a seed is given twice in {text!r}")
    return seeds


RUN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def check_run_name(name, what="--run"):
    """A run name is a name, not a path: letters, digits, -, _ and ., not . or .. (else a UserError)."""
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name) or name in (".", ".."):
        raise UserError(f"{what} {str(name)[:60]!r} is not a run name: use up to 100 letters, digits, -, _ and . "
                        "(no / : a run lives in outputs/<run>/ and checkpoints/<run>/)")
    return name


def check_seeds(first, count):
    """Face i uses seed first + i: the last one must stay within SEED_MAX too."""
    if first + count - 1 > SEED_MAX:
        raise UserError(f"seeds {first}..{first + count - 1} go past {SEED_MAX}: lower --seed")


def checked(rule, value, what):
    """value by a Range, where it does not come from a flag: a UserError naming `what` if it is out of range."""
    try:
        return rule.check(value)
    except ValueError as err:
        raise UserError(f"{what} {err}") from None


def run(main):
    """Call main(); turn a UserError into `error: ...` on stderr and exit status 2, and so an OSError on a path
    that the user can fix (USER_FIXABLE) wherever it was raised, and a GPU out of memory."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # before Exception, which would take it
        if err.errno not in USER_FIXABLE or err.filename is None:
            raise
        print(f"error: {path_error(err)}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        print(f"error: {OUT_OF_MEMORY}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


OUT_OF_MEMORY = ("the GPU ran out of memory: lower --batch-size (train.py's images per update, evaluate_fid.py's "
                 "per Inception batch), --res or --ngf/--ndf, or latent.py project's --starts; close other programs "
                 "on the GPU (nvidia-smi lists them), or run on --device cpu")


def is_out_of_memory(err):
    """Whether err is torch's out-of-memory error (CUDA's or MPS's). torch is looked up, not imported: a command
    that never loaded it (packing photos) cannot have run out of GPU memory."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(err, torch.OutOfMemoryError)


def path_error(err):
    """An OSError on a path as one line that names it and says what to do."""
    paths = " -> ".join(str(name) for name in (err.filename, err.filename2) if name is not None)
    return f"{paths}: {err.strerror}; pick another path, free some space or fix the permissions"


def resolve_device(name):
    """auto | cpu | cuda | cuda:N | mps -> torch.device, refusing a device that is not there. auto picks CUDA when
    there is one, else the CPU: MPS is used only when asked for, and trains in fp32 (training/speed.py's auto speed
    settings never turn bf16 autocast on for it)."""
    import torch  # here: packing photos (photo_packing.py, bench_preprocess.py) imports cli and never needs torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown --device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) here")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            why = "no Apple-silicon GPU is available here (MPS needs macOS 12.3 or later on an Apple M chip)" \
                if torch.backends.mps.is_built() else "this PyTorch was built without MPS (Apple GPUs)"
            raise UserError(f"--device {name}: {why}; use --device cpu")
        if device.index:
            raise UserError(f"--device {name}: a Mac has one GPU, --device mps")
    elif device.type != "cpu":
        raise UserError(f"unsupported --device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    elif device.index:
        raise UserError(f"--device {name}: the CPU is one device, whatever its cores: --device cpu")
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
    except UnicodeDecodeError:
        raise UserError(f"config {path} is not UTF-8 text (TOML files are): save it again as UTF-8") from None
    return {key.replace("-", "_"): value for key, value in table.items()}


def parse_with_config(parser, defaults, argv=None):
    """Parse argv over defaults < --config file < command line; returns (settings dict, keys given on the CLI,
    keys set by the config file).

    Every option of `parser` defaults to None so that "given on the command line" can be told apart.
    Values from the file are checked by the same rules as the flags (type, choices, range), so a typo or a
    `lr_g = nan` in a config fails at start-up with one line instead of deep inside training.
    """
    args = parser.parse_args(argv)
    given = {key for key, value in vars(args).items() if value is not None}
    settings, file_values = dict(defaults), {}
    if args.config:
        file_values = read_toml(args.config)
        if "config" in file_values:  # one file per run: a config naming another would be read as if it were not
            raise UserError(f"config = {str(file_values['config'])[:60]!r} in {args.config}: a config file cannot "
                            "name another; give the one you mean with --config")
        unknown = sorted(set(file_values) - set(defaults))
        if unknown:
            raise UserError(f"unknown key(s) {', '.join(unknown)} in {args.config}: "
                            f"the valid ones are the long options of --help, with _ for -")
        settings.update(check_values(parser, file_values, defaults, args.config))
    settings.update({key: value for key, value in vars(args).items() if value is not None})
    return settings, given, set(file_values)


def check_values(parser, values, defaults, source):
    """Settings read from `source` (a config file, a checkpoint) by the rules of the parser's flags: the
    default's type, the choices and the Range; the first bad one is a UserError."""
    actions, checked_values = {action.dest: action for action in parser._actions}, {}
    for key, value in values.items():
        action = actions.get(key)
        value = _check_type(key, value, defaults.get(key), source)
        if action is not None and action.choices and value not in action.choices:
            raise UserError(f"{key} = {value!r} in {source} is not one of {', '.join(map(str, action.choices))}")
        if action is not None and isinstance(action.type, Range):
            checked(action.type, value, f"{key} in {source}")
        checked_values[key] = value
    return checked_values


def _check_type(key, value, default, source):
    """value, if it is of the default's kind (a whole float such as 100.0 counts as a whole number, as --nz 1e2
    does on the command line), else a UserError."""
    expected = float if isinstance(default, float) else type(default)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    ok = (default is None or isinstance(value, expected) or (expected is float and isinstance(value, int))) \
        and not (isinstance(value, bool) and expected is not bool)
    if not ok:
        kind = {int: "a whole number", float: "a number", str: "a string in quotes", bool: "true or false"}
        raise UserError(f"{key} = {value!r} in {source} should be {kind.get(expected, expected.__name__)}")
    return value
