"""Typed settings for every service, from one TOML file, ``PROXIMA_*`` variables and flags.

Each service has a frozen dataclass of settings (``EdgeSettings``, ``BridgeSettings``,
``TrainerSettings``, ``MonitorSettings``, ``RolloutSettings``) whose fields are declared
with :func:`setting`: default, help text, range. Everything else is derived from that one
declaration, so it cannot drift:

* :func:`load_settings` reads the service's table of a TOML file (``[edge]``, ``[bridge]``,
  ``[trainer]``, ``[monitor]``, ``[rollout]``), then ``PROXIMA_<FIELD>`` variables, then
  flags; later sources win, and an unknown key in the file or among the flags is an error;
* :func:`check_ranges` enforces the declared ranges (called from ``__post_init__``): every
  number finite and between a declared ``min`` and ``max``;
* :func:`settings_options` makes the click options of a command from the fields, with the
  dataclass default shown in ``--help`` and the declared range as the option's type.

The environment is only read by the entry point, which passes it in.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, get_args, get_origin

import click

from protocol.errors import ProximaError

ENV_PREFIX: Final = "PROXIMA_"
TABLES: Final = ("edge", "bridge", "trainer", "monitor", "rollout", "lake")
#: The ceiling of a duration whose field declares no ``max`` (asyncio overflows long before inf).
IMPLICIT_MAX_DURATION_S: Final = 366 * 86_400.0
#: The ceiling of any other number whose field declares no ``max`` (exact in a float).
IMPLICIT_MAX_NUMBER: Final = float(2**53)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class SettingsError(ProximaError):
    """A setting is unknown, of the wrong type or out of range; or its file is unreadable."""

    code = "bad_settings"
    status = 400


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    min: float | None = None,
    max: float | None = None,
    min_open: bool = False,
    duration: bool = False,
    flag: str | None = None,
    cli: bool = True,
    secret: bool = False,
) -> Any:
    """A settings field: its default, what it means, and the range it must lie in.

    ``duration`` fields are seconds and also take ``90s``, ``10m``, ``1h``; ``flag`` names
    the option when it is not ``--<field-name>``; ``cli=False`` keeps a field out of the
    command line (file and environment only); ``secret`` keeps it out of reprs.
    """
    metadata = {
        "help": help,
        "min": min,
        "max": max,
        "min_open": min_open,
        "duration": duration,
        "flag": flag,
        "cli": cli,
    }
    if default is not dataclasses.MISSING and isinstance(default, list | dict | set):
        raise TypeError("settings defaults are immutable: use a tuple")
    return dataclasses.field(default=default, repr=not secret, metadata=metadata)


def check_ranges(instance: object) -> None:
    """Raises :class:`SettingsError` for the first field outside its declared range.

    Every number is finite and bounded: a field that declares no ``max`` is still held
    below :data:`IMPLICIT_MAX_DURATION_S` (durations) or :data:`IMPLICIT_MAX_NUMBER`, since
    any number reaches a timeout, a sleep or a buffer size somewhere.
    """
    for f in dataclasses.fields(instance):  # type: ignore[arg-type]
        value = getattr(instance, f.name)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        low, high, open_low = (
            f.metadata.get("min"),
            f.metadata.get("max"),
            f.metadata.get("min_open", False),
        )
        if high is None:
            high = IMPLICIT_MAX_DURATION_S if f.metadata.get("duration") else IMPLICIT_MAX_NUMBER
        integral = isinstance(value, int)
        if isinstance(value, float) and not math.isfinite(value):
            bound = "" if low is None else ", " + _lower_bound(low, open_low, integral=False)
            raise SettingsError(f"{f.name} must be a finite number{bound}", field=f.name)
        if low is not None and (value <= low if open_low else value < low):
            bound = _lower_bound(low, open_low, integral=integral)
            raise SettingsError(f"{f.name} must be {bound}, not {value:g}", field=f.name)
        if value > high:
            span = "" if low is None else f" (its range is {low:g}-{high:g})"
            raise SettingsError(
                f"{f.name} must be at most {high:g}{span}, not {value:g}", field=f.name
            )


def _lower_bound(low: float, open_low: bool, *, integral: bool) -> str:
    """``at least 5``, ``above 0``; a bound that means "positive" says so too."""
    bound = f"above {low:g}" if open_low else f"at least {low:g}"
    if (open_low and low == 0) or (integral and not open_low and low == 1):
        return f"positive ({bound})"
    return bound


def load_settings(
    cls: type[T],
    *,
    table: str,
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    env_prefix: str = ENV_PREFIX,
) -> T:
    """``cls`` from the ``table`` of ``file`` < ``env`` < ``overrides`` (None values skipped)."""
    fields = _fields(cls)
    values: dict[str, Any] = {}
    if file is not None:
        section = read_table(file, table)
        for key in section:
            if key not in fields:
                raise SettingsError(
                    f"settings file {file}: [{table}] has no setting {key!r}", field=key
                )
        values.update(section)
    for key, value in (env or {}).items():
        if key.startswith(env_prefix):
            name = key[len(env_prefix) :].lower()
            if name in fields:  # other commands share the prefix: leave theirs alone
                values[name] = value
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in fields:
            raise SettingsError(f"unknown setting {key!r}", field=key)
        values[key] = value
    hints = typing.get_type_hints(cls)
    missing = [
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        name = missing[0]
        raise SettingsError(
            f"{name} is required (flag {_flag(fields[name])}, env {env_prefix}{name.upper()} "
            f"or [{table}] in the settings file)",
            field=name,
        )
    coerced = {
        name: coerce(name, hints[name], value, fields[name]) for name, value in values.items()
    }
    try:
        return cls(**coerced)
    except TypeError as exc:  # a field the dataclass does not take in __init__
        raise SettingsError(str(exc)) from exc


def read_table(file: Path, table: str) -> dict[str, Any]:
    """The ``[table]`` of a TOML file; a file with no tables at all is taken as that table."""
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {file}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"settings file {file} is not valid TOML: {exc}") from exc
    misplaced = [k for k, v in data.items() if k in TABLES and not isinstance(v, dict)]
    if misplaced:
        raise SettingsError(
            f"settings file {file}: [{misplaced[0]}] must be a table", field=misplaced[0]
        )
    if not any(isinstance(v, dict) for v in data.values()):
        return data  # a flat file of one service's settings
    unknown = [k for k, v in data.items() if isinstance(v, dict) and k not in TABLES]
    if unknown:
        raise SettingsError(
            f"settings file {file}: unknown table [{unknown[0]}] (tables: {', '.join(TABLES)})",
            field=unknown[0],
        )
    stray = [k for k, v in data.items() if not isinstance(v, dict)]
    if stray:
        raise SettingsError(
            f"settings file {file}: {stray[0]!r} is outside any table", field=stray[0]
        )
    section = data.get(table, {})
    return dict(section)


def coerce(name: str, hint: Any, value: Any, f: dataclasses.Field[Any] | None = None) -> Any:
    """``value`` (from TOML, the environment or a flag) as the field's type."""
    try:
        if f is not None and f.metadata.get("duration") and isinstance(value, str):
            return parse_duration(value)
        return _to_type(hint, value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{name}: {exc}", field=name) from exc


_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 90s, 10m or 1h")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _to_type(hint: Any, value: Any) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if value is None or value == "":
            return None
        return _to_type(options[0], value)
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(map(str, allowed))}, not {value!r}")
        return value
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise TypeError("must be a list")
        element = get_args(hint)[0] if get_args(hint) else str
        stripped = [i.strip() if isinstance(i, str) else i for i in items]
        return tuple(_to_type(element, i) for i in stripped if i != "")
    if hint is bool:
        if isinstance(value, bool):
            return value
        words = {"1": True, "true": True, "yes": True, "on": True}
        words |= {"0": False, "false": False, "no": False, "off": False}
        if isinstance(value, str) and value.lower() in words:
            return words[value.lower()]
        raise ValueError(f"must be true or false, not {value!r}")
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"must be an integer, not {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(f"must be a number, not {value!r}")
        return float(value)
    if hint is Path:
        if not isinstance(value, str | Path):
            raise TypeError("must be a path")
        return Path(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError("must be a string")
        return value
    raise TypeError(f"unsupported setting type {hint}")


# -- the command line ---------------------------------------------------------------------


def settings_options(
    *classes: type[Any], only: Iterable[str] | None = None, exclude: Iterable[str] = ()
) -> Callable[[F], F]:
    """Click options for the fields of ``classes`` (a field shared by several appears once).

    Every option defaults to None, so a flag left out does not override the file or the
    environment; ``--help`` shows the dataclass default and the range.
    """
    wanted = set(only) if only is not None else None
    skipped = set(exclude)
    seen: dict[str, tuple[dataclasses.Field[Any], Any]] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for name, f in _fields(cls).items():
            if not f.metadata.get("cli", True) or name in skipped or name in seen:
                continue
            if wanted is not None and name not in wanted:
                continue
            seen[name] = (f, hints[name])

    def decorate(function: F) -> F:
        for name, (f, hint) in reversed(list(seen.items())):
            function = _option(name, f, hint)(function)
        return function

    return decorate


def _option(name: str, f: dataclasses.Field[Any], hint: Any) -> Callable[[F], F]:
    kind = _click_type(f, hint)
    default = f.default
    shown = ""
    if default is not dataclasses.MISSING and default is not None and default != ():
        shown = f" [default: {_show(default)}]"
    elif default is dataclasses.MISSING:
        shown = " [required]"
    help_text = f"{f.metadata.get('help', '')}{shown} Env: {ENV_PREFIX}{name.upper()}."
    if kind is bool:
        return click.option(f"{_flag(f)}/--no-{_flag(f)[2:]}", name, default=None, help=help_text)
    return click.option(_flag(f), name, type=kind, default=None, help=help_text)


def _click_type(f: dataclasses.Field[Any], hint: Any) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
        origin = get_origin(hint)
    if origin is Literal:
        return click.Choice([str(a) for a in get_args(hint)])
    if hint is bool:
        return bool
    low, high, open_low = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("min_open")
    if f.metadata.get("duration"):
        return _DurationType()
    if hint is int:
        return click.IntRange(
            None if low is None else int(low), None if high is None else int(high)
        )
    if hint is float:
        return click.FloatRange(low, high, min_open=bool(open_low))
    if hint is Path:
        return click.Path(path_type=Path)
    return str


class _DurationType(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _flag(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("flag") or "--" + f.name.replace("_", "-"))


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _fields(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a settings dataclass")
    return {f.name: f for f in dataclasses.fields(cls) if f.init}
