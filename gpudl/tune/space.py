"""Search spaces written as text: ``NAME=SPEC`` with SPEC one of ``log:LO:HI``, ``LO:HI``, ``int:LO:HI``
or ``a,b,c``, and the trial suggestions they stand for (no Optuna import: the trial does the sampling)."""
import argparse
import itertools
from dataclasses import dataclass

FORMS = ("log:LO:HI (log-uniform), LO:HI (uniform float), int:LO:HI (uniform integer) "
         "or a,b,c (a choice; the grid's values)")


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: ``kind`` is ``log``, ``uniform``, ``int`` or ``choice``; ``integer`` says
    whether a ``log`` range draws integers; ``text`` is the spec as written."""
    name: str
    kind: str
    text: str
    low: float = 0.0
    high: float = 0.0
    integer: bool = False
    choices: tuple = ()

    def suggest(self, trial):
        """Draw this parameter's value for an Optuna ``trial``."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int" or self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.kind == "log")
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log")


def _plain_value(text):
    """A choice written as text: an int, else a float, else the string itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_param(name, spec, convert=None, integer=False):
    """The ``ParamSpec`` of ``name=spec``.

    ``convert`` turns one written value into the parameter's value and raises ``ValueError`` (or
    argparse's ``ArgumentTypeError``) for a bad one; by default numbers stay numbers and other
    text stays text. ``integer`` marks an integer parameter: it takes ``int:`` and ``log:`` ranges
    (drawing integers) but not a uniform float range. Raises ``ValueError`` naming the parameter
    and the accepted forms."""
    def fail(reason):
        raise ValueError(f"--param {name}={spec}: {reason}; accepted forms: {FORMS}")

    def value(text, number=None):
        """``text`` as the parameter's value; ``number`` (int or float) first checks that a bound is one."""
        try:
            if number is not None:
                parsed = number(text)
                return parsed if convert is None else convert(text)
            return (convert or _plain_value)(text)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            fail(f"bad value {text!r} ({exc})")

    text = spec.strip()
    if not text:
        fail("empty spec")
    if ":" not in text:
        items = [item.strip() for item in text.split(",")]
        if any(not item for item in items):
            fail("empty choice")
        choices = tuple(dict.fromkeys(value(item) for item in items))
        return ParamSpec(name, "choice", text, choices=choices)
    kind, _, bounds = text.partition(":") if text.split(":", 1)[0] in ("log", "int") else ("uniform", "", text)
    if kind == "uniform" and integer:
        fail(f"{name} is an integer: use int:LO:HI, log:LO:HI or a,b,c")
    if kind == "int" and not integer and convert is not None:
        fail(f"{name} is not an integer parameter")
    parts = bounds.split(":")
    if len(parts) != 2:
        fail(f"a {kind} range needs exactly LO:HI")
    low, high = (value(part, int if kind == "int" else float) for part in parts)
    if not low < high:
        fail(f"LO must be below HI, got {parts[0]} and {parts[1]}")
    if kind == "log" and low <= 0:
        fail("a log range needs LO > 0")
    return ParamSpec(name, kind, text, low=low, high=high, integer=integer or kind == "int")


def suggest(trial, space):
    """Draw every parameter of ``space`` (a mapping of name to ``ParamSpec`` or spec text such as
    ``"log:1e-4:1e-1"``) for ``trial``; returns a dict of name to value."""
    return {name: (spec if isinstance(spec, ParamSpec) else parse_param(name, spec)).suggest(trial)
            for name, spec in space.items()}


def grid_of(space):
    """The grid of a space whose parameters are all choices: a dict of name to list of values.
    Raises ``ValueError`` naming a parameter given as a range."""
    ranges = [f"{spec.name}={spec.text}" for spec in space.values() if spec.kind != "choice"]
    if ranges:
        raise ValueError(f"--sampler grid needs a list of values (a,b,c) for every parameter; "
                         f"given as a range: {', '.join(ranges)}")
    if not space:
        raise ValueError("--sampler grid needs at least one --param NAME=a,b,c")
    return {name: list(spec.choices) for name, spec in space.items()}


def grid_points(grid):
    """Every point of ``grid`` (name -> values), in a fixed order: a list of dicts."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[name] for name in names))]
