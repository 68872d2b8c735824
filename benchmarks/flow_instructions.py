"""The instructions a request executes inside the gateway's process, counted by valgrind
(callgrind): Freshet's generation path against the bare proxy, and what each feature adds.

`flow_cpu.py` reads CPU time, which this machine's neighbours (and its caches) move by
5-10 % from one run to the next: a change worth 3 % cannot be told from noise there.
Instructions can: this script runs `flow_cpu.py`'s own child (the ASGI app driven as the
server calls it, one-token answers, the same config) under callgrind twice, with
``--base-requests`` and with ``--requests`` requests, and divides the difference of the
two totals by the difference of the requests, so start-up and shutdown cancel out. What
is left is what one request executes in this process (the ledger's writer thread
included; the kernel's side of system calls not).

By default one request at a time and an upstream that answers at once: every request then
runs alone, so the count does not depend on how many requests one loop turn happened to
serve (which, under valgrind's 30-50x slowdown, depends on timing). Repeated, Freshet's
count moves by about 1 % (the floor's by 0.01 %), so a change of 2 % or more shows in one
run; smaller ones need a few. Instructions are not time: a change that touches less
memory can save more time than its instructions say (`flow_cpu.py` measures that); but
work removed shows here, however small.

Two things in the path depend on the clock, which is what moves the count: the ledger
writes a batch every 50 ms (under valgrind a batch holds some ten rows, so its fixed cost
weighs more on a row than at c=32), and the quotes' fit runs at most every 10 ms (under
valgrind on every fourth request, as on a real machine below some 400 requests a second
to one backend).

``--without``: the same, with one feature at a time taken out of the measured process as
`flow_cpu.py --without` takes it out, then all of them at once.

Needs valgrind (Debian: ``apt-get install valgrind``). Each row takes a minute
(two runs), more on a busy machine.

Run:  .venv/bin/python benchmarks/flow_instructions.py [--without] [--requests 600]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from flow_cpu import CONFIG, ONE_TOKEN, WITHOUT, child_command, mock_upstream  # noqa: E402

_COLLECTED = re.compile(r"Collected : (\d+)")


def _count(
    side: str,
    env: dict[str, str],
    requests: int,
    args: argparse.Namespace,
    upstream: str,
    config: str,
) -> tuple[int, int]:
    """The instructions the child executed, start to end, asked for ``requests``, and the
    requests it served (its warm-up's included)."""
    with tempfile.TemporaryDirectory() as tmp:
        body = json.dumps(ONE_TOKEN, separators=(",", ":")).encode()
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.out",
            *child_command(side, body, upstream, config, requests, args.concurrency),
        ]  # fmt: skip
        data = {"FRESHET_DATA_DIR": os.path.join(tmp, "data"), "PYTHONHASHSEED": "0"}
        run = subprocess.run(
            command, env={**os.environ, **env, **data}, capture_output=True, text=True
        )
        if run.returncode != 0:
            raise SystemExit(f"the {side} child failed under valgrind:\n{run.stderr[-2000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        if result["errors"]:
            raise SystemExit(f"the {side} child got error responses")
        found = _COLLECTED.findall(run.stderr)
        if not found:
            raise SystemExit(f"no instruction count in valgrind's output:\n{run.stderr[-2000:]}")
        return int(found[-1]), int(result["served"])


def per_request(
    side: str, env: dict[str, str], args: argparse.Namespace, upstream: str, config: str
) -> float:
    low, low_served = _count(side, env, args.base_requests, args, upstream, config)
    high, high_served = _count(side, env, args.requests, args, upstream, config)
    return (high - low) / (high_served - low_served)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--base-requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--without", action="store_true", help="what each feature adds")
    args = parser.parse_args()
    if args.requests <= args.base_requests:
        parser.error("--requests must be more than --base-requests")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (Debian: apt-get install valgrind)")
    rows = WITHOUT if args.without else {"nothing": WITHOUT["nothing"]}
    print(
        f"c={args.concurrency}, {args.delay_ms:g} ms upstream, one-token answers; instructions "
        f"a request (callgrind, {args.requests} requests less {args.base_requests})"
    )
    print("| without | instructions a request | less than with everything | x floor |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, mock_upstream(args, []) as upstream:
        config = os.path.join(tmp, "freshet.yaml")
        Path(config).write_text(CONFIG.format(url=upstream))
        floor = per_request("floor", {}, args, upstream, config)
        whole = 0.0
        for name, env in rows.items():
            count = per_request("freshet", env, args, upstream, config)
            whole = whole or count
            print(f"| {name} | {count:,.0f} | {whole - count:,.0f} | {count / floor:.1f} |")
        print(
            f"| everything (the floor: a bare proxy on the same client) | {floor:,.0f} "
            f"| {whole - floor:,.0f} | 1.0 |"
        )


if __name__ == "__main__":
    main()
