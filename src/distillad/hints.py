"""Bounded keyword types for method signatures: ``lr: PositiveFloat = 0.005``.

They are ``typing.Annotated`` hints carrying ``annotated_types`` bounds (the same metadata
pydantic reads), so a signature states its valid range once; ``registry.check_bounds``
enforces it for every method (on a tuple, for each element) and ``config`` turns it into
JSON-Schema bounds. Plain type-hint readers see the underlying type. Every float keyword is
also required to be finite, bounded or not.
"""

from __future__ import annotations

from typing import Annotated

from annotated_types import Ge, Gt, Interval

from .errors import ConfigError

__all__ = ["check_int", "PositiveFloat", "NonNegativeFloat", "PositiveInt", "Fraction", "Betas", "NonNegativePair"]

PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
PositiveInt = Annotated[int, Ge(1)]
Fraction = Annotated[float, Interval(gt=0, le=1)]
#: Adam's (β1, β2), each in [0, 1)
Betas = Annotated[tuple[float, float], Interval(ge=0, lt=1)]
NonNegativePair = Annotated[tuple[float, float], Ge(0)]


def check_int(name: str, value: object, minimum: int = 1, none_ok: bool = False) -> None:
    """A setting that must be an integer ≥ ``minimum`` (bools are not integers here); ``ConfigError`` naming it."""
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
