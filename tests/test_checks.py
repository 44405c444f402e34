"""System checks: each misconfiguration the README warns about is reported by ``manage.py check``
with its id and a hint, and a correct configuration reports nothing."""

from __future__ import annotations

import pytest
from celery import Celery, _state
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from django_remote_submission import checks
from django_remote_submission.conf import redis_channel_layer

REDIS = "channels_redis.core.RedisChannelLayer"


def ids(messages) -> list[str]:
    return [m.id for m in messages]


@pytest.fixture
def celery_state(monkeypatch):
    """Usage: ``celery_state(app)``: make ``app`` (or None) the process's only Celery app."""

    def use(app):
        monkeypatch.setattr(_state._tls, "current_app", app)
        monkeypatch.setattr(_state, "default_app", app)

    return use


def test_the_test_settings_pass_the_settings_apps_and_celery_checks():
    assert ids(checks.check_settings(None)) == []
    assert ids(checks.check_apps(None)) == []
    assert ids(checks.check_celery(None)) == []


def test_drs_values_of_the_wrong_type_are_errors(settings):
    settings.DRS = {
        "KILL_GRACE": "5",
        "RECOVER_IN_WORKER": 1,
        "HEARTBEAT_INTERVAL": 15,  # an int where the default is a float: fine
        "KEEPALIVE": 30.5,
        "HOST_KEY_POLICY": None,
    }
    errors = checks.check_settings(None)
    assert ids(errors) == ["drs.E004"] * 3
    assert errors[0].msg == "DRS['KILL_GRACE'] is '5' (str): it must be a number."
    assert errors[0].hint == "Give a number, like its default 5.0."
    assert errors[1].msg == "DRS['RECOVER_IN_WORKER'] is 1 (int): it must be a bool."
    assert errors[2].msg == "DRS['HOST_KEY_POLICY'] is None (NoneType): it must be a str."


def test_unknown_keys_bad_policy_and_bad_secret_key_are_errors(settings):
    settings.DRS = {"HOST_KEY": "x", "HOST_KEY_POLICY": "trust", "SECRET_KEY": "short"}
    assert ids(checks.check_settings(None)) == ["drs.E001", "drs.E002", "drs.E003"]


def test_missing_api_apps_are_one_error_naming_each(settings):
    settings.INSTALLED_APPS = [
        a for a in settings.INSTALLED_APPS if a not in ("drf_spectacular", "django_filters")
    ]
    [error] = checks.check_apps(None)
    assert error.id == "drs.E010"
    assert "django_filters, drf_spectacular" in error.msg
    assert "swagger_ui.html" in error.msg and error.hint


def test_no_celery_app_loaded_is_an_error(celery_state):
    celery_state(None)
    [error] = checks.check_celery(None)
    assert error.id == "drs.E020"
    assert "from .celery import app as celery_app" in error.hint
    assert _state.default_app is None  # the check did not create Celery's fallback app


def test_celerys_fallback_app_counts_as_none(celery_state):
    celery_state(Celery("default", fixups=[], set_as_current=False))
    assert ids(checks.check_celery(None)) == ["drs.E020"]


def test_a_celery_app_without_a_broker_is_an_error_unless_eager(celery_state):
    app = Celery("proj", set_as_current=False)
    celery_state(app)
    [error] = checks.check_celery(None)
    assert error.id == "drs.E021" and "CELERY_BROKER_URL" in error.hint
    app.conf.task_always_eager = True
    assert checks.check_celery(None) == []
    app.conf.task_always_eager = False
    app.conf.broker_url = "redis://127.0.0.1:6379/0"
    assert checks.check_celery(None) == []


def test_no_channel_layer_is_a_warning(settings):
    settings.CHANNEL_LAYERS = {}
    [warning] = checks.check_channel_layer(None)
    assert warning.id == "drs.W030" and "redis_channel_layer" in warning.hint


def test_in_memory_layer_beside_a_worker_process_is_a_warning(settings, celery_state):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    app = Celery("proj", set_as_current=False, broker="redis://127.0.0.1:6379/0")
    celery_state(app)
    assert ids(checks.check_channel_layer(None)) == ["drs.W031"]
    app.conf.broker_url = "memory://"  # the worker runs in this process: fine
    assert checks.check_channel_layer(None) == []


@pytest.mark.parametrize(
    "hosts, warned",
    [
        (["redis://127.0.0.1:6379/1"], True),  # redis-py 8: 5 s, as long as the wait
        ([("127.0.0.1", 6379)], True),
        ([{"address": "redis://127.0.0.1:6379/1"}], True),
        ([{"address": "redis://127.0.0.1:6379/1", "socket_timeout": 3}], True),
        ([{"address": "redis://127.0.0.1:6379/1", "socket_timeout": None}], False),
        ([{"address": "redis://127.0.0.1:6379/1", "socket_timeout": 30}], False),
        (["redis://127.0.0.1:6379/1?socket_timeout=30"], False),
        ([{"address": "redis://h/1?socket_timeout=2", "socket_timeout": 30}], True),  # URL wins
    ],
)
def test_redis_layer_whose_connections_time_out_during_the_wait_is_a_warning(
    settings, monkeypatch, hosts, warned
):
    monkeypatch.setattr(checks, "_default_socket_timeout", lambda: 5)
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": REDIS, "CONFIG": {"hosts": hosts}}}
    assert ids(checks.check_channel_layer(None)) == (["drs.W032"] if warned else [])


def test_redis_channel_layer_helper_passes_the_check_whatever_redis_py_defaults_to(
    settings, monkeypatch
):
    monkeypatch.setattr(checks, "_default_socket_timeout", lambda: 5)
    settings.CHANNEL_LAYERS = {"default": redis_channel_layer("redis://h:6379/1", prefix="p")}
    assert settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] == "p"
    assert checks.check_channel_layer(None) == []


def test_the_redis_py_default_is_read_from_redis_py():
    # redis-py before 8 has no timeout (None), 8 has 5 s: the check knows which is installed.
    import redis

    major = int(redis.__version__.split(".")[0])
    assert checks._default_socket_timeout() == (5 if major >= 8 else None)


def test_manage_py_check_reports_the_errors(settings):
    settings.DRS = {"KILL_GRACE": "5"}
    with pytest.raises(SystemCheckError, match=r"drs\.E004"):
        call_command("check")
