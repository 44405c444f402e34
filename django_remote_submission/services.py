"""The one door from the web to the workers: create, submit, resubmit, cancel, edit, delete.

    job = services.create(request.user, request=request, title=..., program=..., server=...,
                          interpreter=..., remote_directory=..., remote_filename=...)
    queued = services.submit(job, request.user, password="...", timeout=60, request=request)
    queued.error        # after the commit: "" or why the broker did not take the task
    services.resubmit(job, request.user, request=request)
    services.cancel(job, request.user, request=request)
    services.install_key(request.user, server, "password")   # "My SSH keys"
    services.add_input(job, request.user, "data/x.csv", request.FILES["file"])  # an input file

Pages, admin actions and the API call these and nothing else: each checks the access policy
(``policy``; ``policy.Refused`` when it says no), the job's state (``JobBusy``), uses the
same options wherever it is called from, records an audit event and queues the Celery task
once the transaction commits. A password is handed to ``submit_job_to_server.delay``, which
encrypts it before it reaches the broker.

A resubmission keeps the previous run's ``timeout``, ``log_policy``, ``store_results`` and
``resources`` (what a batch scheduler was asked for);
the login is decided again for whoever resubmits (a login name or key file that someone with
``choose_login`` picked is never reused by the job's owner). When the broker cannot be
reached, a job that never ran fails at once with the reason instead of waiting in
``initial`` for a run that will not come.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone
from kombu.utils.url import maybe_sanitize_url

from . import audit, inputs, jobtemplates, keys, policy, runner, tasks
from .models import Event, Input, Job, Server, ServerAccount, Status
from .policy import Refused
from .results import delete_files_on_commit

logger = logging.getLogger(__name__)

RESUBMITTED_OPTIONS = ("timeout", "log_policy", "store_results", "resources")
__all__ = [
    "JobBusy",
    "Queued",
    "Refused",
    "account",
    "add_input",
    "cancel",
    "create",
    "create_from_template",
    "delete",
    "edit",
    "install_key",
    "make_key",
    "remove_input",
    "remove_key",
    "resubmit",
    "set_login",
    "submit",
]


class JobBusy(Exception):
    """The job's state does not allow what was asked (it runs, or it has finished)."""


@dataclass
class Queued:
    """What became of a task queued on commit: ``error`` is why it was not queued."""

    error: str = ""


def _refuse_unless_may_act(user, job: Job, doing: str) -> None:
    if not policy.may_act_on(user, job):
        raise Refused(f"You may not {doing} this job.")


def create(user, *, request=None, **fields) -> Job:
    """A new job of ``user`` on a server they may use (not queued: see ``submit``)."""
    server = fields["server"]
    if not policy.may_use_server(user, server):
        raise Refused(f"You may not run jobs on {server.title}.")
    job = Job.objects.create(owner=user, **fields)
    audit.record(Event.Action.create, job=job, actor=user, request=request)
    return job


def create_from_template(
    user, template, server, values: dict, *, title: str = "", request=None
) -> Job:
    """A new job of ``user`` from ``template`` on ``server``, filled with ``values`` (checked
    by the template's form: see ``forms.TemplateJobForm``); its file values become inputs.
    Not queued: see ``submit``."""
    if not policy.may_use_template(user, template, server):
        raise Refused(f"You may not run “{template.name}” on {server.title}.")
    arguments, environment, files = jobtemplates.build(template, values)
    with transaction.atomic():
        job = create(
            user,
            request=request,
            title=title or template.name,
            server=server,
            interpreter=template.interpreter,
            program=template.program,
            remote_directory=f"drs-jobs/{uuid.uuid4().hex[:8]}",
            remote_filename=template.remote_filename,
            arguments=arguments,
            environment=environment,
            template=template,
            template_values=jobtemplates.stored_values(values),
        )
        for path, file in files:
            add_input(job, user, path, file, request=request)
    return job


def submit(
    job: Job,
    user,
    *,
    password: str | None = None,
    username: str | None = None,
    key_filename: str | None = None,
    timeout: float | None = None,
    log_policy: int | None = None,
    store_results: list[str] | None = None,
    resources: dict | None = None,
    request=None,
    action: str = Event.Action.submit,
) -> Queued:
    """Queue a run of ``job`` for ``user`` once the transaction commits."""
    _refuse_unless_may_act(user, job, "submit")
    if not job.can_submit:
        raise JobBusy(f"The job is {job.status}: cancel it or wait until it has finished.")
    login = policy.decide(
        user,
        job.server,
        password=bool(password),
        username=username or None,
        key_filename=key_filename or None,
    )
    kwargs: dict = {
        "username": login.username,
        "login_with": login.login_with,
        "remote": not job.server.local,
    }
    if password and login.login_with == policy.PASSWORD:
        kwargs["password"] = password
    if login.key_filename:
        kwargs["public_key_filename"] = login.key_filename
    for name, value in (
        ("timeout", timeout),
        ("log_policy", log_policy),
        ("store_results", store_results),
        ("resources", resources or None),
    ):
        if value is not None:
            kwargs[name] = value
    audit.record(action, job=job, actor=user, login=login.username, request=request)
    # The order in which jobs waiting for a slot start (see ``scheduling``).
    Job.objects.filter(pk=job.pk).update(submitted_at=timezone.now())
    return _on_commit(lambda: send_submit(job, **kwargs))


def resubmit(job: Job, user, *, request=None, **options) -> Queued:
    """Run a finished job again with the options of its latest run (``options`` override)."""
    if not job.is_final:
        raise JobBusy(
            f"The job is {job.status}: only a finished job can be resubmitted"
            + (" (submit it instead)." if job.status == Status.initial else ".")
        )
    previous = job.options or {}
    kept = {k: previous[k] for k in RESUBMITTED_OPTIONS if previous.get(k) is not None}
    return submit(job, user, request=request, action=Event.Action.resubmit, **{**kept, **options})


def cancel(job: Job, user, *, request=None) -> Queued:
    """Queue the stop of ``job``; it turns ``cancelled`` once the host confirms."""
    _refuse_unless_may_act(user, job, "cancel")
    if not job.can_cancel:
        raise JobBusy(f"The job has already finished ({job.status}).")
    audit.record(Event.Action.cancel, job=job, actor=user, request=request)
    return _on_commit(lambda: send_cancel(job))


def edit(job: Job, user, changes: dict, *, request=None) -> Job:
    """Change fields of a job that is not running (the row is locked against a lease)."""
    _refuse_unless_may_act(user, job, "edit")
    if "server" in changes and not policy.may_use_server(user, changes["server"]):
        raise Refused(f"You may not run jobs on {changes['server'].title}.")
    with transaction.atomic():
        current = Job.objects.select_for_update().get(pk=job.pk)
        if current.is_busy:
            raise JobBusy(f"The job is {current.status}: it cannot be edited now.")
        for name, value in changes.items():
            setattr(job, name, value)
        job.save(update_fields=[*changes, "modified"])
        what = ", ".join(sorted(changes))
        audit.record(Event.Action.edit, job=job, actor=user, reason=what, request=request)
    return job


def add_input(job: Job, user, path: str, file, *, request=None) -> Input:
    """Attach ``file`` (an uploaded or Django ``File``) to ``job`` as the input ``path``
    (relative to its directory; replaces an input of that path). ``inputs.InputRefused``
    says why a path or a size is refused; the file is read once, in chunks, for its size
    and SHA-256."""
    _refuse_unless_may_act(user, job, "change")
    try:
        path = inputs.clean_path(path)
    except ValueError as exc:
        raise inputs.InputRefused("path", str(exc)) from None
    if job.remote_filename and path == job.remote_filename:
        message = f"{path!r} is the job's program file; give the input another name."
        raise inputs.InputRefused("path", message)
    size, sha256 = inputs.measure(file)
    with transaction.atomic():
        current = Job.objects.select_for_update().get(pk=job.pk)
        if current.is_active:
            raise JobBusy(f"The job is {current.status}: its inputs cannot change now.")
        others = current.inputs.exclude(path=path)
        refusal = inputs.size_refusal(
            size, sum(others.values_list("size", flat=True)), others.count()
        )
        if refusal:
            raise inputs.InputRefused("file", refusal)
        replaced = current.inputs.filter(path=path).first()
        if replaced is not None:
            delete_files_on_commit([replaced.file.name], replaced.file.storage)
            replaced.delete()
        row = Input(job=current, path=path, size=size, sha256=sha256)
        row.file.save(path.rsplit("/", 1)[-1], file, save=False)
        row.save()
        audit.record(
            Event.Action.edit, job=job, actor=user, reason=f"input {path}", request=request
        )
    return row


def remove_input(row: Input, user, *, request=None) -> None:
    """Take an input off its job (and its file out of storage)."""
    job = row.job
    _refuse_unless_may_act(user, job, "change")
    with transaction.atomic():
        current = Job.objects.select_for_update().get(pk=job.pk)
        if current.is_active:
            raise JobBusy(f"The job is {current.status}: its inputs cannot change now.")
        delete_files_on_commit([row.file.name], row.file.storage)
        row.delete()
        reason = f"input {row.path} removed"
        audit.record(Event.Action.edit, job=job, actor=user, reason=reason, request=request)


def delete(job: Job, user, *, request=None) -> None:
    """Delete a job that is not running, with its logs and result files."""
    _refuse_unless_may_act(user, job, "delete")
    with transaction.atomic():
        current = Job.objects.select_for_update().get(pk=job.pk)
        if current.is_busy:
            raise JobBusy(f"The job is {current.status}: it cannot be deleted now.")
        results = list(current.results.all())
        given = list(current.inputs.all())
        audit.record(Event.Action.delete, job=current, actor=user, request=request)
        current.delete()
        if results:
            files = [r.local_file.name for r in results if r.local_file]
            delete_files_on_commit(files, results[0].local_file.storage)
        if given:
            delete_files_on_commit([i.file.name for i in given], given[0].file.storage)


def _on_commit(send) -> Queued:
    queued = Queued()

    def go() -> None:
        queued.error = send()

    transaction.on_commit(go)
    return queued


def _not_queued(what: str, exc: Exception) -> str:
    connection = tasks.submit_job_to_server.app.connection_for_write()
    broker = maybe_sanitize_url(connection.as_uri(include_password=True))  # password masked
    logger.warning("Could not queue %s: %s: %s", what, type(exc).__name__, exc)
    return (
        f"Could not queue {what}: the Celery broker ({broker}) did not take it "
        f"({type(exc).__name__}: {exc}). Start the broker and a worker, then submit it again."
    )


def send_submit(job: Job, **kwargs) -> str:
    """Queue a run of the job now; return "" or why it could not be queued.

    A job that was never run fails with that reason, so that no job waits in ``initial``
    for a run that will not come.
    """
    try:
        tasks.submit_job_to_server.delay(job.pk, **kwargs)
    except Exception as exc:  # whatever the broker raised: the job must not be left waiting
        error = _not_queued("the job", exc)
        current = Job.objects.get(pk=job.pk)
        if current.status == Status.initial:
            # Should it have changed meanwhile, whoever changed it reports on it.
            runner.move(current, Status.failure, error=error)
        return error
    return ""


def send_start(job_pk: int) -> str:
    """Queue the start of a job that was given a slot (see ``scheduling``); "" or why not.

    Should the broker not take it, the workers' recovery sweep starts the job later.
    """
    try:
        tasks.resume_job.delay(job_pk)
    except Exception as exc:
        return _not_queued("the start of a waiting job", exc)
    return ""


def send_dispatch(server_pk: int, countdown: float = 0) -> str:
    """Queue a look for free slots of a server in ``countdown`` seconds, on the server's
    queue (see ``Server.celery_queue``); "" or why not."""
    server = Server.objects.filter(pk=server_pk).first()
    queue = server.celery_queue if server is not None else None
    options: dict[str, Any] = {"queue": queue} if queue else {}
    try:
        tasks.dispatch_waiting.apply_async((server_pk,), countdown=countdown, **options)
    except Exception as exc:
        return _not_queued("a new look at the server's load", exc)
    return ""


def send_cancel(job: Job) -> str:
    """Queue a cancel of the job now; return "" or why it could not be queued."""
    try:
        tasks.cancel_job.delay(job.pk)
    except Exception as exc:
        return _not_queued("the cancel", exc)
    return ""


# --- a user's own login and key on a server ("My SSH keys") --------------------------------


def account(user, server) -> ServerAccount:
    """``user``'s account on ``server`` (made on first use); ``Refused`` for a server they may
    not use or one without SSH (a local server)."""
    if server.local or not policy.may_use_server(user, server):
        raise Refused(f"You may not run jobs on {server.title}.")
    found, _created = ServerAccount.objects.get_or_create(user=user, server=server)
    return found


def set_login(user, server, username: str, *, request=None) -> ServerAccount:
    """The login name ``user`` runs as on ``server`` (blank: their username)."""
    found = account(user, server)
    found.username = username
    found.full_clean(exclude=["user", "server"])
    found.save(update_fields=["username", "modified"])
    audit.record(
        Event.Action.account, server=server, actor=user, login=found.login, request=request
    )
    return found


def make_key(user, server, *, request=None) -> ServerAccount:
    """A new key pair for ``user`` on ``server`` (the private part is never shown)."""
    found = account(user, server)
    keys.generate(found)
    audit.record(
        Event.Action.key_created, server=server, actor=user, login=found.login, request=request
    )
    return found


def install_key(user, server, password: str, *, request=None) -> ServerAccount:
    """Add the account's public key on the host, logging in once with ``password``."""
    found = account(user, server)
    keys.install(found, password)
    audit.record(
        Event.Action.key_installed, server=server, actor=user, login=found.login, request=request
    )
    return found


def remove_key(user, server, password: str | None = None, *, request=None) -> ServerAccount:
    """Take the account's key off the host and forget it."""
    found = account(user, server)
    keys.uninstall(found, password)
    audit.record(
        Event.Action.key_removed, server=server, actor=user, login=found.login, request=request
    )
    return found
