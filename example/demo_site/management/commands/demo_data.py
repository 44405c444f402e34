"""``manage.py demo_data``: the demo's admin user, servers, interpreters and sample job.

Idempotent: running it again resets the admin's password to ``DEMO_ADMIN_PASSWORD`` and
updates the servers, without duplicating anything.
"""

from __future__ import annotations

import os
import shutil

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from demo_site.env import env
from django_remote_submission.models import Interpreter, Job, Server

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
        self.stdout.write(f"Demo data ready: log in as {username}")
