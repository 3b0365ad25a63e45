"""Credits (spec §16.8): 1 per 1,000 tokens (rounded up, times the model's price factor) plus 1
per tool call."""

from __future__ import annotations

import math
from collections.abc import Mapping

from kennel.config import Settings
from kennel.models import BUDGET_CAPS, Budget, BudgetCaps, Usage

TOKENS_PER_CREDIT = 1000
NO_CREDITS = "the organization has no credits left"


def has_credits(balance: int | None) -> bool:
    """Whether an organization may start work: it has credits left, or no balance at all."""
    return balance is None or balance > 0


def credits_for(usage: Usage, model_name: str, prices: Mapping[str, float]) -> int:
    factor = price_factor(model_name, prices)
    tokens = usage.input_tokens + usage.output_tokens
    return math.ceil(tokens * factor / TOKENS_PER_CREDIT) + usage.tool_calls


def price_factor(model_name: str, prices: Mapping[str, float]) -> float:
    """The factor for `provider:model`, looked up by full name first, then by model name."""
    if model_name in prices:
        return prices[model_name]
    return prices.get(model_name.partition(":")[2], 1.0)


def add_usage(first: Usage, second: Usage) -> Usage:
    return Usage(
        input_tokens=first.input_tokens + second.input_tokens,
        output_tokens=first.output_tokens + second.output_tokens,
        requests=first.requests + second.requests,
        tool_calls=first.tool_calls + second.tool_calls,
        credits=first.credits + second.credits,
    )


def budget_caps(budget: Budget, settings: Settings) -> BudgetCaps:
    """What one turn of `budget` may spend; `unlimited` is held by the server's safety caps."""
    if budget is Budget.UNLIMITED:
        return BudgetCaps(
            requests=settings.unlimited_max_requests,
            tool_calls=settings.unlimited_max_tool_calls,
            tokens=settings.unlimited_max_tokens,
        )
    return BUDGET_CAPS[budget]
