"""Run every ``telethon-guard bench`` workload and (optionally) record the table.

::

    python benchmarks/run_all.py                      # full run (a few minutes), prints the table
    python benchmarks/run_all.py --quick              # under a minute
    python benchmarks/run_all.py --update-readme      # also record it in benchmarks/README.md

Extra options go to ``telethon-guard bench`` (``--json``, ``--plot``, ``--duration``...). With
``--update-readme`` the measured table, the notes on missed targets and the machine (``nproc``,
CPU model, Python, Telethon) replace the block between the ``bench:begin`` / ``bench:end``
markers of benchmarks/README.md, and ``telethon-guard demo`` runs too, its table replacing the
``demo:begin`` / ``demo:end`` block. Exit status is the bench's.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from telethon_guard.bench.results import Report, Row, render_report
from telethon_guard.cli import main

README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
DEMO_BEGIN, DEMO_END = "<!-- demo:begin -->", "<!-- demo:end -->"


def _report_from_json(data: dict[str, Any]) -> Report:
    report = Report(mode=data.get("mode", "full"), interrupted=bool(data.get("interrupted")),
                    machine=dict(data.get("machine", {})))
    for r in data.get("rows", []):
        report.add(Row(workload=r["workload"], label=r["label"], plain=r["plain"],
                       guarded=r["guarded"], result=r["result"], target=r["target"],
                       met=r["met"], note=r["note"], complete=r["complete"]))
    return report


def readme_block(data: dict[str, Any], command: str) -> str:
    """The Markdown block recorded in benchmarks/README.md."""
    m = data.get("machine", {})
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = (f"{m.get('nproc', '?')} CPUs (`nproc`), {m.get('cpu', '?')}; "
               f"Python {m.get('python', '?')}; Telethon {m.get('telethon', '?')}; "
               f"{m.get('platform', '')}")
    figures = {k: v for k, v in data.items() if k not in ("rows", "machine")}
    return "\n".join([
        BEGIN,
        f"Measured {when} with `{command}` ({data.get('mode')} mode).",
        f"Machine: {machine}.",
        "",
        render_report(_report_from_json(data)),
        "",
        "<details><summary>all figures (JSON)</summary>",
        "",
        "```json",
        json.dumps(figures, indent=2),
        "```",
        "",
        "</details>",
        END,
    ])


def update_readme(block: str, path: Path = README, begin: str = BEGIN, end: str = END) -> None:
    """Replace the text between ``begin`` and ``end`` in ``path`` with ``block`` (which carries
    the markers itself); append it when the markers are missing."""
    text = path.read_text(encoding="utf-8") if path.exists() else f"{begin}\n{end}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def demo_block() -> str:
    """Run ``telethon-guard demo`` and return its table as a README block."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main(["demo"])
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return "\n".join([DEMO_BEGIN, f"Measured {when} with `telethon-guard demo` "
                      f"(exit status {status}).", "", "```", buf.getvalue().rstrip(), "```",
                      DEMO_END])


def run(argv: list[str]) -> int:
    update = "--update-readme" in argv
    args = [a for a in argv if a != "--update-readme"]
    json_path: Path | None = None
    if "--json" in args:
        json_path = Path(args[args.index("--json") + 1])
    tmp = None
    if json_path is None:
        tmp = tempfile.NamedTemporaryFile(suffix=".json", delete=False)
        tmp.close()
        json_path = Path(tmp.name)
        args += ["--json", str(json_path)]
    try:
        status = main(["bench", *args])
        if update and status == 0:
            data = json.loads(json_path.read_text(encoding="utf-8"))
            command = " ".join(["python benchmarks/run_all.py", *argv])
            update_readme(readme_block(data, command))
            update_readme(demo_block(), begin=DEMO_BEGIN, end=DEMO_END)
            print(f"updated {README}", file=sys.stderr)
        return status
    finally:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
