"""The settings: one set of rules for every section, one process-wide object, no secret shown.

Fast unit tests, no service needed; tests/test_bad_config.py runs the same errors through the
real command line and `celery -A worker worker`.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.signals import task_retry

import cache
import db.settings
import envconfig
import tasks.settings
from api.settings import ApiSettings
from cache.settings import CacheSettings, cache_settings, use_cache_settings
from db.settings import DbSettings, db_settings, parse_database_url, use_db_settings
from envconfig import ConfigError, Section
from tasks import names
from tasks.base import JourneyTask
from tasks.errors import TransientError
from tasks.settings import EngineSettings, engine_settings, use_engine_settings
from worker.app import TASK_MODULES, create_app
from worker.settings import (
    BudgetSettings,
    LoggingSettings,
    MetricsSettings,
    Settings,
    WorkerSettings,
    current_settings,
    load_settings,
    use_settings,
)

# Register the shared tasks create_app binds, as the worker's include list does.
for _module in TASK_MODULES:
    importlib.import_module(_module)

ROOT = Path(__file__).resolve().parent.parent
SECTIONS: tuple[type[Section], ...] = (
    DbSettings,
    CacheSettings,
    EngineSettings,
    WorkerSettings,
    MetricsSettings,
    LoggingSettings,
    BudgetSettings,
    ApiSettings,
)
PASSWORD = "hunter2"


def fields_of_type(*kinds: type) -> list[tuple[type[Section], str, str]]:
    """(section, field, variable) for every environment-backed field annotated with `kinds`."""
    found = []
    for section in SECTIONS:
        for name, field in section.model_fields.items():
            variables = envconfig.errors.variables_of(name, field)
            annotation = field.annotation
            members = getattr(annotation, "__args__", (annotation,))
            if variables and any(member in kinds for member in members):
                found.append((section, name, variables[0]))
    return found


NUMBERS = fields_of_type(int, float)
FLAGS = fields_of_type(bool)


@pytest.fixture
def fresh_process() -> Iterator[None]:
    """No settings installed before or after: each test starts as a new process would."""
    use_settings(None)
    yield
    use_settings(None)


# --- One set of rules -------------------------------------------------------------------------


def test_every_section_is_found() -> None:
    assert len(NUMBERS) >= 25 and len(FLAGS) == 3


@pytest.mark.parametrize(("section", "field", "variable"), NUMBERS, ids=lambda v: str(v))
@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e999"])
def test_no_number_accepts_nan_or_inf(
    section: type[Section], field: str, variable: str, raw: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        section.from_env({variable: raw})
    assert raised.value.variable == variable
    assert raised.value.problem in (
        f"expected a whole number, got {raw!r}",
        f"expected a finite number, got {raw!r}",
    )


@pytest.mark.parametrize(("section", "field", "variable"), NUMBERS, ids=lambda v: str(v))
def test_every_number_has_a_floor_worded_the_same(
    section: type[Section], field: str, variable: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        section.from_env({variable: "-5"})
    assert raised.value.variable == variable
    assert re.fullmatch(r"must be (at least|greater than) -?[\d.]+, got '-5'", raw_problem(raised))


def raw_problem(raised: pytest.ExceptionInfo[ConfigError]) -> str:
    return raised.value.problem


@pytest.mark.parametrize(("section", "field", "variable"), FLAGS, ids=lambda v: str(v))
def test_every_flag_accepts_the_same_spellings(
    section: type[Section], field: str, variable: str
) -> None:
    for raw, expected in [("1", True), ("TRUE", True), ("yes", True), ("On", True)]:
        assert getattr(section.from_env({variable: raw}), field) is expected
    for raw, expected in [("0", False), ("false", False), ("NO", False), ("off", False)]:
        assert getattr(section.from_env({variable: raw}), field) is expected
    for raw in ("maybe", "2", "t", "y"):
        with pytest.raises(ConfigError) as raised:
            section.from_env({variable: raw})
        assert str(raised.value) == f"{variable}: expected true or false, got {raw!r}"


def test_unset_and_blank_mean_the_default() -> None:
    for section in SECTIONS:
        blank = {variable: "  " for variable in section.variables()}
        assert section.from_env(blank) == section.from_env({}) == section()


def test_keyword_construction_is_validated_and_never_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOOP_GUARD_REPEATS", "9")
    assert EngineSettings(max_steps=7).loop_repeats == 3
    assert EngineSettings.from_env().loop_repeats == 9
    with pytest.raises(ConfigError, match=r"^MAX_STEPS_PER_CONTACT: must be at least 1, got 0$"):
        EngineSettings(max_steps=0)
    with pytest.raises(ConfigError, match=r"^pool_sise: not a setting of this section$"):
        DbSettings(pool_sise=3)


def test_one_config_error_class_for_every_package() -> None:
    assert db.settings.ConfigError is cache.ConfigError is envconfig.ConfigError
    assert issubclass(ConfigError, ValueError)


def test_the_readme_and_operations_page_list_every_variable() -> None:
    documented = (ROOT / "README.md").read_text() + (ROOT / "docs" / "operations.md").read_text()
    variables = {variable for section in SECTIONS for variable in section.variables()}
    missing = sorted(v for v in variables if f"`{v}`" not in documented)
    assert not missing, f"document these variables: {missing}"
    table = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("##", 1)[0]
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    assert listed and listed <= variables, f"not read by any section: {listed - variables}"


# --- Secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("DATABASE_URL", f"postgresql:/user:{PASSWORD}@db.internal/jw"),  # a slash missing
        ("DATABASE_URL", f"postgresql://user:{PASSWORD}@db.internal:port/jw"),
        ("DATABASE_URL", f"mysql://user:{PASSWORD}@db.internal/jw"),
        ("DATABASE_URL", f"postgresql+psycopg2://user:{PASSWORD}@db.internal/jw"),
        ("REDIS_URL", f"redis://:{PASSWORD}@cache.internal:port/0"),
        ("REDIS_URL", f"http://:{PASSWORD}@cache.internal/0"),
        ("CELERY_BROKER_URL", f"guest:{PASSWORD}@mq.internal:5672"),  # the scheme missing
        ("CELERY_BROKER_URL", f"kafka://guest:{PASSWORD}@mq.internal"),
        ("CELERY_BROKER_URL", f"amqp://guest:{PASSWORD}@[mq.internal:5672//"),
    ],
)
def test_a_bad_url_is_named_but_never_repeated(variable: str, url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({variable: url})
    assert raised.value.variable == variable
    assert PASSWORD not in str(raised.value) and PASSWORD not in repr(raised.value)
    assert raised.value.__suppress_context__  # the ValidationError, which quotes it, is hidden


def test_no_repr_shows_a_password() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": f"postgresql://jw:{PASSWORD}@db.internal/jw",
            "REDIS_URL": f"redis://:{PASSWORD}@cache.internal:6379/0",
            "CELERY_BROKER_URL": f"amqp://jw:{PASSWORD}@mq.internal:5672//",
            "SMS_PROVIDER": "http",
            "SMS_PROVIDER_URL": f"https://jw:{PASSWORD}@sms.example/send",
        }
    )
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert PASSWORD not in settings.model_dump_json()
    # The clients still get the whole URL.
    assert settings.db.url.password == PASSWORD
    assert settings.cache.redis_url == f"redis://:{PASSWORD}@cache.internal:6379/0"
    assert settings.worker.broker == f"amqp://jw:{PASSWORD}@mq.internal:5672//"
    assert settings.engine.sms_provider_url is not None
    assert PASSWORD in settings.engine.sms_provider_url.get_secret_value()


# --- DATABASE_URL ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "postgres://jw@db.internal:5432/jw",
        "postgresql://jw@db.internal:5432/jw",
        "postgresql+psycopg://jw@db.internal:5432/jw",
        "postgres+psycopg://jw@db.internal:5432/jw",
    ],
)
def test_platform_postgres_urls_use_psycopg_3(raw: str) -> None:
    url = DbSettings.from_env({"DATABASE_URL": raw}).url
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port, url.database, url.username) == ("db.internal", 5432, "jw", "jw")


def test_the_embedded_default_and_sqlite_urls() -> None:
    assert DbSettings().is_sqlite and DbSettings().url == parse_database_url(
        "sqlite:///.journey-worker/journey.db"
    )
    assert DbSettings.from_env({"DATABASE_URL": "sqlite://"}).is_sqlite


def test_session_settings_follow_pgbouncer_unless_given() -> None:
    assert DbSettings.from_env({}).session_settings == "startup"
    assert DbSettings.from_env({"DB_PGBOUNCER": "true"}).session_settings == "none"
    assert DbSettings(pgbouncer=True).session_settings == "none"
    both = {"DB_PGBOUNCER": "true", "DB_SESSION_SETTINGS": "Checkout"}
    assert DbSettings.from_env(both).session_settings == "checkout"
    with pytest.raises(ConfigError) as raised:
        DbSettings.from_env({"DB_SESSION_SETTINGS": "always"})
    assert str(raised.value) == (
        "DB_SESSION_SETTINGS: expected one of startup, checkout, none, got 'always'"
    )
    # A bad DB_PGBOUNCER is reported as itself, not as a consequence on session_settings.
    with pytest.raises(ConfigError, match=r"^DB_PGBOUNCER: expected true or false"):
        DbSettings.from_env({"DB_PGBOUNCER": "sometimes"})


# --- The worker's sections --------------------------------------------------------------------


def test_broker_falls_back_to_redis_url_then_the_embedded_broker() -> None:
    embedded = WorkerSettings.from_env({})
    assert embedded.embedded_broker and embedded.broker == "filesystem://"
    from_redis = WorkerSettings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/1"})
    assert not from_redis.embedded_broker and from_redis.broker == "redis://127.0.0.1:6379/1"
    both = {"REDIS_URL": "redis://127.0.0.1:6379/1", "CELERY_BROKER_URL": "amqp://g@h:5672//"}
    assert WorkerSettings.from_env(both).broker == "amqp://g@h:5672//"
    assert not WorkerSettings(broker_url="memory://").embedded_broker
    with pytest.raises(ConfigError, match=r"^REDIS_URL: unsupported broker URL scheme 'http'"):
        WorkerSettings.from_env({"REDIS_URL": "http://cache"})


def test_the_embedded_broker_keeps_everything_under_journey_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = create_app(WorkerSettings.from_env({}), EngineSettings.from_env({}))
    # Publishing declares the queue and binds it: the filesystem transport writes its exchange
    # table into its control folder then.
    app.send_task(names.DISPATCH_DUE)
    app.pool.force_close_all()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".journey-worker"]
    assert list((tmp_path / ".journey-worker" / "broker" / "control").glob("*.exchange"))


def test_time_limit_must_exceed_the_soft_limit() -> None:
    env = {"TASK_SOFT_TIME_LIMIT_SECONDS": "20", "TASK_TIME_LIMIT_SECONDS": "20"}
    with pytest.raises(ConfigError) as raised:
        WorkerSettings.from_env(env)
    assert raised.value.variable == "TASK_TIME_LIMIT_SECONDS"
    assert raised.value.problem.startswith("must be greater than the soft limit")


def test_sms_provider_url_required_for_http_only() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^SMS_PROVIDER_URL: required when SMS_PROVIDER=http \(or SMS_PROVIDER_URLS\)$",
    ):
        EngineSettings.from_env({"SMS_PROVIDER": "HTTP"})
    assert EngineSettings.from_env({"SMS_PROVIDER_URL": "http://x"}).sms_provider == "log"


def test_cache_key_prefix_characters() -> None:
    with pytest.raises(ConfigError, match=r"^CACHE_KEY_PREFIX: use letters, digits"):
        CacheSettings.from_env({"CACHE_KEY_PREFIX": "jw {x}"})


# --- One process-wide object ------------------------------------------------------------------


def test_load_settings_names_the_first_bad_variable_in_section_order() -> None:
    env = {"LOG_FORMAT": "xml", "CACHE_NODE_TTL_SECONDS": "0", "DB_POOL_SIZE": "many"}
    with pytest.raises(ConfigError) as raised:
        load_settings(env)
    assert str(raised.value) == "DB_POOL_SIZE: expected a whole number, got 'many'"
    env.pop("DB_POOL_SIZE")
    with pytest.raises(ConfigError, match=r"^CACHE_NODE_TTL_SECONDS"):
        load_settings(env)


def test_use_settings_installs_every_package_section(fresh_process: None) -> None:
    settings = load_settings(
        {"DB_POOL_SIZE": "3", "CACHE_KEY_PREFIX": "installed", "LOOP_GUARD_REPEATS": "7"}
    )
    use_settings(settings)
    assert current_settings() is settings
    assert db_settings() is settings.db and db_settings().pool_size == 3
    assert cache_settings() is settings.cache and cache.cache_settings().key_prefix == "installed"
    assert (
        engine_settings() is settings.engine and tasks.settings.engine_settings().loop_repeats == 7
    )


def test_current_settings_is_built_once(
    fresh_process: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_POOL_SIZE", "4")
    first = current_settings()
    monkeypatch.setenv("DB_POOL_SIZE", "5")
    assert current_settings() is first and db_settings().pool_size == 4
    use_settings(None)
    assert current_settings().db.pool_size == 5


def test_section_accessors_read_the_environment_once_unless_installed(
    fresh_process: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_STEPS_PER_CONTACT", "12")
    assert engine_settings() is engine_settings() and engine_settings().max_steps == 12
    use_engine_settings(EngineSettings(max_steps=13))
    assert engine_settings().max_steps == 13
    use_db_settings(DbSettings(pool_size=9))
    use_cache_settings(CacheSettings(node_ttl=11))
    assert (db_settings().pool_size, cache_settings().node_ttl) == (9, 11)


def test_settings_aggregate_holds_every_section() -> None:
    assert set(Settings.model_fields) == {
        "db",
        "cache",
        "engine",
        "worker",
        "metrics",
        "logging",
        "budget",
    }


def test_nothing_reads_the_environment_at_import() -> None:
    # Every module but the worker package (whose import is the worker's start) imports
    # cleanly with every variable malformed; the bad values surface only when read.
    bad = {variable: "not valid" for section in SECTIONS for variable in section.variables()}
    env = {k: v for k, v in os.environ.items() if k not in bad} | bad
    code = (
        "import bench.naive, cache, cache.client, db.engine, db.step_store, envconfig, "
        "tasks.base, tasks.delivery, tasks.steps, tasks.lookups\n"
        "from tasks.settings import engine_settings\n"
        "try:\n"
        "    engine_settings()\n"
        "except ValueError as exc:\n"
        "    print('read when asked:', exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("read when asked: LOOP_GUARD_REPEATS: expected a whole number")


# --- The retry policy reaches the tasks when the app is created -------------------------------


class RecordingTask(JourneyTask):
    """A JourneyTask whose failures are kept here instead of in the database."""

    abstract = True
    failures: list[str] = []  # shared on purpose: the test reads it

    def record_failure(
        self, task_id: str, kwargs: dict[str, Any], reason: str, exc: BaseException
    ) -> None:
        RecordingTask.failures.append(reason)


def test_create_app_sets_the_retry_policy_on_every_journey_task() -> None:
    strict = create_app(
        WorkerSettings(broker_url="memory://"), EngineSettings(max_retries=4, retry_backoff_max=5)
    )
    lenient = create_app(
        WorkerSettings(broker_url="memory://"), EngineSettings(max_retries=7, retry_backoff_max=9)
    )
    for name in (names.EXECUTE_NODE, names.ENROLL, names.DELIVER_MESSAGE, names.DISPATCH_DUE):
        assert (strict.tasks[name].max_retries, strict.tasks[name].retry_backoff_max) == (4, 5)
        assert (lenient.tasks[name].max_retries, lenient.tasks[name].retry_backoff_max) == (7, 9)
    # Celery's own tasks keep their policies.
    assert strict.tasks["celery.chord_unlock"].max_retries is None


def test_autoretry_uses_the_settings_limits() -> None:
    app = create_app(
        WorkerSettings(broker_url="memory://"), EngineSettings(max_retries=4, retry_backoff_max=5)
    )
    attempts: list[int] = []

    # Without jitter the backoff is exact: 2 x 2^n seconds, capped at retry_backoff_max.
    @app.task(bind=True, base=RecordingTask, name="tests.always_transient", retry_jitter=False)
    def always_transient(self: JourneyTask) -> None:
        attempts.append(self.request.retries)
        raise TransientError("the database is away")

    countdowns: list[float] = []

    def on_retry(sender: Any = None, reason: Any = None, **_: Any) -> None:
        if sender is not None and sender.name == "tests.always_transient":
            countdowns.append(reason.when)

    task_retry.connect(on_retry, weak=False)
    RecordingTask.failures.clear()
    try:
        result = always_transient.apply()
    finally:
        task_retry.disconnect(on_retry)
    assert result.failed()
    assert attempts == [0, 1, 2, 3, 4]  # the first run and max_retries=4 retries
    assert countdowns == [2, 4, 5, 5]  # 2, 4, then capped at 5 (300 would give 8, 16)
    assert RecordingTask.failures == ["retries_exhausted: TransientError: the database is away"]
