"""The test project without the tokens app (and without knox): what a project that upgrades
from 2.1.0 and adds nothing gets. Usage: ``DJANGO_SETTINGS_MODULE=tests.settings_without_tokens``.
"""

from tests import settings as base
from tests.settings import *  # noqa: F403

TOKEN_APPS = ("knox", "django_remote_submission.tokens")
INSTALLED_APPS = [app for app in base.INSTALLED_APPS if app not in TOKEN_APPS]
