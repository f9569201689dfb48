"""A person as the critic: the run pauses for a verdict, and resumes from its checkpoint.

Runs without a key, on a fake model: the first process's part (the run pauses on a wrong
draft) and the second's (a new Reflector resumes the thread with feedback, then with a pass)
share only the checkpoint file and the thread id. See docs/human-critic.md.
"""

import tempfile
from pathlib import Path

import reflectkit as rk
from reflectkit.testing import ScriptedLLM

QUESTION = "If a number plus 5 equals 12, what is that number minus 3?"
fake = ScriptedLLM(["<thinking>12 + 5 = 17</thinking><output>17</output>", "<output>4</output>"])
saves = Path(tempfile.mkdtemp()) / "checkpoints.sqlite3"


def reflector() -> rk.Reflector:
    """The same settings each time: resuming needs the run's model and critic."""
    return rk.Reflector(fake.model, critic=rk.HumanCritic(), checkpointer=saves, run_log=False)


with reflector() as first:
    paused = first.run(QUESTION)
print(f"{paused.stop_reason.value}: draft {paused.output!r} on thread {paused.thread_id}")

# Later, perhaps in another process: the person's verdicts, by thread id.
with reflector() as later:
    revised = later.resume(paused.thread_id, "12 - 5 is 7, so the answer is 7 - 3.")
    print(f"{revised.stop_reason.value}: draft {revised.output!r}")
    done = later.resume(revised.thread_id, "pass")
print(f"{done.stop_reason.value}: {done.output} after {done.usage.calls} model calls")
