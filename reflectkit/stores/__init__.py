"""What reflectkit keeps on disk or in a database: the run log (:mod:`.runlog`), lesson memory
(:mod:`.memory`), durable-run checkpoints (:mod:`.durability`), the SQLite plumbing they share
(:mod:`.sqlite`), JSON-lines files (:mod:`.jsonl`) and the owner of a running run
(:mod:`.run_owner`).

Stores hold the loop's data; they never import the loop (graph, api, batching).
"""
