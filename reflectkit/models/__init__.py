"""The model layer: how reflectkit talks to a model. The provider contract (:mod:`.provider`)
and its errors (:mod:`.provider_errors`), the client every step calls (:mod:`.llm`, retries and
usage over LiteLLM), the LiteLLM adapter (:mod:`.adapter`), what each model can do
(:mod:`.capabilities`), and the embedded llama.cpp model (:mod:`.local`).

Models never import the loop (graph, api, batching) or the stores' run data.
"""
