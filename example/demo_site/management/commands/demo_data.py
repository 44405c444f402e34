"""``manage.py demo_data``: the demo's admin user, servers, interpreters, sample job, two
job templates (a CSV analysis that draws a plot, and a bash one) and, for the dashboard, ten
finished jobs of another user over the last day.

Idempotent: running it again resets the admin's password to ``DEMO_ADMIN_PASSWORD`` and
updates the servers, without duplicating anything.
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from demo_site.env import env
from django_remote_submission.models import Interpreter, Job, JobTemplate, Log, Server

SAMPLE_TITLE = "Sample: coloured lines, stderr and a result file"
SAMPLE_PROGRAM = """\
import sys
import time

COLOURS = [31, 32, 33, 34, 35, 36]
print("\\033[1mHello from the sample job\\033[0m")
for i in range(10):
    time.sleep(0.3)
    print(f"\\033[{COLOURS[i % 6]}mline {i + 1} of 10\\033[0m")
    if i % 4 == 3:
        print(f"a note on stderr after line {i + 1}", file=sys.stderr)
with open("result.txt", "w") as f:
    f.write("The sample job ran.\\n")
print("wrote result.txt")
"""


ANALYSIS_NAME = "CSV analysis: a histogram of one column"
ANALYSIS_PROGRAM = """\
import argparse
import csv
import os
from xml.sax.saxutils import escape

parser = argparse.ArgumentParser()
parser.add_argument("--column", default="value")
parser.add_argument("--bins", type=int, default=10)
parser.add_argument("--log", action="store_true")
args = parser.parse_args()
title = escape(os.environ.get("PLOT_TITLE", "Histogram"))

with open(os.environ["DATA"], newline="") as f:
    values = [float(row[args.column]) for row in csv.DictReader(f) if row.get(args.column)]
print(f"{len(values)} values in column {args.column!r}")
low, high = min(values), max(values)
width = (high - low) / args.bins or 1.0
counts = [0] * args.bins
for v in values:
    counts[min(int((v - low) / width), args.bins - 1)] += 1
for i, n in enumerate(counts):
    print(f"{low + i * width:10.3g} {'#' * n}")

# An SVG plot, with no library needed on the host.
top = max(counts) or 1
bars = []
for i, n in enumerate(counts):
    h = 180 * n / top
    bars.append(f'<rect x="{20 + i * 360 / args.bins:.1f}" y="{200 - h:.1f}" '
                f'width="{360 / args.bins - 2:.1f}" height="{h:.1f}" fill="steelblue"/>')
svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="400" height="230">'
       f'<text x="20" y="15">{title} ({len(values)} values)</text>{"".join(bars)}</svg>')
with open("plot.svg", "w") as f:
    f.write(svg)
print("wrote plot.svg")
"""

COUNT_NAME = "Count words (bash)"
COUNT_PROGRAM = """\
# $1: the file to read; TOP: how many words to list
echo "Words in $1:"
tr -cs '[:alnum:]' '\\n' < "$1" | tr '[:upper:]' '[:lower:]' | grep -v '^$' |
  sort | uniq -c | sort -rn | head -n "${TOP:-10}" | tee counts.txt
"""


def demo_templates(servers: list, python3, bash) -> None:
    """The demo's two templates (made again from scratch on every run)."""
    analysis, _ = JobTemplate.objects.update_or_create(
        name=ANALYSIS_NAME,
        defaults={
            "description": "Upload a CSV file: the job prints a histogram of one column and "
            "writes plot.svg, which comes back as a result.",
            "interpreter": python3,
            "program": ANALYSIS_PROGRAM,
            "remote_filename": "analysis.py",
        },
    )
    analysis.servers.set(servers)
    analysis.parameters.all().delete()
    analysis.parameters.create(
        position=1,
        name="data",
        label="CSV file",
        type="file",
        required=True,
        passed_as="environment",
        target="data.csv",
        help="With a header line.",
    )
    analysis.parameters.create(
        position=2, name="column", label="Column", type="text", default="value", required=True
    )
    analysis.parameters.create(
        position=3, name="bins", label="Bins", type="integer", default="10", required=True
    )
    analysis.parameters.create(position=4, name="log", label="Log scale", type="boolean")
    analysis.parameters.create(
        position=5,
        name="title",
        label="Plot title",
        type="text",
        default="Histogram",
        passed_as="environment",
        target="PLOT_TITLE",
    )
    count, _ = JobTemplate.objects.update_or_create(
        name=COUNT_NAME,
        defaults={
            "description": "Upload a text file: the job lists its most frequent words.",
            "interpreter": bash,
            "program": COUNT_PROGRAM,
            "remote_filename": "count.sh",
        },
    )
    count.servers.set(servers)
    count.parameters.all().delete()
    count.parameters.create(
        position=1,
        name="text",
        label="Text file",
        type="file",
        required=True,
        passed_as="positional",
    )
    count.parameters.create(
        position=2,
        name="top",
        label="How many words",
        type="choice",
        choices=["5", "10", "20"],
        default="10",
        required=True,
        passed_as="environment",
    )


HISTORY = "Earlier run"
# (hours ago it ended, minutes it waited, minutes it ran, its end)
RUNS = [
    (22, 0, 3, "success"),
    (19, 1, 12, "success"),
    (17, 0, 1, "failure"),
    (14, 4, 25, "success"),
    (11, 0, 2, "cancelled"),
    (9, 2, 8, "success"),
    (6, 0, 40, "success"),
    (4, 6, 1, "failure"),
    (2, 1, 5, "success"),
    (1, 0, 2, "success"),
]


def seed_history(server, interpreter) -> None:
    """Finished jobs of another user over the last day, so that the dashboard has something to
    show (once: they are recognised by their title)."""
    if Job.objects.filter(title__startswith=HISTORY).exists():
        return
    owner, _ = get_user_model().objects.get_or_create(username="ada")
    now = timezone.now()
    for number, (ago, waited, ran, status) in enumerate(RUNS, 1):
        finished = now - timedelta(hours=ago)
        started = finished - timedelta(minutes=ran)
        submitted = started - timedelta(minutes=waited)
        error = {
            "failure": "The program exited with status 1.",
            "cancelled": "Cancelled on request; its processes were stopped.",
        }.get(status, "")
        job = Job.objects.create(
            title=f"{HISTORY} {number}",
            program=f"print('run {number}')\n",
            owner=owner,
            server=server,
            interpreter=interpreter,
            remote_directory=f"drs-demo/history-{number}",
            remote_filename="run.py",
            status=status,
            error=error,
            submitted_at=submitted,
            started_at=started,
            finished_at=finished,
            stdout_offset=len(f"run {number}\n"),
        )
        Log.objects.create(job=job, content=f"run {number}\n", offset=0, time=started)
        Job.objects.filter(pk=job.pk).update(created=submitted, modified=finished)


def command(path: str, name: str) -> str:
    """The system's ``path`` if it exists (not a virtualenv's or a version manager's shim)."""
    return path if os.access(path, os.X_OK) else shutil.which(name) or path


class Command(BaseCommand):
    help = "Create the demo's admin user, servers, interpreters and sample job."

    def handle(self, *args, **options) -> None:
        username = env("DEMO_ADMIN_USER", "admin")
        password = env("DEMO_ADMIN_PASSWORD")
        if not password:
            raise CommandError("Set DEMO_ADMIN_PASSWORD in example/.env.")
        User = get_user_model()
        admin, _ = User.objects.get_or_create(username=username)
        admin.is_staff = admin.is_superuser = admin.is_active = True
        admin.set_password(password)
        admin.save()

        python3, _ = Interpreter.objects.update_or_create(
            name="python3",
            defaults={"path": command("/usr/bin/python3", "python3"), "arguments": ["-u"]},
        )
        bash, _ = Interpreter.objects.update_or_create(
            name="bash", defaults={"path": command("/bin/bash", "bash"), "arguments": []}
        )
        # At most 2 jobs at once: submit a third to see it wait ("2 of 2 slots ... in use").
        local, _ = Server.objects.update_or_create(
            title="localhost", defaults={"hostname": "localhost", "local": True, "max_running": 2}
        )
        local.interpreters.add(python3, bash)

        host = env("DEMO_SSH_HOST")
        if host:
            fields = {
                "hostname": host,
                "port": int(env("DEMO_SSH_PORT", "22")),
                "username": env("DEMO_SSH_USER"),
                "local": False,
            }
            key_file = env("DEMO_SSH_KEY_FILE")
            if key_file:
                with open(os.path.expanduser(key_file)) as f:
                    fields["private_key"] = f.read()
            ssh, _ = Server.objects.update_or_create(title=f"ssh {host}", defaults=fields)
            ssh.interpreters.add(python3, bash)
            self.stdout.write(f"SSH server: {host}:{fields['port']}")

        demo_templates(
            list(Server.objects.filter(title__in=["localhost", f"ssh {host}"])), python3, bash
        )

        if not Job.objects.filter(title=SAMPLE_TITLE).exists():
            Job.objects.create(
                title=SAMPLE_TITLE,
                program=SAMPLE_PROGRAM,
                owner=admin,
                server=local,
                interpreter=python3,
                remote_directory="drs-demo/sample",
                remote_filename="sample.py",
            )
        seed_history(local, python3)
        self.stdout.write(f"Demo data ready: log in as {username}")
