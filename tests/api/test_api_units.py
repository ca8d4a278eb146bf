"""Plain-function tests of the API's parts: API_KEYS, settings, cursors, funnel order, and
`journey-worker serve` refusing a bad configuration with one line before it opens a port."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from api.auth import KeyRing, parse_api_keys
from api.cursor import CursorCodec, CursorError, derived_secret
from api.settings import ApiSettings
from db import engine as db_engine
from db.pages import Keyset
from db.settings import ConfigError
from db.stats import funnel_order
from worker.cli import main
from worker.settings import use_settings

TENANT = uuid.UUID("11111111-1111-1111-1111-111111111111")
OTHER = uuid.UUID("22222222-2222-2222-2222-222222222222")
SECRET_KEY = "a-secret-key-0123456789"


def test_api_keys_raw_and_digest_forms() -> None:
    digest = hashlib.sha256(b"another-secret-key-42").hexdigest()
    keys = parse_api_keys(f" {TENANT}:{SECRET_KEY} , {OTHER}:sha256:{digest.upper()},")
    ring = KeyRing(keys)
    assert ring.tenant_for(SECRET_KEY) == TENANT
    assert ring.tenant_for("another-secret-key-42") == OTHER
    assert ring.tenant_for(digest) is None and ring.tenant_for("") is None
    assert SECRET_KEY not in repr(keys) and digest not in repr(keys).lower()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (f"{TENANT}", "entry 1 is not TENANT_ID:KEY"),
        (f"{TENANT}:", "entry 1 is not TENANT_ID:KEY"),
        (f"acme:{SECRET_KEY}", "entry 1: the tenant id is not a UUID"),
        (f"{TENANT}:short", "entry 1: a key needs at least 16 characters"),
        (f"{TENANT}:sha256:abc", "entry 1: sha256: must be followed by 64 hex digits"),
        (f"{TENANT}:{SECRET_KEY},{OTHER}:{SECRET_KEY}", "entry 2 repeats the key of entry 1"),
    ],
)
def test_bad_api_keys_are_named_without_the_key(raw: str, problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_api_keys(raw)
    assert error.value.variable == "API_KEYS" and error.value.problem == problem
    assert SECRET_KEY not in str(error.value) and "short" not in str(error.value).split(":", 1)[0]


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"API_PORT": "http"}, "API_PORT"),
        ({"API_PORT": "0"}, "API_PORT"),
        ({"API_DB_POOL_SIZE": "0"}, "API_DB_POOL_SIZE"),
        ({"API_MAX_EXPORTS": "-1"}, "API_MAX_EXPORTS"),
        ({"API_EXPORT_STATEMENT_TIMEOUT_MS": "soon"}, "API_EXPORT_STATEMENT_TIMEOUT_MS"),
    ],
)
def test_bad_settings_name_their_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as error:
        ApiSettings.from_env(environ)
    assert error.value.variable == variable


def test_settings_defaults_and_blank_values() -> None:
    settings = ApiSettings.from_env({"API_PORT": " ", "API_KEYS": f"{TENANT}:{SECRET_KEY}"})
    assert (settings.host, settings.port, settings.max_exports) == ("127.0.0.1", 8080, 2)
    assert SECRET_KEY not in repr(settings)


def test_cursors_round_trip_and_refuse_everything_else() -> None:
    codec = CursorCodec(derived_secret([b"k" * 32]))
    key = Keyset(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), uuid.uuid4())
    cursor = codec.encode("t/journeys", key)
    assert codec.decode("t/journeys", cursor) == key
    for listing, bad in [
        ("t/other", cursor),
        ("t/journeys", cursor[:-1]),
        ("t/journeys", "A" + cursor[1:]),
        ("t/journeys", "%%%"),
        ("t/journeys", "x" * 513),
    ]:
        with pytest.raises(CursorError):
            codec.decode(listing, bad)
    # Another deployment's secret (other keys) does not verify it either.
    with pytest.raises(CursorError):
        CursorCodec(derived_secret([b"j" * 32])).decode("t/journeys", cursor)


def test_funnel_order_walks_from_the_entry_node() -> None:
    a, b, c, d, e, orphan = (uuid.UUID(int=i) for i in range(1, 7))
    nodes = [
        (orphan, None, {}),
        (e, None, {}),
        (d, e, {}),
        (c, None, {"branches": [{"weight": 1, "node_id": str(d)}, {"node_id": None}]}),
        (b, c, {"true_node_id": str(e), "false_node_id": "not-a-uuid"}),
        (a, b, {}),
    ]
    assert funnel_order(a, nodes) == [a, b, c, e, d, orphan]
    assert funnel_order(None, nodes) == [orphan, e, d, c, b, a]  # no entry: stored order
    assert funnel_order(a, [(a, a, {"x_node_id": str(a)})]) == [a]  # loops end


def invoke_serve(env: dict[str, str]) -> tuple[int, str]:
    db_engine.use_engine(None)
    use_settings(None)
    result = CliRunner().invoke(main, ["serve"], env=env)
    db_engine.use_engine(None)
    use_settings(None)
    return result.exit_code, result.output


def test_serve_refuses_a_bad_configuration_with_one_line(tmp_path: Path) -> None:
    sqlite = f"sqlite:///{tmp_path / 'journey.db'}"
    keys = f"{TENANT}:{SECRET_KEY}"
    code, output = invoke_serve({"DATABASE_URL": sqlite, "API_KEYS": keys})
    assert code == 2 and output.count("\n") == 1
    assert output.startswith("journey-worker: DATABASE_URL: the HTTP API needs PostgreSQL")
    code, output = invoke_serve({"DATABASE_URL": sqlite, "API_KEYS": ""})
    assert (code, output) == (
        2,
        "journey-worker: API_KEYS: no keys: set comma-separated TENANT_ID:KEY pairs\n",
    )
    code, output = invoke_serve({"API_KEYS": f"{TENANT}:tiny"})
    assert code == 2 and "API_KEYS: entry 1: a key needs at least 16" in output
    assert "tiny" not in output
    code, output = invoke_serve({"API_KEYS": keys, "API_PORT": "eighty"})
    assert code == 2 and output.startswith("journey-worker: API_PORT:")
