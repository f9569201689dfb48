"""What reflectkit keeps on disk or in a database: the run log (:mod:`.runlog`, made of the
``run_*`` modules, among them :mod:`.run_owner`, the owner of a running run), lesson memory
(:mod:`.memory`), durable-run checkpoints (:mod:`.durability`, made of the ``checkpoint_*``
modules), the SQLite plumbing and store lifecycle they share (:mod:`.sqlite`) and JSON-lines
files (:mod:`.jsonl`).

Stores hold the loop's data; they never import the loop (graph, api, batching).
"""
