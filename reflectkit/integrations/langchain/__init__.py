"""LangChain, both ways: reflectkit as a LangChain chat model (:mod:`.chat_model`,
:class:`ReflectiveChatModel`), and a LangChain chat model as a reflectkit model, served as the
``langchain`` provider (:mod:`.provider`)."""

from reflectkit.integrations.langchain.chat_model import ReflectiveChatModel
from reflectkit.integrations.langchain.provider import PROVIDER

__all__ = ["PROVIDER", "ReflectiveChatModel"]
