"""Quick start: the reflection loop on a scripted model, no key or network needed.

Run it with ``python examples/quickstart.py``. Swap ``model=fake.model`` for any LiteLLM model
string (``"gpt-4o-mini"``, ``"ollama/llama3"``) to run the same code on a real model, and drop
``run_log=False`` to keep its runs in your run log (``reflectkit runs list``).
"""

from __future__ import annotations

import reflectkit as rk
from reflectkit.testing import ScriptedLLM

QUESTION = "If a number plus 5 equals 12, what is that number minus 3?"

# A model that slips on the first try, a critic that notices, and a corrected second draft.
fake = ScriptedLLM(
    [
        "<thinking>x + 5 = 12, so x = 7. Then 7 - 3 = 5.</thinking><output>5</output>",
        '{"verdict": "revise", "score": 3, "issues": ["7 - 3 is 4"], "feedback": "Recheck 7 - 3."}',
        "<thinking>x = 7, and 7 - 3 = 4.</thinking>"
        "<reflection>I subtracted wrongly before; 7 - 3 = 4.</reflection><output>4</output>",
        '{"verdict": "pass", "score": 10, "issues": [], "feedback": ""}',
    ]
)


def main() -> None:
    # run_log=False: a demo on a fake model stays out of your run log.
    reflector = rk.Reflector(fake.model, max_iterations=3, run_log=False)
    for event in reflector.stream(QUESTION):
        if isinstance(event, rk.StepEvent):
            detail = ""
            if event.draft is not None:
                detail = f"answer={event.draft.output!r}"
            if event.verdict is not None:
                detail = f"passed={event.verdict.passed} feedback={event.verdict.feedback!r}"
            print(f"step {event.node:<9} iteration {event.iteration}  {detail}")
        elif isinstance(event, rk.ResultEvent):
            result = event.result
            print()
            print("answer:     ", result.output)
            print("reflections:", result.reflections)
            print("stop reason:", result.stop_reason.value)
            print("calls:      ", result.usage.calls, "tokens:", result.usage.total_tokens)
            assert result.output == "4"


if __name__ == "__main__":
    main()
