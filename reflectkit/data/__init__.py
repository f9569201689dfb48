"""Data tools: turn recorded runs into fine-tuning data (:mod:`.export`), and improve instruction
data with an oracle model (:mod:`.recycle`). Both sit on top of the loop and the stores; the
command line's ``export`` and ``recycle`` drive them."""
