"""Token, call and cost accounting, summed per step and per run."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Usage"]


class Usage(BaseModel):
    """What model calls cost. Add two with ``+``.

    ``cost_usd`` sums the calls whose price LiteLLM knows; ``unpriced_calls`` counts the others
    (local and fake models, or models missing from LiteLLM's price map), so a cost of 0 with
    unpriced calls means "unknown", not "free".
    """

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    """Tokens sent."""
    completion_tokens: int = 0
    """Tokens received."""
    calls: int = 0
    """Model calls made."""
    cost_usd: float = 0.0
    """What the calls cost in USD, as LiteLLM prices them."""
    unpriced_calls: int = 0
    """Calls LiteLLM had no price for (``cost_usd`` leaves them out)."""

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            calls=self.calls + other.calls,
            cost_usd=self.cost_usd + other.cost_usd,
            unpriced_calls=self.unpriced_calls + other.unpriced_calls,
        )
