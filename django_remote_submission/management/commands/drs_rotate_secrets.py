"""``manage.py drs_rotate_secrets``: encrypt every stored secret again with the current key.

    # settings.py, after a rotation: the new key first, the old one still accepted
    SECRET_KEY = "new ..."; SECRET_KEY_FALLBACKS = ["old ..."]
    # or DRS = {"SECRET_KEY": new_fernet_key, "SECRET_KEY_FALLBACKS": [old_fernet_key]}

    manage.py drs_rotate_secrets        # then the fallbacks can go

Servers' private keys and passphrases, users' account keys and the credentials of running
jobs are re-encrypted; a secret no key opens is listed ("enter it again"), never lost.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction

from ... import audit
from ...credentials import CredentialError, is_token, is_unreadable, rotate
from ...models import Event, Job, Server, ServerAccount

STORED = ((Server, ("private_key", "private_key_passphrase")), (ServerAccount, ("private_key",)))


class Command(BaseCommand):
    help = "Encrypt every stored secret again with the current key."

    def handle(self, *args, **options):
        done, unreadable = 0, []
        with transaction.atomic():
            for model, fields in STORED:
                for obj in model.objects.select_for_update():
                    changed = [f for f in fields if getattr(obj, f)]
                    unreadable += [f"{obj} ({f})" for f in fields if is_unreadable(getattr(obj, f))]
                    readable = [f for f in changed if not is_unreadable(getattr(obj, f))]
                    if readable:  # saving encrypts the plain values with the current key
                        obj.save(update_fields=readable)
                        done += len(readable)
            for job in Job.objects.select_for_update().exclude(credential=""):
                try:
                    token = rotate(job.credential) if is_token(job.credential) else None
                except CredentialError:
                    unreadable.append(f"the credential of running job {job.pk}")
                    continue
                if token:
                    Job.objects.filter(pk=job.pk).update(credential=token)
                    done += 1
            audit.record(
                Event.Action.credentials,
                reason=f"secrets re-encrypted: {done}; unreadable: {len(unreadable)}",
            )
        self.stdout.write(f"Re-encrypted {done} secrets with the current key.")
        for what in unreadable:
            self.stdout.write(f"Unreadable, enter it again: {what}")
