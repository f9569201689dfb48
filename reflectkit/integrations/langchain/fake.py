"""A fake LangChain chat model for tests: one of :mod:`reflectkit.testing`'s fakes, as a LangChain
``BaseChatModel`` that can be an agent's model.

:class:`FakeChatModel` answers from a :class:`~reflectkit.testing.ScriptedLLM` or
:class:`~reflectkit.testing.FunctionLLM`, called in-process (LangChain calls it, not LiteLLM).
Replies may call tools (``Reply(tool_calls=[tool_call("add", {"a": 2, "b": 2})])``), which come
back as an ``AIMessage`` with ``tool_calls``, so a LangGraph agent runs its tools on them; and
the fake records every request in OpenAI's format (``fake.requests[-1].last_user_text``)::

    fake = ScriptedLLM([Reply(tool_calls=[tool_call("add", {"a": 2, "b": 2})]), "4"])
    model = FakeChatModel(fake).bind_tools([add])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict

from reflectkit.integrations.langchain.chat_model import _lc_tool_calls
from reflectkit.models.adapter import ToolCallReply
from reflectkit.models.provider import ProviderReply
from reflectkit.testing import FunctionLLM, ScriptedLLM

__all__ = ["FakeChatModel"]


def _message(reply: ProviderReply) -> AIMessage:
    calls = list(reply.tool_calls) if isinstance(reply, ToolCallReply) else []
    valid, invalid = _lc_tool_calls(calls)
    prompt, completion = reply.prompt_tokens or 0, reply.completion_tokens or 0
    return AIMessage(
        content=reply.text,
        tool_calls=valid,
        invalid_tool_calls=invalid,
        usage_metadata=UsageMetadata(
            input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion
        ),
        response_metadata={"finish_reason": reply.finish_reason},
    )


class FakeChatModel(BaseChatModel):
    """A LangChain chat model whose replies come from ``fake`` (a ScriptedLLM or FunctionLLM).

    Requests land in ``fake.requests`` as OpenAI-format messages, with the bound tools in each
    request's ``params["tools"]``. A script that runs out fails the call with
    :class:`~reflectkit.testing.ScriptExhaustedError`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    fake: ScriptedLLM | FunctionLLM

    def __init__(self, fake: ScriptedLLM | FunctionLLM, **kwargs: Any) -> None:
        super().__init__(**{"fake": fake, **kwargs})

    @property
    def _llm_type(self) -> str:
        return "reflectkit-fake"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` (recorded in each request's ``params["tools"]``, OpenAI format)."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**kwargs, **({"stop": stop} if stop else {})}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        sent = convert_to_openai_messages(messages)
        reply = self.fake.answer(sent, self._params(stop, kwargs), stream=False)
        return ChatResult(generations=[ChatGeneration(message=_message(reply))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        sent = convert_to_openai_messages(messages)
        reply = await self.fake.aanswer(sent, self._params(stop, kwargs), stream=False)
        return ChatResult(generations=[ChatGeneration(message=_message(reply))])
