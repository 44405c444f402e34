"""``manage.py drs_retention``: archive old logs, purge old results and jobs (see ``retention``).

manage.py drs_retention                          # as DRS says (ARCHIVE_LOGS_AFTER_DAYS, ...)
manage.py drs_retention --archive-after 7        # override a setting for this run (0: off)
manage.py drs_retention --purge-jobs-after 365 --dry-run   # only count
"""

from django.core.management.base import BaseCommand, CommandError

from ... import retention


def _days(value: str) -> float:
    days = float(value)
    if days < 0:
        raise ValueError(value)
    return days


class Command(BaseCommand):
    help = (
        "Move the logs of jobs finished long ago into compressed files in storage, and purge "
        "old results and jobs, as the DRS retention settings say."
    )

    def add_arguments(self, parser):
        for name, setting in (
            ("archive-after", "ARCHIVE_LOGS_AFTER_DAYS"),
            ("purge-results-after", "PURGE_RESULTS_AFTER_DAYS"),
            ("purge-jobs-after", "PURGE_JOBS_AFTER_DAYS"),
        ):
            parser.add_argument(
                f"--{name}",
                type=_days,
                metavar="DAYS",
                help=f"Days after a job finished (0: off); default DRS['{setting}'].",
            )
        parser.add_argument("--dry-run", action="store_true", help="Only count what would go.")

    def handle(self, *args, dry_run=False, **options):
        try:
            report = retention.apply(
                archive_after_days=options["archive_after"],
                purge_results_after_days=options["purge_results_after"],
                purge_jobs_after_days=options["purge_jobs_after"],
                dry_run=dry_run,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        verb = "Would archive" if dry_run else "Archived"
        self.stdout.write(
            f"{verb} the logs of {report.archived_jobs} jobs ({report.archived_rows} rows); "
            f"{'would purge' if dry_run else 'purged'} the results of {report.purged_results} "
            f"jobs and {report.purged_jobs} jobs."
        )
