"""reflectkit inside other frameworks.

Each integration lives in its own module and is imported on its own, so ``import reflectkit``
never loads a framework you do not use: :mod:`reflectkit.integrations.langchain` holds
:class:`~reflectkit.integrations.langchain.ReflectiveChatModel`, a LangChain chat model.
"""
