"""``python -m bench [--reps 3] [--slow-reps 2] [--rows trivial,lines,...]``: run, print a table.

Starts its own sshd and redis-server (tests/services.py), a sqlite DB and MEDIA_ROOT in a
temp dir, runs each row for the project and its OpenSSH baseline, prints a Markdown table
and writes bench/results.json. It never fails on a number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback

from .harness import Bench, Row, table
from .page import job_page
from .rows import ROWS, warm_up
from .throughput import throughput
from .workers import workers

ROWS = {**ROWS, "throughput": throughput, "workers": workers, "page": job_page}

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--reps",
        type=int,
        default=int(os.environ.get("BENCH_REPS", 3)),
        help="repetitions of each row (default 3, or $BENCH_REPS)",
    )
    parser.add_argument(
        "--slow-reps",
        type=int,
        default=int(os.environ.get("BENCH_SLOW_REPS", 2)),
        help="repetitions of the rows of 10 s jobs: sleep, many (default 2)",
    )
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"comma-separated subset of: {', '.join(ROWS)}"
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = set(names) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")

    started = time.perf_counter()
    rows: list[Row] = []
    with Bench(args.reps, args.slow_reps) as b:
        warm_up(b)
        for name in names:
            t0 = time.perf_counter()
            try:
                rows += ROWS[name](b)
            except Exception as exc:  # report the row as broken, go on with the others
                traceback.print_exc()
                rows.append(
                    Row(f"{name}: ERROR", "s", [], notes=f"{type(exc).__name__}: {exc}", ok=False)
                )
            print(f"[bench] {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    print(table(rows))
    print(
        f"\n{args.reps} repetitions ({args.slow_reps} of the 10 s rows), {elapsed:.0f} s in all; "
        f"results in {RESULTS}"
    )
    with open(RESULTS, "w") as f:
        json.dump(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "reps": args.reps,
                "slow_reps": args.slow_reps,
                "load_average": os.getloadavg(),
                "seconds": elapsed,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "rows": [r.as_dict() for r in rows],
            },
            f,
            indent=2,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
