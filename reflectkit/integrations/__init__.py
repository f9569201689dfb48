"""reflectkit inside other frameworks and front ends.

Each integration lives in its own module and is imported on its own, so ``import reflectkit``
never loads a framework you do not use: :mod:`.langchain` (reflectkit as a LangChain chat model,
and a LangChain chat model as a reflectkit model), :mod:`.wrapping` (``reflectkit.wrap``: a
chatbot function that reflects before it answers) and :mod:`.display` (results and live runs in
Jupyter).
"""
