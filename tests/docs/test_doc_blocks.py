"""Every shell, Python and YAML block in README.md and docs/*.md runs in the suite.

Docs that are not run rot. This collects the fenced blocks of ``README.md`` and
``docs/*.md`` by parsing the Markdown (one test per block, id ``FILE:LINE``, the line of the
opening fence) and runs each against a live gateway: the session's ``default_gateway``, the
embedded default fleet (SmolLM2 on llama.cpp and a simulated ASIC) on a free port.

Blocks, by the fence's language:

- ``sh``, ``bash``, ``shell``: run by ``bash`` under ``set -euo pipefail``. Whole-line
  comments that *end* the block are its expected output: stdout must match them line for
  line, where ``...`` in a line matches any text and a line that is only ``...`` matches any
  number of lines. ``curl`` runs with ``--fail-with-body``, so an HTTP error status fails
  the block.
- ``console``: the lines starting with ``$ `` are the commands (run as above); the other
  lines are the expected output (matched the same way).
- ``python``: run by this venv's Python (the ``openai`` client is installed).
- ``yaml``: a whole config, loaded with ``gateway.settings.load_settings``.

Text, TOML and blocks without a language are prose and are not collected. Shell and Python
blocks run in an empty scratch directory (also ``HOME``), with ``127.0.0.1:8400`` and
``localhost:8400`` in their text replaced by the gateway's address, this venv's ``bin``
first on ``PATH``, and ``FRESHET_HOST``, ``FRESHET_PORT`` (for the CLI) and
``FRESHET_DATA_DIR`` (the gateway's own) set; each must exit 0 within ``TIMEOUT_S``.

A block that needs something else says so in an HTML comment on the line directly above
its opening fence (indented like the fence):

- ``<!-- doc-test: skip (REASON) -->``: not run here (it installs packages, builds an
  image, needs a GPU, a cluster or a Redis, or is a config fragment); reported as skipped
  with REASON.
- ``<!-- doc-test: pytest -->``: the block is a test module; it is run with
  ``python -m pytest`` (the plugin authors' example tests).

Any other ``doc-test:`` comment fails its block's test, so a misspelt marker cannot hide one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.settings import load_settings
from tests.support.server import Server

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {
    "sh": "shell",
    "bash": "shell",
    "shell": "shell",
    "console": "console",
    "python": "python",
    "yaml": "yaml",
}
DOCUMENTED_ADDRESSES = ("127.0.0.1:8400", "localhost:8400")
TIMEOUT_S = 240  # a busy 2-core machine; the examples themselves take seconds
SHELL_PRELUDE = 'set -euo pipefail; curl() { command curl --fail-with-body "$@"; }\n'

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<directive>.*?)\s*-->\s*$")
SKIP = re.compile(r"^skip\s*\((?P<reason>.+)\)$")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    kind: str  # shell | console | python | yaml
    text: str
    directive: str | None  # the doc-test marker above the fence, if any

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def collect(doc: Path) -> list[Block]:
    lines = doc.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        closing = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = i + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        words = opening["info"].split()
        kind = LANGUAGES.get(words[0].lower()) if words else None
        if kind is not None:
            body = [
                ln.removeprefix(indent) if ln.startswith(indent) else ln.lstrip()
                for ln in lines[i + 1 : end]
            ]
            marker = MARKER.match(lines[i - 1]) if i > 0 else None
            blocks.append(
                Block(
                    doc=doc,
                    line=i + 1,
                    kind=kind,
                    text="\n".join(body) + "\n",
                    directive=marker["directive"] if marker else None,
                )
            )
        i = end + 1
    return blocks


BLOCKS = [block for doc in DOCS for block in collect(doc)]


def split_expected(block: Block) -> tuple[str, list[str]]:
    """The commands to run and the output they are documented to print."""
    lines = block.text.splitlines()
    if block.kind == "console":
        commands: list[str] = []
        expected: list[str] = []
        continued = False
        for line in lines:
            if line.startswith("$ ") or continued:
                commands.append(line.removeprefix("$ ") if not continued else line)
                continued = line.endswith("\\")
            else:
                expected.append(line)
        return "\n".join(commands) + "\n", expected
    if block.kind != "shell":
        return block.text, []
    n = len(lines)
    while n > 0 and re.match(r"^#( |$)", lines[n - 1]):
        n -= 1
    return "\n".join(lines[:n]) + "\n", [line[2:] for line in lines[n:]]


def output_matches(expected: list[str], output: str) -> bool:
    pattern = "".join(
        r"(?:.*\n)*?"
        if line.strip() == "..."
        else ".*?".join(map(re.escape, line.rstrip().split("..."))) + r"[ \t\r]*\n"
        for line in expected
    )
    return re.fullmatch(pattern, output.rstrip("\r\n") + "\n") is not None


def block_env(gateway: Server, scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRESHET_", "PYTEST_"))}
    env.update(
        HOME=str(scratch),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        FRESHET_HOST="127.0.0.1",
        FRESHET_PORT=str(gateway.port),
        FRESHET_DATA_DIR=str(gateway.data_dir),
        PYTHONUNBUFFERED="1",
    )
    return env


def test_every_doc_has_blocks_and_markers_are_known() -> None:
    assert {block.doc.name for block in BLOCKS} >= {"README.md", "plugins.md", "upgrading.md"}
    for block in BLOCKS:
        d = block.directive
        assert d is None or d == "pytest" or SKIP.match(d), f"{block.id}: unknown marker {d!r}"


def test_expected_output_rules() -> None:
    shell = Block(ROOT / "README.md", 1, "shell", "echo a b  # not output\n# a ...\n# ...\n", None)
    assert split_expected(shell) == ("echo a b  # not output\n", ["a ...", "..."])
    console = Block(ROOT / "README.md", 1, "console", "$ echo a \\\n  b\na b\n", None)
    assert split_expected(console) == ("echo a \\\n  b\n", ["a b"])
    assert output_matches(["a ...", "..."], "a b\r\nmore\nlines\n")
    assert output_matches(["...", "z"], "z\n")
    assert not output_matches(["a"], "a\nb\n")
    assert not output_matches(["a ... c"], "a b\nc\n")


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_doc_block(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    directive = block.directive
    skip = SKIP.match(directive or "")
    if skip:
        pytest.skip(f"{block.id}: {skip['reason']}")
    assert directive in (None, "pytest"), f"{block.id}: unknown marker {directive!r}"

    if block.kind == "yaml":
        config = tmp_path / "freshet.yaml"
        config.write_text(block.text, encoding="utf-8")
        load_settings(str(config), env={})
        return

    gateway: Server = request.getfixturevalue("default_gateway")
    script, expected = split_expected(block)
    for address in DOCUMENTED_ADDRESSES:
        script = script.replace(address, f"127.0.0.1:{gateway.port}")
    if directive == "pytest":
        (tmp_path / "test_block.py").write_text(script, encoding="utf-8")
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        argv += ["-o", "asyncio_default_fixture_loop_scope=function", "test_block.py"]
    elif block.kind == "python":
        (tmp_path / "block.py").write_text(script, encoding="utf-8")
        argv = [sys.executable, "block.py"]
    else:
        (tmp_path / "block.sh").write_text(SHELL_PRELUDE + script, encoding="utf-8")
        argv = ["bash", "block.sh"]

    proc = subprocess.run(
        argv,
        cwd=tmp_path,
        env=block_env(gateway, tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    report = (
        f"{block.id} ({block.kind}) exited {proc.returncode}\n"
        f"--- script\n{script}--- stdout\n{proc.stdout[-4000:]}--- stderr\n{proc.stderr[-4000:]}"
    )
    assert proc.returncode == 0, report
    if expected:
        assert output_matches(expected, proc.stdout), (
            f"{block.id}: the output does not match the documented one\n"
            + "--- documented\n"
            + "\n".join(expected)
            + "\n"
            + report
        )
