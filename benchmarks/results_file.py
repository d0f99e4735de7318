"""Write one benchmark's section of benchmarks/RESULTS.md; other sections stay as they are."""

from __future__ import annotations

import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Every figure below was written by the script named in its section, with the command that "
    "made it, the date and the machine. Timings on this 2-core machine are noisy: speed is "
    "reported as a ratio against a baseline measured in the same run.\n"
)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


def invocation() -> str:
    """The command that started this benchmark: ``python benchmarks/<script> <arguments>``
    (shell-quoted), after ``nice -n N`` when the process runs niced (its niceness as read now)."""
    niceness = os.nice(0)
    command = shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    return f"nice -n {niceness} {command}" if niceness > 0 else command


def write_section(name: str, command: str, body: str) -> Path:
    """Replace (or add) the section ``name`` of RESULTS.md."""
    text = RESULTS.read_text("utf-8") if RESULTS.exists() else HEADER
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    section = (
        f"{start}\n{body.strip()}\n\n"
        f"_Command:_ `{command}`  \n_Date:_ {stamp}  \n_Machine:_ {machine()}\n{end}"
    )
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else (text.rstrip() + "\n\n" + section + "\n")
    )
    RESULTS.write_text(text, "utf-8")
    return RESULTS
