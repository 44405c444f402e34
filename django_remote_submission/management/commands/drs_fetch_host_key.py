"""``manage.py drs_fetch_host_key <server>``: show a server's SSH host key for confirmation.

    manage.py drs_fetch_host_key hpc                    # prints the key and its fingerprint
    manage.py drs_fetch_host_key hpc --save             # ... and stores it on the Server
    manage.py drs_fetch_host_key hpc --save --replace   # ... even over a different key

``<server>`` is a Server id, title or hostname. No login is attempted.
"""

import shlex

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from ... import audit
from ...models import Event, Server
from ...remote import RemoteError
from ...remote.ssh import fetch_host_key, parse_host_key


class Command(BaseCommand):
    help = "Fetch a server's SSH host key and show its fingerprint."

    def add_arguments(self, parser):
        parser.add_argument("server", help="Server id, title or hostname")
        parser.add_argument("--save", action="store_true", help="Store the key on the server.")
        parser.add_argument(
            "--replace",
            action="store_true",
            help="With --save: replace a different key on record (the server's key changed).",
        )

    def handle(self, *args, server, save=False, replace=False, **options):
        query = Q(title=server) | Q(hostname=server)
        if server.isdigit():
            query |= Q(pk=int(server))
        found = list(Server.objects.filter(query)[:2])
        if len(found) != 1:
            raise CommandError(f"{len(found) or 'No'} servers match {server!r}.")
        obj = found[0]
        try:
            line, fp = fetch_host_key(obj.hostname, obj.port)
        except RemoteError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{line}\n{fp}")
        # Only a real key on record is protected: a line that is no key may be replaced.
        on_record = parse_host_key(obj.host_key) if obj.host_key.strip() else None
        differs = on_record is not None and obj.host_key.split()[-2:] != line.split()[-2:]
        if differs:
            self.stderr.write("WARNING: this differs from the key on record!")
        if save and differs and not replace:
            raise CommandError(
                f"Not saved: {obj.title} has another key on record. If the server's key really "
                "changed, run again with --save --replace."
            )
        if save:
            before = obj.host_key
            obj.host_key = line
            obj.save(update_fields=["host_key", "modified"])
            reason = f"host key {'replaced' if before else 'stored'}: {fp}"
            audit.record(Event.Action.credentials, server=obj, reason=reason)
            self.stdout.write(f"Stored on {obj}.")
        else:
            self.stdout.write(
                f"Nothing was saved. Once you have checked the fingerprint, store the key with: "
                f"manage.py drs_fetch_host_key {shlex.quote(server)} --save"
            )
