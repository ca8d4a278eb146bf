"""`journey-worker contacts import`: COPY into a temporary table, chunks in their own short
transactions, progress in contact_imports, resumed after a SIGKILL without applying a chunk twice."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import Engine, create_engine, text

from tests.e2e_rig import rows, scalar
from tests.factories import make_contacts, make_tenant
from tests.test_migrations import run_cli
from tests.worker_process import wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(pg_url: str) -> Any:
    engine = create_engine(pg_url, pool_size=2)
    yield engine
    engine.dispose()


def write_csv(path: Path, header: list[str], lines: list[list[str | None]]) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for line in lines:
            # None: an empty, unquoted cell (COPY reads it as NULL: sets nothing).
            writer.writerow(["" if cell is None else cell for cell in line])
    return path


def attributes_of(db: Engine, ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    with db.connect() as conn:
        found = conn.execute(
            text("SELECT id, attributes FROM contacts WHERE id = ANY(:ids)"), {"ids": ids}
        )
        return {row.id: row.attributes for row in found}


def import_cli(pg_url: str, path: Path, tenant: uuid.UUID, *extra: str) -> Result:
    return run_cli(pg_url, "contacts", "import", str(path), "--tenant", str(tenant), *extra)


def test_import_merges_cells_skips_foreign_ids_and_records_progress(
    pg_url: str, db: Engine, tmp_path: Path
) -> None:
    tenant, other = make_tenant(db), make_tenant(db, name="Other")
    ours = make_contacts(db, tenant, 4)
    theirs = make_contacts(db, other, 1)[0]
    path = write_csv(
        tmp_path / "contacts.csv",
        ["contact_id", "plan", "city"],
        [
            [str(ours[0]), "gold", "Oslo"],
            [str(ours[1]), None, "Rome"],  # an empty cell sets nothing
            [str(theirs), "stolen", "Nowhere"],
            [str(uuid.uuid4()), "nobody", None],
            [str(ours[0]), "platinum", None],  # later rows win, across chunks too
            [str(ours[2]).replace("-", "").upper(), "silver", ""],
        ],
    )
    result = import_cli(pg_url, path, tenant, "--chunk-size", "2")
    assert result.exit_code == 0, result.output
    assert "6 rows, 4 contacts updated, 2 unknown or other tenants' ids skipped, 3 chunks" in (
        result.output
    )
    got = attributes_of(db, [*ours, theirs])
    assert got[ours[0]] == {"first_name": "Ann0", "plan": "platinum", "city": "Oslo"}
    assert got[ours[1]] == {"first_name": "Ann1", "plan": "pro", "city": "Rome"}
    # A quoted empty string is a value; csv.writer leaves "" unquoted, so it set nothing here.
    assert got[ours[2]] == {"first_name": "Ann2", "plan": "silver"}
    assert got[ours[3]] == {"first_name": "Ann3", "plan": "pro"}
    assert got[theirs] == {"first_name": "Ann0", "plan": "pro"}
    (progress,) = rows(
        db,
        "SELECT status, total_rows, applied_rows, updated_contacts, skipped_contacts, "
        "finished_at FROM contact_imports",
    )
    assert tuple(progress)[:5] == ("COMPLETED", 6, 6, 4, 2)
    assert progress.finished_at is not None

    # The same file again is a new import (the first completed), and changes nothing more.
    again = import_cli(pg_url, path, tenant)
    assert again.exit_code == 0 and "resumed" not in again.output
    assert attributes_of(db, [ours[0]])[ours[0]]["plan"] == "platinum"
    assert scalar(db, "SELECT count(*) FROM contact_imports WHERE status = 'COMPLETED'") == 2


@pytest.mark.parametrize(
    ("header", "lines", "problem"),
    [
        (["id", "plan"], [], "the first column must be contact_id, got 'id'"),
        (["contact_id"], [], "no attribute columns after contact_id"),
        (["contact_id", "plan", "plan"], [], "column 'plan' appears twice"),
        (
            ["contact_id", "plan"],
            [["{ok}", "a"], ["not-a-uuid", "b"], ["", "c"]],
            "contact_id is not a UUID (line 3: 'not-a-uuid', line 4: None); nothing applied",
        ),
        (["contact_id", "plan"], [["{ok}", "a", "extra"]], "extra data after last expected"),
    ],
)
def test_a_bad_file_is_refused_naming_the_problem_and_applies_nothing(
    pg_url: str,
    db: Engine,
    tmp_path: Path,
    header: list[str],
    lines: list[list[str | None]],
    problem: str,
) -> None:
    tenant = make_tenant(db)
    contact = make_contacts(db, tenant, 1)[0]
    lines = [[str(contact) if cell == "{ok}" else cell for cell in line] for line in lines]
    path = write_csv(tmp_path / "bad.csv", header, lines)
    result = import_cli(pg_url, path, tenant)
    assert result.exit_code == 1
    assert problem in result.output
    assert attributes_of(db, [contact])[contact] == {"first_name": "Ann0", "plan": "pro"}


def test_unknown_tenant_is_refused(pg_url: str, db: Engine, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ["contact_id", "plan"], [[str(uuid.uuid4()), "x"]])
    nobody = uuid.uuid4()
    result = import_cli(pg_url, path, nobody)
    assert result.exit_code == 1 and f"no such tenant: {nobody}" in result.output


@pytest.mark.slow
def test_a_killed_import_resumes_after_its_last_committed_chunk(
    pg_url: str, db: Engine, tmp_path: Path
) -> None:
    tenant = make_tenant(db)
    ids = make_contacts(db, tenant, 3000)
    path = write_csv(
        tmp_path / "big.csv",
        ["contact_id", "batch", "row"],
        [[str(cid), "spring", str(i)] for i, cid in enumerate(ids)],
    )
    command = [sys.executable, "-m", "worker.cli", "contacts", "import", str(path)]
    command += ["--tenant", str(tenant), "--chunk-size", "100", "--pause-ms", "40"]
    env = {**os.environ, "DATABASE_URL": pg_url}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(
            lambda: (scalar(db, "SELECT max(applied_rows) FROM contact_imports") or 0) >= 600,
            timeout=60,
            interval=0.05,
        )
        # A second import of the same file meanwhile is refused: one process per import.
        second = import_cli(pg_url, path, tenant)
        assert second.exit_code == 1 and "is running in another process" in second.output
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    (state,) = rows(
        db, "SELECT status, applied_rows, updated_contacts, total_rows FROM contact_imports"
    )
    assert state.status == "RUNNING" and state.total_rows == 3000
    applied = state.applied_rows
    assert 600 <= applied < 3000 and applied % 100 == 0
    # Exactly the committed chunks' rows are applied: the rows of file order 1..applied.
    done = scalar(db, "SELECT count(*) FROM contacts WHERE attributes ? 'batch'")
    assert done == applied == state.updated_contacts
    assert scalar(db, "SELECT max((attributes->>'row')::int) FROM contacts") == applied - 1

    result = import_cli(pg_url, path, tenant, "--chunk-size", "100")
    assert result.exit_code == 0, result.output
    assert f"completed (resumed after row {applied}): 3000 rows, 3000 contacts updated" in (
        result.output
    )
    (final,) = rows(
        db, "SELECT status, applied_rows, updated_contacts, skipped_contacts FROM contact_imports"
    )
    # Counters advance in the chunks' transactions: a chunk applied twice would count twice.
    assert tuple(final) == ("COMPLETED", 3000, 3000, 0)
    assert scalar(db, "SELECT count(*) FROM contacts WHERE attributes->>'batch' = 'spring'") == 3000
    by_id = attributes_of(db, ids)
    assert all(by_id[cid]["row"] == str(i) for i, cid in enumerate(ids))


def test_sqlite_is_refused_naming_why(sqlite_engine: Engine, tmp_path: Path) -> None:
    from worker.contact_import import ContactImportError, run_import

    path = write_csv(tmp_path / "c.csv", ["contact_id", "plan"], [[str(uuid.uuid4()), "x"]])
    with pytest.raises(ContactImportError, match="needs PostgreSQL"):
        run_import(sqlite_engine, path, uuid.uuid4())


def test_a_chunk_meeting_a_held_contact_is_retried_not_queued(
    pg_url: str, db: Engine, tmp_path: Path
) -> None:
    """A step holding a contact makes the chunk give up after --lock-timeout-ms and try again,
    instead of the chunk's other locks waiting behind it; the import completes."""
    import threading

    from tests.test_migrations import pg_connect

    tenant = make_tenant(db)
    ids = make_contacts(db, tenant, 50)
    path = write_csv(
        tmp_path / "c.csv", ["contact_id", "plan"], [[str(cid), "held"] for cid in ids]
    )
    holder = pg_connect(pg_url)
    holder.execute("BEGIN")
    holder.execute("UPDATE contacts SET email = email WHERE id = %s", (ids[10],))
    release = threading.Timer(0.8, holder.execute, ("COMMIT",))
    release.start()
    try:
        result = import_cli(pg_url, path, tenant, "--lock-timeout-ms", "200")
    finally:
        release.join()
        holder.close()
    assert result.exit_code == 0, result.output
    assert "50 rows, 50 contacts updated" in result.output
    assert scalar(db, "SELECT count(*) FROM contacts WHERE attributes->>'plan' = 'held'") == 50
