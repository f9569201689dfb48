"""Time to first answer: a cold ``reflectkit run "What is 2+2?"`` on the embedded model.

Each round starts fresh processes (warm disk, cold interpreter, no worker running) and times,
interleaved so the machine's drift hits every row alike:

* **run**: the whole command, from start to exit, as a user waits for it;
* **import api**: ``python -c "import reflectkit.api"`` (LangGraph and the core: paid by every
  run before its first call);
* **import litellm**: ``python -c "import litellm"`` (offline price map), which the local model's
  path no longer pays; for scale;
* **vs** (with ``--vs BIN``): the same run with another install's ``reflectkit`` executable,
  e.g. a virtual environment of an older release, for a before/after ratio taken pair by pair.

The run log goes to a temporary file, so your own is untouched.

    python benchmarks/cold_start.py                       # 7 rounds, about 1 minute
    python benchmarks/cold_start.py --vs /venvs/old/bin/reflectkit --rounds 9
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTION = "What is 2+2?"


def timed(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of ``command``; exits with its output if it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--vs", metavar="BIN", help="another install's reflectkit executable")
    args = parser.parse_args()
    here = shutil.which("reflectkit", path=str(Path(sys.executable).parent)) or "reflectkit"
    python = sys.executable
    with tempfile.TemporaryDirectory() as scratch:
        env = {
            **os.environ,
            "REFLECTKIT_RUN_LOG": str(Path(scratch) / "runs.sqlite"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        rows: dict[str, list[float]] = {
            "run": [],
            "import api": [],
            "import litellm": [],
        }
        commands = {
            "run": [here, "run", QUESTION],
            "import api": [python, "-c", "import reflectkit.api"],
            "import litellm": [python, "-c", "import litellm"],
        }
        if args.vs:
            rows["vs"] = []
            commands["vs"] = [args.vs, "run", QUESTION]
        for command in commands.values():  # warm the disk cache; not counted
            timed(command, env)
        for _ in range(args.rounds):
            for name, command in commands.items():
                rows[name].append(timed(command, env))
    print(f"cold `reflectkit run {QUESTION!r}`, {args.rounds} interleaved rounds (seconds)")
    print(f"{'':16}{'min':>8}{'median':>8}{'max':>8}")
    for name, values in rows.items():
        print(f"{name:16}{min(values):8.2f}{statistics.median(values):8.2f}{max(values):8.2f}")
    if args.vs:
        ratios = [a / b for a, b in zip(rows["run"], rows["vs"], strict=True)]
        print(f"run / vs, median of paired ratios: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
