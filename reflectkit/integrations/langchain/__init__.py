"""LangChain, both ways: reflectkit as a LangChain chat model (:mod:`.chat_model`,
:class:`ReflectiveChatModel`), and a LangChain chat model as a reflectkit model, served as the
``langchain`` provider (:mod:`.provider`). :class:`FakeChatModel` (:mod:`.fake`) is one of
reflectkit's fake models as a LangChain chat model, for tests."""

from reflectkit.integrations.langchain.chat_model import ReflectiveChatModel
from reflectkit.integrations.langchain.fake import FakeChatModel
from reflectkit.integrations.langchain.provider import PROVIDER

__all__ = ["PROVIDER", "FakeChatModel", "ReflectiveChatModel"]
