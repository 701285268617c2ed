"""One line for a mistyped or ill-typed option: the option, its YAML file, the nearest name, a fix.

jsonargparse answers a bad option with the whole usage block (90 lines) and a message such as ``Parser key
"model": Does not validate against any of the Union subtypes ... Given value: NestedArg(key='learning_rate',
val='1e-3')``. ``OptionParser`` (the parser class of every madm-pl command) prints instead::

    madm-pl fit: error: --model.init_args.learning_rate=1e-3: MADMModule has no option 'learning_rate'; did
    you mean `lr`? Fix: --model.init_args.lr=1e-3

and exits with code 2, as argparse does; the usage is printed by ``--help`` only. A key that came from a
config file is named with its file and line (``configs/demo/base.yaml, line 33: model.init_args.class_mix``);
a value of the wrong type says what was expected (``expected int, got 2.5``). ``--debug`` (or
``MADM_DEBUG=1``) prints jsonargparse's own message and usage, as before.

The Trainer checks some values itself, after parsing (``max_steps=-5``): ``trainer_option_error`` turns its
``MisconfigurationException`` into the same kind of line (``OptionError``).
"""

from __future__ import annotations

import contextvars
import difflib
import importlib
import inspect
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml
from lightning.pytorch.cli import LightningArgumentParser

from madm_pl.errors import OptionError
from madm_pl.lightning_private import named_subcommand_parser, parser_actions

#: Whether the parsers print jsonargparse's own message and usage (``--debug`` / ``MADM_DEBUG=1``).
FULL_PARSER_MESSAGES: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "full_parser_messages", default=False
)

_PARSER_KEY = re.compile(r'Parser key "(?P<key>[\w.]+)":')
_CLASS_PATH = re.compile(r"class_path '(?P<class_path>[\w.]+)'")
_NOT_ACCEPTED = re.compile(r"Option '(?P<name>[^']+)' is not accepted")
_DOES_NOT_ACCEPT = re.compile(
    r"(?:Group '(?P<group>[\w.]+)'|Subcommand '(?P<subcommand>[\w-]+)') does not accept option "
    r"'(?P<name>[\w.]+)'"
)
_EXPECTED = re.compile(r"Expected an? (?P<expected>.+?)(?:\. Got value: (?P<got>.*))?$", re.M)
_INVALID_CHOICE = re.compile(r"invalid choice: '(?P<name>[^']*)' \(choose from (?P<choices>.*)\)")
_REQUIRED = re.compile(r"the following arguments are required: (?P<names>.*)")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (?P<rest>.*)")
_TYPE_NAME = re.compile(r"<class '(?:[\w.]+\.)?(?P<name>\w+)'>")
_LITERAL = re.compile(r"typing\.Literal\[(?P<values>[^\]]*)\]")


# ------------------------------------------------------------------------------------- nearest name
def _initials(name: str) -> str:
    return "".join(word[0] for word in re.split(r"[_.\-]+", name) if word)


def nearest_name(name: str, candidates: Iterable[str]) -> str | None:
    """The valid name a user most likely meant by ``name``, or None.

    difflib's closest match (``max_step`` -> ``max_steps``, ``class_mix`` -> ``classmix``) or, failing that,
    a name that is the other's initials (``learning_rate`` -> ``lr``, ``wd`` -> ``weight_decay``).
    """
    candidates = [c for c in dict.fromkeys(candidates) if c != name]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if close:
        return close[0]
    for candidate in candidates:
        if len(candidate) >= 2 and (_initials(name) == candidate or _initials(candidate) == name):
            return candidate
    return None


def nearest_key(key: str, keys: Iterable[str]) -> str | None:
    """The valid dotted option nearest to ``key``: a sibling of the same group by ``nearest_name``, else an
    option of another group with the same last name (``max_steps`` -> ``trainer.max_steps``)."""
    keys = list(keys)
    group, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == group}
    name = nearest_name(leaf, siblings)
    if name is not None:
        return siblings[name]
    same_leaf = [k for k in keys if k.rpartition(".")[2] == leaf and k != key]
    return same_leaf[0] if same_leaf else None


# ---------------------------------------------------------------------------------- where a key is
@dataclass(frozen=True)
class Origin:
    """Where an option's value came from: a command-line argument or a line of a config file."""

    argument: str | None = None
    file: Path | None = None
    line: int | None = None
    value: str | None = None

    def describe(self, key: str) -> str:
        if self.argument is not None:
            return self.argument
        if self.file is not None:
            where = f"{self.file}, line {self.line}" if self.line else str(self.file)
            return f"{where}: {key}"
        return key


def config_files(args: Sequence[str]) -> list[Path]:
    """The config files of a command line (``-c``/``--config``), each after the files it includes
    (its ``config:`` key, relative to the including file), in the order they are read."""
    given: list[Path] = []
    for index, arg in enumerate(args):
        if arg in ("-c", "--config") and index + 1 < len(args):
            given.append(Path(args[index + 1]))
        elif arg.startswith(("--config=", "-c=")):
            given.append(Path(arg.split("=", 1)[1]))
    ordered: list[Path] = []

    def visit(path: Path, depth: int) -> None:
        if depth > 8 or not path.is_file():
            return
        try:
            content = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            content = None
        included = content.get("config") if isinstance(content, dict) else None
        for name in [included] if isinstance(included, str) else included or []:
            if isinstance(name, str):
                visit(path.parent / name, depth + 1)
        ordered.append(path)

    for path in given:
        visit(path, 0)
    return ordered


def _flat_keys(content: Any, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    if isinstance(content, dict):
        for key, value in content.items():
            name = f"{prefix}{key}"
            flat[name] = value
            flat.update(_flat_keys(value, f"{name}."))
    return flat


def _spellings(key: str) -> list[str]:
    """A key as a config or the command line may write it: with and without ``init_args``."""
    spellings = [key]
    if ".init_args." in key:
        spellings.append(key.replace(".init_args.", ".", 1))
    return spellings


def find_origin(key: str, args: Sequence[str]) -> Origin:
    """Where the value of the dotted option ``key`` was given: the last command-line argument that sets
    it, else the last config file (``config_files``) holding it, with its line; an empty ``Origin`` when
    neither does (a default)."""
    for index in reversed(range(len(args))):
        option, equals, value = args[index].partition("=")
        if not option.startswith("--") or option[2:] not in _spellings(key):
            continue
        if equals:
            return Origin(argument=args[index], value=value)
        if index + 1 < len(args):
            return Origin(argument=f"{option} {args[index + 1]}", value=args[index + 1])
    for path in reversed(config_files(args)):
        try:
            text = path.read_text()
            flat = _flat_keys(yaml.safe_load(text))
        except (OSError, yaml.YAMLError):
            continue
        for spelling in _spellings(key):
            if spelling in flat:
                return Origin(file=path, line=_line_of(text, spelling), value=str(flat[spelling]))
    return Origin()


def _line_of(text: str, dotted: str) -> int | None:
    """The 1-based line of ``dotted`` in a YAML text: a dotted key as written, or its last name nested."""
    lines = text.splitlines()
    for candidate in (dotted, dotted.rpartition(".")[2]):
        pattern = re.compile(rf"^\s*{re.escape(candidate)}\s*:")
        for number, line in enumerate(lines, 1):
            if pattern.match(line):
                return number
    return None


# ------------------------------------------------------------------------------------ the message
def _class_options(class_path: str) -> list[str]:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        parameters = inspect.signature(cls.__init__).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return []
    return [p for p in parameters if p != "self" and parameters[p].kind is not inspect.Parameter.VAR_KEYWORD]


def _moved_options(class_path: str) -> dict[str, str]:
    """A class's ``moved_options`` (old option -> where it went, under ``init_args``), or {}."""
    module, _, name = class_path.rpartition(".")
    try:
        return dict(getattr(getattr(importlib.import_module(module), name), "moved_options", {}))
    except (ImportError, AttributeError, TypeError, ValueError):
        return {}


def parser_keys(parser: Any) -> list[str]:
    """Every dotted option a parser takes (``trainer.max_steps``, ``model``, ``checkpoint.monitor``)."""
    keys = []
    for action in parser_actions(parser):
        keys += [s[2:] for s in action.option_strings if s.startswith("--") and s[2:] not in ("help",)]
    return keys


def _subcommand_parser(parser: Any, name: str) -> Any:
    return named_subcommand_parser(parser, name)


def _subcommand_args(args: Sequence[str], name: str) -> list[str]:
    args = list(args)
    return args[args.index(name) + 1 :] if name in args else args


def _expected(detail: str) -> tuple[str, list[str]]:
    """``expected ...`` in words, and the allowed values when they are a fixed list (Literal types)."""
    choices: list[str] = []
    for literal in _LITERAL.finditer(detail):
        choices += [value.strip().strip("'\"") for value in literal["values"].split(",") if value.strip()]
    if choices:
        choices = list(dict.fromkeys(choices))  # precision's 16 and '16' are one value to a user
        return "one of " + ", ".join(choices), choices
    match = _EXPECTED.search(detail)
    if match is None:
        return detail.strip().splitlines()[0], []
    expected = _TYPE_NAME.sub(lambda m: m["name"], match["expected"]).strip()
    return expected, []


def _example_value(expected: str, got: str | None) -> str | None:
    """A value of the expected type close to the one given (``int``, 2.5 -> 2), or None."""
    if got is None:
        return None
    try:
        number = float(got)
    except ValueError:
        return None
    if expected == "int":
        return str(int(number))
    if expected in ("PositiveInt", "NonNegativeInt") or "positive" in expected.lower():
        return str(max(1, int(abs(number))))
    return None


def explain(message: str, parser: Any, args: Sequence[str], prog: str) -> str:
    """The one line that replaces jsonargparse's ``message`` (without the ``<prog>: error:`` start).

    Args:
        message: jsonargparse's (or argparse's) error message, possibly many lines.
        parser: the parser that failed (its options are the candidates for "did you mean").
        args: the arguments that parser was given (to find where a key came from).
        prog: the command, e.g. ``madm-pl fit`` (for the ``--help`` hint).
    """
    outer = _PARSER_KEY.search(message)
    class_path = _CLASS_PATH.search(message)
    inner = _PARSER_KEY.search(message, class_path.end()) if class_path else None
    not_accepted = _NOT_ACCEPTED.search(message)
    short_class = class_path["class_path"].rpartition(".")[2] if class_path else ""

    if not_accepted and outer and class_path:
        # --model.init_args.learning_rate / a YAML key under model.init_args
        group = outer["key"]
        name = not_accepted["name"]
        key = f"{group}.init_args.{name}"
        options = _class_options(class_path["class_path"])
        moved = _moved_options(class_path["class_path"]).get(name)
        suggestion = moved or nearest_name(name, options)
        help_hint = f"{prog} --{group}.help {short_class} lists its options"
        reason = f"{short_class} has no option '{name}'" + (f" (it moved to {moved})" if moved else "")
        return _unknown(key, reason, suggestion, f"{group}.init_args.", args, help_hint)

    match = _DOES_NOT_ACCEPT.search(message)
    if match:
        key = f"{match['group']}.{match['name']}" if match["group"] else match["name"]
        if match["subcommand"]:
            # a dotted key of a config file, found by the main parser: the options are the subcommand's
            parser = _subcommand_parser(parser, match["subcommand"]) or parser
            prog = f"{prog} {match['subcommand']}" if not prog.endswith(match["subcommand"]) else prog
            args = _subcommand_args(args, match["subcommand"])
        suggestion = nearest_key(key, parser_keys(parser))
        return _unknown_key(key, suggestion, args, f"{prog} --help lists the options")

    match = _REQUIRED.search(message)
    if match and outer:
        group = outer["key"] + (".init_args" if class_path else "")
        names = [name.strip() for name in match["names"].split(",") if name.strip()]
        missing = ", ".join(f"{group}.{name}" for name in names)
        them = "it" if len(names) == 1 else "them"
        return f"{missing} not set; fix: give {them} in the config or as --{group}.{names[0]}=..."

    match = _UNRECOGNIZED.search(message)
    if match:
        options = [token for token in match["rest"].split() if token.startswith("-")]
        if options:
            key = options[0].lstrip("-").partition("=")[0]
            suggestion = nearest_key(key, parser_keys(parser))
            return _unknown_key(key, suggestion, args, f"{prog} --help lists the options")

    match = _INVALID_CHOICE.search(message)
    if match:
        choices = [c.strip().strip("'") for c in match["choices"].split(",")]
        suggestion = nearest_name(match["name"], choices)
        did_you_mean = f"did you mean `{suggestion}`? " if suggestion else ""
        return f"unknown command '{match['name']}': {did_you_mean}The commands: {', '.join(choices)}"

    if outer:
        key = outer["key"] if inner is None else f"{outer['key']}.init_args.{inner['key']}"
        detail = message[(inner or outer).end() :]
        if key == "config":
            return f"-c/--config: {' '.join(detail.split())}; fix the path"
        expected, choices = _expected(detail)
        origin = find_origin(key, args)
        got = _EXPECTED.search(detail)
        given = origin.value if origin.value is not None else (got["got"] if got and got["got"] else None)
        line = f"{origin.describe(key)}: expected {expected}" + (
            f", got {given}" if given is not None else ""
        )
        suggestion = nearest_name(given.strip("'\""), choices) if given and choices else None
        example = suggestion or _example_value(expected, given)
        if example is not None:
            return f"{line}; did you mean {example}? Fix: {_fixed(key, origin, example)}"
        if choices:
            return f"{line}; fix: give one of those"
        return f"{line}; fix: give {expected} ({prog} --help shows the option's type)"

    lines = [line.strip() for line in message.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Given value")]
    return "; ".join(lines)[:400]


def _fixed(key: str, origin: Origin, value: str) -> str:
    if origin.file is not None:
        return f"set {key.rpartition('.')[2]}: {value} in {origin.file}" + (
            f", line {origin.line}" if origin.line else ""
        )
    return f"--{key}={value}"


def _unknown(
    key: str, reason: str, suggestion: str | None, prefix: str, args: Sequence[str], help_hint: str
) -> str:
    origin = find_origin(key, args)
    line = f"{origin.describe(key)}: {reason}"
    if suggestion is None:
        return f"{line}; {help_hint}"
    if origin.file is not None:
        fix = f"rename the key to {suggestion} in {origin.file}"
    elif origin.value is not None:
        fix = f"--{prefix}{suggestion}={origin.value}"
    else:
        fix = f"--{prefix}{suggestion}"
    return f"{line}; did you mean `{suggestion}`? Fix: {fix}"


def _unknown_key(key: str, suggestion: str | None, args: Sequence[str], help_hint: str) -> str:
    origin = find_origin(key, args)
    reason = f"no option {key}" if origin.argument is None else "no such option"
    line = f"{origin.describe(key)}: {reason}"
    if suggestion is None:
        return f"{line}; {help_hint}"
    if origin.file is not None:
        fix = f"write {suggestion} in {origin.file}"
    elif origin.value:
        fix = f"--{suggestion}={origin.value}"
    else:
        fix = f"--{suggestion}"
    return f"{line}; did you mean `{suggestion}`? Fix: {fix}"


# --------------------------------------------------------------------------------------- the parser
class OptionParser(LightningArgumentParser):
    """The parser of every madm-pl command: a bad option ends in one line (``explain``), exit code 2.

    It remembers the arguments of its last ``parse_args`` (a subcommand's parser: the options after the
    subcommand) to find where a bad key came from.
    """

    def parse_args(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Any:
        self._given_args = list(sys.argv[1:] if args is None else args)
        return super().parse_args(args, *rest, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if FULL_PARSER_MESSAGES.get() or not self.exit_on_error:
            super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        try:
            line = explain(message, self, getattr(self, "_given_args", []), prog)
        except Exception:  # the explanation must never hide the error itself
            line = " ".join(message.split())[:400]
        sys.stdout.flush()
        print(f"{prog}: error: {line}", file=sys.stderr, flush=True)
        self.exit(2)


# ------------------------------------------------------------------------- the Trainer's own checks
_BACKTICKED = re.compile(r"`(\w+)`")


def trainer_option_error(
    error: Exception, trainer_options: Iterable[str], args: Sequence[str]
) -> OptionError:
    """The ``OptionError`` for a Trainer argument the Trainer refused (its ``MisconfigurationException``):
    the option and where it was given, then Lightning's sentence (which states the allowed values)."""
    text = " ".join(str(error).split())
    options = set(trainer_options)
    names = [name for name in _BACKTICKED.findall(text) if name in options]
    if not names:
        return OptionError(f"a trainer option: {text}")
    key = f"trainer.{names[0]}"
    origin = find_origin(key, args)
    where = origin.describe(key) if origin.argument or origin.file else f"{key} (its default)"
    return OptionError(f"{where}: {text}")
