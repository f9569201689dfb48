"""A pydantic base model whose validation errors are reflectkit's, in one line."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from reflectkit.errors import ConfigurationError

__all__ = ["StrictModel", "one_line"]


def one_line(error: ValidationError, what: str = "configuration") -> str:
    """Pydantic's error list as one line: ``invalid X: field: message; ...``."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or what
        parts.append(f"{where}: {item['msg']}")
    return f"invalid {what}: " + "; ".join(parts)


class StrictModel(BaseModel):
    """Frozen, no unknown fields, and bad values raise ConfigurationError (a ValueError)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise ConfigurationError(one_line(error, type(self).__name__)) from None
