"""``manage.py drs_fetch_host_key <server>``: show a server's SSH host key for confirmation.

    manage.py drs_fetch_host_key hpc            # prints the key and its SHA256 fingerprint
    manage.py drs_fetch_host_key hpc --save     # ... and stores it on the Server

``<server>`` is a Server id, title or hostname. No login is attempted.
"""

import shlex

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from ...models import Server
from ...remote import RemoteError
from ...remote.ssh import fetch_host_key


class Command(BaseCommand):
    help = "Fetch a server's SSH host key and show its fingerprint."

    def add_arguments(self, parser):
        parser.add_argument("server", help="Server id, title or hostname")
        parser.add_argument("--save", action="store_true", help="Store the key on the server.")

    def handle(self, *args, server, save=False, **options):
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
        if obj.host_key and obj.host_key.split()[-2:] != line.split()[-2:]:
            self.stderr.write("WARNING: this differs from the key on record!")
        if save:
            obj.host_key = line
            obj.save(update_fields=["host_key", "modified"])
            self.stdout.write(f"Stored on {obj}.")
        else:
            self.stdout.write(
                f"Nothing was saved. Once you have checked the fingerprint, store the key with: "
                f"manage.py drs_fetch_host_key {shlex.quote(server)} --save"
            )
