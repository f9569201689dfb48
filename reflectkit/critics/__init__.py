"""Critics decide whether a draft is good enough, and say what to fix when it is not."""

from reflectkit.critics.base import (
    Critic,
    CriticSetup,
    CritiqueRequest,
    FunctionCritic,
    TrajectoryCritic,
    coerce_verdict,
)
from reflectkit.critics.code import CodeTestCritic, TestRun, extract_code, run_tests
from reflectkit.critics.compose import AllOf, AnyOf, as_critic
from reflectkit.critics.human import HumanCritic, human_verdict
from reflectkit.critics.llm_critic import LLMCritic
from reflectkit.critics.schema import SchemaCritic
from reflectkit.verdict import Verdict, parse_verdict

__all__ = [
    "AllOf",
    "AnyOf",
    "CodeTestCritic",
    "Critic",
    "CriticSetup",
    "CritiqueRequest",
    "FunctionCritic",
    "HumanCritic",
    "LLMCritic",
    "SchemaCritic",
    "TestRun",
    "TrajectoryCritic",
    "Verdict",
    "as_critic",
    "coerce_verdict",
    "extract_code",
    "human_verdict",
    "parse_verdict",
    "run_tests",
]
