"""Corrupt databases: refused at start, never changed, and a way out.

For each kind of bad database file (garbage, a truncated real database, a
real database with pages overwritten, a database from a newer schema, a file
the daemon may not read) sessiond refuses to start with a message naming
the file and leaves it byte-for-byte as it was (sha256, and no -wal or -shm
left next to it). Then the operator's way out, `sessionctl db check` and
`sessionctl db recover OUTPUT`: check says what SQLite says and exits 1;
recover copies every readable row into a new file without touching the
damaged one, and sessiond started on the recovered file validates the
sessions that were in readable pages. test_durability.py has the basic
refusals (garbage, truncated, newer, foreign); these add the damaged pages,
the unreadable file and everything sessionctl does about them.
"""

import hashlib
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile

from harness import SESSIONCTL, Daemon, Skip, run_tests

S = "io.sessiond.Session."


def schema_version():
    """STORE_SCHEMA_VERSION of lib/common/store-schema.h: what sessiond makes."""
    path = os.path.join(os.environ["MESON_SOURCE_ROOT"], "lib", "common", "store-schema.h")
    with open(path) as f:
        for line in f:
            if line.startswith("#define STORE_SCHEMA_VERSION "):
                return int(line.split()[2])
    raise AssertionError("no STORE_SCHEMA_VERSION in " + path)


SCHEMA_VERSION = schema_version()


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def fingerprint(d):
    """The database and what lies next to it."""
    side = sorted(n for n in os.listdir(os.path.dirname(d.database))
                  if n.startswith(os.path.basename(d.database) + "-"))
    return sha256(d.database), side


def start_refused(d):
    d.start(wait=False)
    try:
        rc = d.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError("sessiond did not exit:\n" + d.read_log())
    d.log.close()
    log = d.read_log()
    assert rc != 0, "sessiond started on a bad database:\n" + log
    return log


def db(d, *args, user=None):
    """sessionctl db ... on the daemon's configuration."""
    cmd = [SESSIONCTL, "-c", d.config] + list(args)
    if user:
        cmd = ["setpriv", "--reuid=" + user, "--regid=nogroup", "--clear-groups"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=d.environ())


def make_database(d, n=3000):
    """Fills the daemon's database (users u0..), stops it cleanly; returns
    the tokens in creation order (rows in rowid order)."""
    tokens = []
    with d.connect(timeout=60) as c:
        for start in range(0, n, 500):
            c.send_raw(b"".join(
                json.dumps({"method": S + "Create", "parameters": {
                    "user_id": "u%d" % i, "sync_data": "data-%d" % i}}).encode() + b"\0"
                for i in range(start, min(n, start + 500))))
            for _ in range(start, min(n, start + 500)):
                r = c.recv()
                assert "error" not in r, r
                tokens.append(r["parameters"]["token"])
    d.stop()
    assert not os.path.exists(d.database + "-wal"), "a clean stop left a WAL"
    return tokens


def page_size(path):
    with open(path, "rb") as f:
        head = f.read(100)
    size = int.from_bytes(head[16:18], "big")
    return 65536 if size == 1 else size


def table_leaves(path, table):
    """The leaf pages of a table's b-tree, in key order, with their cell
    counts: [(page, cells)], read from the file as SQLite lays it out."""
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    finally:
        conn.close()
    size = page_size(path)
    with open(path, "rb") as f:
        data = f.read()

    def walk(page):
        base = (page - 1) * size
        head = base + (100 if page == 1 else 0)
        kind, cells = data[head], int.from_bytes(data[head + 3:head + 5], "big")
        if kind == 0x0d:  # table leaf
            return [(page, cells)]
        assert kind == 0x05, "page %d: type %#x" % (page, kind)  # table interior
        out = []
        for i in range(cells):
            ptr = int.from_bytes(data[head + 12 + 2 * i:head + 14 + 2 * i], "big")
            out += walk(int.from_bytes(data[base + ptr:base + ptr + 4], "big"))
        return out + walk(int.from_bytes(data[head + 8:head + 12], "big"))

    return walk(root)


def overwrite_pages(path, pages):
    """Writes noise over whole pages (1-based page numbers)."""
    size = page_size(path)
    with open(path, "r+b") as f:
        for p in pages:
            f.seek((p - 1) * size)
            f.write(bytes((i * 131 + p * 17 + 7) % 256 for i in range(size)))


def validate_all(d, tokens):
    """token -> "active" or the error name."""
    out = {}
    with d.connect(timeout=60) as c:
        for start in range(0, len(tokens), 500):
            part = tokens[start:start + 500]
            c.send_raw(b"".join(json.dumps({"method": S + "Validate", "parameters": {
                "token": t, "touch": False}}).encode() + b"\0" for t in part))
            for t in part:
                r = c.recv()
                out[t] = r.get("error") or r["parameters"]["state"]
    return out


def assert_refused_untouched(d, *words):
    before = fingerprint(d)
    log = start_refused(d)
    assert d.database in log, log
    for w in words:
        assert w in log, (w, log)
    assert fingerprint(d) == before, "the refused database or its side files changed"
    return log


def assert_check_fails(d, status, *words):
    before = fingerprint(d)
    p = db(d, "db", "check")
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert d.database in p.stdout + p.stderr, p
    for w in words:
        assert w in p.stdout + p.stderr, (w, p.stdout, p.stderr)
    j = db(d, "--json", "db", "check")
    assert j.returncode == 1, j
    if status is not None:
        r = json.loads(j.stdout)
        assert r["status"] == status and r["database"] == d.database and r["messages"], r
    assert fingerprint(d) == before, "db check changed the database"
    return p


# ---- the cases ----------------------------------------------------------------------------

def test_sound_database_checks_ok():
    with Daemon() as d:
        make_database(d, 200)
        before = fingerprint(d)
        p = db(d, "db", "check")
        assert p.returncode == 0 and p.stdout.strip() == \
            "%s: ok (integrity_check ok, schema version %d)" % (d.database, SCHEMA_VERSION), p
        j = json.loads(db(d, "--json", "db", "check").stdout)
        assert j == {"database": d.database, "status": "ok", "schema_version": SCHEMA_VERSION,
                     "messages": []}, j
        # --database names another file; the configuration's is not needed.
        other = os.path.join(d.tmp, "copy.db")
        shutil.copyfile(d.database, other)
        p = subprocess.run([SESSIONCTL, "-c", "/nonexistent.conf", "db", "check", "--database", other],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and other in p.stdout, p
        assert fingerprint(d) == before


def test_garbage():
    with Daemon() as d:
        d.stop()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(d.database + suffix):
                os.unlink(d.database + suffix)
        with open(d.database, "wb") as f:
            f.write(bytes((i * 37 + 11) % 256 for i in range(16384)))
        assert_refused_untouched(d, "not a readable SQLite database")
        assert_check_fails(d, "unreadable", "not a readable SQLite database", "file is not a database")
        before = fingerprint(d)
        out = os.path.join(d.tmp, "recovered.db")
        p = db(d, "db", "recover", out)
        assert p.returncode == 1 and "cannot read the schema" in p.stderr and "restore a backup" in p.stderr, p
        assert not os.path.exists(out) and not os.path.exists(out + ".tmp")
        assert fingerprint(d) == before


def test_truncated():
    with Daemon() as d:
        tokens = make_database(d, 3000)
        size = os.path.getsize(d.database)
        page = page_size(d.database)
        with open(d.database, "r+b") as f:
            # Half the pages: what a lost extent or a copy cut short
            # leaves (a page cut in its middle would leave a page of which
            # SQLite reads garbage, a case of test_pages_overwritten).
            f.truncate(size // page // 2 * page)
        assert_refused_untouched(d)
        assert_check_fails(d, "corrupt")
        recovered = recover_and_start(d, tokens)
        # The first half of the file held rows: some came back.
        assert 0 < recovered < len(tokens), recovered


def test_pages_overwritten():
    with Daemon() as d:
        tokens = make_database(d, 3000)
        leaves = table_leaves(d.database, "sessions")
        assert len(leaves) > 10 and sum(n for _, n in leaves) == len(tokens), leaves
        # Two runs of damage in the sessions table: one leaf a third in, two
        # adjacent leaves two thirds in; and a page of the audit table.
        hit = [leaves[len(leaves) // 3], leaves[2 * len(leaves) // 3], leaves[2 * len(leaves) // 3 + 1]]
        audit = table_leaves(d.database, "audit")
        overwrite_pages(d.database, [p for p, _ in hit] + [audit[len(audit) // 2][0]])
        log = assert_refused_untouched(d)
        assert "corrupt" in log or "integrity" in log, log
        p = assert_check_fails(d, "corrupt", "corrupt", "sessionctl db recover")
        assert any(line.startswith("  Page ") for line in p.stdout.splitlines()), p.stdout  # SQLite's words
        recovered = recover_and_start(d, tokens)
        # Exactly the rows on the damaged pages are lost: the scan resumes
        # at the first readable row after each damaged run.
        assert recovered == len(tokens) - sum(n for _, n in hit), (recovered, hit)


def recover_and_start(d, tokens):
    """Recovers into a new file, checks the damaged one stayed as it was,
    puts the copy in place and starts sessiond on it; returns how many
    tokens validate (the others must be unknown, never wrong)."""
    before = fingerprint(d)
    out = os.path.join(d.tmp, "recovered.db")
    p = db(d, "db", "recover", out)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "Recovered %s into %s" % (d.database, out) in p.stdout, p.stdout
    assert "sessions:" in p.stdout and "To use it" in p.stdout, p.stdout
    assert fingerprint(d) == before, "recover changed the damaged database"
    assert not os.path.exists(out + ".tmp")
    assert os.stat(out).st_mode & 0o777 == 0o600
    # Refuses to overwrite without --force, and never writes the source.
    p = db(d, "db", "recover", out)
    assert p.returncode == 1 and "exists" in p.stderr, p
    p = db(d, "db", "recover", "--force", d.database)
    assert p.returncode == 1 and "the database itself" in p.stderr, p
    j = db(d, "--json", "db", "recover", "--force", out)
    assert j.returncode == 0, j
    tables = {t["table"]: t for t in json.loads(j.stdout)["tables"]}
    assert set(tables) == {"sessions", "audit"}, tables
    conn = sqlite3.connect(out)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    rows = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
    conn.close()
    assert rows == tables["sessions"]["rows"], (rows, tables)
    p = subprocess.run([SESSIONCTL, "db", "check", "--database", out], capture_output=True, text=True)
    assert p.returncode == 0, p
    # The way out, as the man page says: move the damaged file away, put
    # the copy in its place (next to the key file), start.
    os.rename(d.database, d.database + ".damaged")
    os.rename(out, d.database)
    d.start()
    states = validate_all(d, tokens)
    d.stop()
    good = [t for t, s in states.items() if s == "active"]
    assert set(states.values()) <= {"active", S + "NotFound"}, set(states.values())
    # What validates is what the copy holds.
    assert len(good) == rows, (len(good), rows)
    return len(good)


def test_schema_1_checked_recovered_migrated():
    """A database of schema 1 (session times in whole seconds, before the
    milliseconds of schema 2) is sound to db check, copied as it is by db
    recover, and migrated by sessiond at start: every session validates,
    the seconds columns are unchanged and the new ones read 0."""
    with Daemon() as d:
        tokens = make_database(d, 50)
        conn = sqlite3.connect(d.database)
        query = "SELECT row, created_at, last_activity, renewed_at FROM sessions ORDER BY row"
        before = conn.execute(query).fetchall()
        for column in ("created_at_ms", "last_activity_ms", "renewed_at_ms", "ended_at_ms"):
            conn.execute("ALTER TABLE sessions DROP COLUMN " + column)
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
        conn.close()
        p = db(d, "db", "check")
        assert p.returncode == 0 and p.stdout.strip() == \
            "%s: ok (integrity_check ok, schema version 1)" % d.database, p
        out = os.path.join(d.tmp, "recovered.db")
        p = db(d, "db", "recover", out)
        assert p.returncode == 0, (p.stdout, p.stderr)
        conn = sqlite3.connect(out)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        conn.close()
        os.rename(d.database, d.database + ".old")
        os.rename(out, d.database)
        d.start()
        states = validate_all(d, tokens)
        with d.connect() as c:
            s = c.call(S + "Validate", {"token": tokens[0], "touch": False})["session"]
        d.stop()
        assert set(states.values()) == {"active"}, set(states.values())
        assert (s["created_at"], s["last_activity"]) == before[0][1:3], (s, before[0])
        conn = sqlite3.connect(d.database)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute(query).fetchall() == before
        assert conn.execute("SELECT count(*) FROM sessions WHERE created_at_ms + last_activity_ms + "
                            "renewed_at_ms + ended_at_ms > 0").fetchone()[0] == 0
        conn.close()
        assert db(d, "db", "check").returncode == 0


def test_newer_schema():
    with Daemon() as d:
        make_database(d, 50)
        conn = sqlite3.connect(d.database)
        conn.execute("PRAGMA user_version = 42")
        conn.commit()
        conn.close()
        assert_refused_untouched(d, "newer")
        assert_check_fails(d, "newer", "newer", "42")


def test_wal_left_by_a_crash_is_read_not_changed():
    # A crash leaves committed sessions in the WAL only; check and recover
    # read them and change neither file.
    with Daemon() as d:
        with d.connect() as c:
            tokens = [c.call(S + "Create", {"user_id": "w%d" % i})["token"] for i in range(50)]
        d.kill()
        assert os.path.getsize(d.database + "-wal") > 0
        wal = sha256(d.database + "-wal")
        before = fingerprint(d)
        p = db(d, "db", "check")
        assert p.returncode == 0, p
        out = os.path.join(d.tmp, "recovered.db")
        p = db(d, "db", "recover", out)
        assert p.returncode == 0, p
        assert fingerprint(d) == before and sha256(d.database + "-wal") == wal
        conn = sqlite3.connect(out)
        assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 50
        conn.close()
        d.start()
        assert set(validate_all(d, tokens).values()) == {"active"}
        d.stop()


class NobodyDaemon(Daemon):
    """A daemon running as nobody (setpriv)."""

    def command(self):
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] + super().command()


def test_unreadable_file():
    if os.geteuid() != 0:
        raise Skip("needs root to run the daemon as nobody (root reads a file of mode 000)")
    nobody = pwd.getpwnam("nobody")
    tmp = tempfile.mkdtemp(prefix="sessiond-test-")
    try:
        with Daemon(tmpdir=tmp) as d:
            make_database(d, 20)
        # A sound database of nobody's that nobody may not read.
        for name in os.listdir(tmp):
            os.chown(os.path.join(tmp, name), nobody.pw_uid, nobody.pw_gid)
        os.chown(tmp, nobody.pw_uid, nobody.pw_gid)
        os.chmod(tmp, 0o755)
        os.chmod(os.path.join(tmp, "sessions.db"), 0o000)
        with NobodyDaemon(tmpdir=tmp, wait=False) as d:
            d.proc.wait(timeout=10)
            d.log.close()
            before = fingerprint(d)
            log = start_refused(d)
            assert "Cannot open database %s" % d.database in log or d.database in log, log
            assert fingerprint(d) == before and os.stat(d.database).st_mode & 0o777 == 0
            p = db(d, "db", "check", user="nobody")
            assert p.returncode == 1 and "cannot read database %s" % d.database in p.stderr, p
            assert fingerprint(d) == before
            # Readable again: it starts, as nobody.
            os.chmod(d.database, 0o600)
            d.start()
            d.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_malformed_row_is_skipped():
    """A row memory cannot take (an id that does not derive from its row
    and creation time, an empty user: what a recovery from a damaged page
    may copy) is skipped at start with a warning naming the database; the
    daemon starts and every other session validates. (100 rows: the first
    is handed to memory while the store is still opening, in the first
    batch of the loader.)"""
    with Daemon() as d:
        tokens = make_database(d, 100)
        conn = sqlite3.connect(d.database)
        with conn:
            first, last = conn.execute("SELECT min(row), max(row) FROM sessions").fetchone()
            conn.execute("UPDATE sessions SET id = 'AAAAAAAAAAAAAAAAAAAAAA' WHERE row = ?", (first,))
            conn.execute("UPDATE sessions SET user_id = '' WHERE row = ?", (last,))
        conn.close()
        d.start()
        states = validate_all(d, tokens)
        log = d.read_log()
        d.stop()
        assert states[tokens[0]] == S + "NotFound" and states[tokens[-1]] == S + "NotFound", states
        assert all(states[t] == "active" for t in tokens[1:-1]), states
        assert log.count("has a malformed id or user; skipped") == 2, log
        assert "Store %s: session row %d has a malformed id" % (d.database, first) in log, log


run_tests([
    test_sound_database_checks_ok,
    test_malformed_row_is_skipped,
    test_garbage,
    test_truncated,
    test_pages_overwritten,
    test_newer_schema,
    test_schema_1_checked_recovered_migrated,
    test_wal_left_by_a_crash_is_read_not_changed,
    test_unreadable_file,
])
