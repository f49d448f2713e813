"""Files the audit (issue 16) found open to other local users: the daemon's
state files (key, database, -wal, -shm and their folder) and the files the
tools write (sessionctl backup, db recover, config --generate-template).

The daemon refuses to start on a state file another user owns or could
write (or read, for the key), or in a folder others can write without the
sticky bit; a first start on an empty folder still works. These tests make
files owned by another uid, so they need root, as CI has.
"""

import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import threading
import time

from harness import Daemon, Skip, run_tests, wait_for

S = "io.sessiond.Session."
A = "io.sessiond.Admin."
OTHER = 65534  # nobody


def need_root():
    if os.geteuid() != 0:
        raise Skip("needs root to make files owned by another uid")


class StateDaemon(Daemon):
    """A daemon whose database and key live in tmp/state (the folder under
    test), while the socket, configuration and log stay in tmp."""

    def __init__(self, tmp, **kw):
        self.state = os.path.join(tmp, "state")
        super().__init__({"daemon.database_path": os.path.join(self.state, "sessions.db")},
                         tmpdir=tmp, **kw)
        self.database = os.path.join(self.state, "sessions.db")
        self.key = os.path.join(self.state, "sessiond.key")


def fresh_state(tmp):
    """A daemon started once in tmp/state, stopped: a database and a key."""
    with StateDaemon(tmp) as d:
        d.call(S + "Create", {"user_id": "alice"})
        d.stop()
    return d


def refused(tmp):
    """Starts a daemon on tmp/state; asserts that it refuses; its log."""
    d = StateDaemon(tmp, wait=False)
    try:
        rc = d.proc.wait(timeout=10)
        d.log.close()
        log = d.read_log()
        assert rc != 0, "sessiond started on untrusted state:\n" + log
        return log
    finally:
        d.cleanup()


def snapshot(folder):
    out = {}
    for name in sorted(os.listdir(folder)):
        st = os.lstat(os.path.join(folder, name))
        out[name] = (st.st_uid, st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def scenario(make):
    """A temporary folder with fresh state, changed by make(d); yields the
    refusal's log and checks that the refusal changed nothing."""
    need_root()
    tmp = tempfile.mkdtemp(prefix="sessiond-test-")
    try:
        d = fresh_state(tmp)
        make(d)
        before = snapshot(d.state)
        log = refused(tmp)
        assert snapshot(d.state) == before, "a refused start changed the state folder"
        assert "Refusing to start" in log, log
        return log
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_audit_case_planted_files():
    """Another user's folder with an empty database (0666) and a key of 32
    zero bytes, both theirs: refused, nothing written into them."""
    need_root()
    tmp = tempfile.mkdtemp(prefix="sessiond-test-")
    try:
        state = os.path.join(tmp, "state")
        os.mkdir(state, 0o755)
        os.chown(state, OTHER, OTHER)
        db = os.path.join(state, "sessions.db")
        key = os.path.join(state, "sessiond.key")
        with open(db, "wb"):
            pass
        os.chmod(db, 0o666)
        with open(key, "wb") as f:
            f.write(b"\0" * 32)
        os.chmod(key, 0o600)
        for p in (db, key):
            os.chown(p, OTHER, OTHER)
        log = refused(tmp)
        assert "State folder %s is owned by uid %d" % (state, OTHER) in log, log
        assert sorted(os.listdir(state)) == ["sessiond.key", "sessions.db"]
        assert os.path.getsize(db) == 0
        # The folder handed back to us, the planted files stay theirs:
        # refused for the key first, then for the database.
        os.chown(state, 0, 0)
        log = refused(tmp)
        assert "Key file %s is owned by uid %d" % (key, OTHER) in log, log
        os.unlink(key)
        log = refused(tmp)
        assert "Database %s is owned by uid %d" % (db, OTHER) in log, log
        assert sorted(os.listdir(state)) == ["sessions.db"] and os.path.getsize(db) == 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tmp_state(log):
    """The state folder a refusal's log names."""
    i = log.index("/state/")
    return log[log.rindex(" ", 0, i) + 1:i + len("/state")]


def test_files_owned_by_another_user():
    for name, what in [("sessiond.key", "Key file"), ("sessions.db", "Database"),
                       ("sessions.db-wal", "Database WAL file"),
                       ("sessions.db-shm", "Database shared-memory file")]:
        def make(d, name=name):
            path = os.path.join(d.state, name)
            if not os.path.exists(path):
                with open(path, "wb"):
                    pass
                os.chmod(path, 0o600)
            os.chown(path, OTHER, OTHER)
        log = scenario(make)
        path = os.path.join(tmp_state(log), name)
        assert "%s %s is owned by uid %d, not by uid %d" % (what, path, OTHER, os.geteuid()) in log, (name, log)


def test_files_others_may_write_or_read():
    cases = [("sessiond.key", 0o640, "accessible"), ("sessiond.key", 0o604, "accessible"),
             ("sessions.db", 0o666, "writable"), ("sessions.db", 0o620, "writable"),
             ("sessions.db-wal", 0o606, "writable"), ("sessions.db-shm", 0o660, "writable")]
    for name, mode, word in cases:
        def make(d, name=name, mode=mode):
            path = os.path.join(d.state, name)
            if not os.path.exists(path):
                with open(path, "wb"):
                    pass
            os.chmod(path, mode)
        log = scenario(make)
        assert name in log and "is %s by group or others (mode %04o)" % (word, mode) in log, (name, log)


def test_symlinked_state_file():
    def make(d):
        target = os.path.join(d.tmp, "elsewhere.key")
        os.rename(d.key, target)
        os.symlink(target, d.key)
    log = scenario(make)
    assert "is a symbolic link" in log, log


def test_folder_others_may_write():
    for mode in (0o777, 0o770, 0o702):
        log = scenario(lambda d, mode=mode: os.chmod(d.state, mode))
        assert "is writable by group or others (mode %04o) without the sticky bit" % mode in log, log


def test_sticky_folder_and_readable_database_are_fine():
    """A sticky folder writable by all (like /tmp), a database others may
    read but not write: the daemon starts, and the sessions are there."""
    need_root()
    tmp = tempfile.mkdtemp(prefix="sessiond-test-")
    try:
        d = fresh_state(tmp)
        os.chmod(d.state, 0o1777)
        os.chmod(d.database, 0o644)
        with StateDaemon(tmp) as d2:
            assert len(d2.call(A + "ListSessions")["sessions"]) == 1
            d2.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_key_file_elsewhere():
    """daemon.key_file (issue 11) in a folder of its own: the same rules for
    the key and for that folder as for the state folder."""
    tmp = tempfile.mkdtemp(prefix="sessiond-test-")
    try:
        keys = os.path.join(tmp, "keys")
        os.mkdir(keys, 0o755)
        key = os.path.join(keys, "fleet.key")
        settings = {"daemon.database_path": os.path.join(tmp, "state", "sessions.db"), "daemon.key_file": key}
        with Daemon(settings, tmpdir=tmp) as d:
            d.call(S + "Create", {"user_id": "alice"})
            d.stop()
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
        for change, message in [(lambda: os.chmod(keys, 0o777), "State folder %s is writable by group or others" % keys),
                                (lambda: os.chmod(key, 0o640), "Key file %s is accessible by group or others" % key)]:
            change()
            d = Daemon(settings, tmpdir=tmp, wait=False)
            try:
                assert d.proc.wait(timeout=10) == 1
                d.log.close()
                assert message in d.read_log(), d.read_log()
            finally:
                d.cleanup()
            os.chmod(keys, 0o755)
            os.chmod(key, 0o600)
        with Daemon(settings, tmpdir=tmp) as d:
            assert len(d.call(A + "ListSessions")["sessions"]) == 1
            d.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_first_start_on_an_empty_folder():
    """No folder at all, then an empty one of ours (StateDirectory=): the
    daemon makes a 0700 folder, a 0600 key and a database others cannot
    write, and starts again on them."""
    for precreate in (False, True):
        tmp = tempfile.mkdtemp(prefix="sessiond-test-")
        try:
            if precreate:
                os.mkdir(os.path.join(tmp, "state"), 0o755)
            with StateDaemon(tmp) as d:
                d.call(S + "Create", {"user_id": "alice"})
                d.stop()
                st = os.stat(d.state)
                assert stat.S_IMODE(st.st_mode) == (0o755 if precreate else 0o700), oct(st.st_mode)
                assert stat.S_IMODE(os.stat(d.key).st_mode) == 0o600
                assert os.stat(d.database).st_mode & 0o022 == 0
                d.start()
                assert len(d.call(A + "ListSessions")["sessions"]) == 1
                d.stop()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# ---- the files the tools write ----

def tool_writes(d, folder, name):
    """Every way sessionctl writes a file, each into folder/name-KIND:
    [(kind, CompletedProcess, path)]."""
    out = []
    for kind, args in [("backup", ["backup"]), ("recover", ["db", "recover"]),
                       ("template", ["config", "--generate-template", "--output"])]:
        path = os.path.join(folder, "%s-%s" % (name, kind))
        out.append((kind, d.sessionctl(*(args + [path])), path))
    return out


def test_tools_refuse_folders_others_may_write():
    """The audit's race needs a folder another user can write: the tools
    refuse one (no sticky bit, or another user's), and leave nothing in it."""
    need_root()
    with Daemon() as d:
        d.call(S + "Create", {"user_id": "alice"})
        for mode, owner, why in [(0o777, 0, "is writable by group or others without the sticky bit"),
                                 (0o770, 0, "is writable by group or others without the sticky bit"),
                                 (0o755, OTHER, "is owned by another user")]:
            folder = tempfile.mkdtemp(prefix="sessiond-out-")
            try:
                os.chmod(folder, mode)
                os.chown(folder, owner, owner)
                for kind, p, path in tool_writes(d, folder, "out"):
                    assert p.returncode == 1, (kind, mode, p.returncode, p.stdout, p.stderr)
                    assert "refusing to write %s" % path in p.stderr, (kind, p.stderr)
                    assert kind == "template" or why in p.stderr, (kind, p.stderr)
                assert os.listdir(folder) == [], (mode, os.listdir(folder))
            finally:
                shutil.rmtree(folder, ignore_errors=True)


def test_tools_write_private_files_past_planted_names():
    """In a sticky folder all may write (like /tmp), another user plants the
    old temporary names, as symbolic links to a file of theirs and as their
    own files: the tools write a new file of root's, 0600 (the template
    0644), and leave the planted ones alone."""
    need_root()
    with Daemon() as d:
        d.call(S + "Create", {"user_id": "alice"})
        folder = tempfile.mkdtemp(prefix="sessiond-out-")
        try:
            os.chmod(folder, 0o1777)
            bait = os.path.join(folder, "theirs")
            with open(bait, "w") as f:
                f.write("theirs")
            os.chown(bait, OTHER, OTHER)
            for kind in ("backup", "recover", "template"):
                target = os.path.join(folder, "out-" + kind)
                os.symlink(bait, target + ".tmp")
                os.lchown(target + ".tmp", OTHER, OTHER)
            for kind, p, path in tool_writes(d, folder, "out"):
                assert p.returncode == 0, (kind, p.stdout, p.stderr)
                st = os.lstat(path)
                assert stat.S_ISREG(st.st_mode) and st.st_uid == 0, (kind, st)
                assert stat.S_IMODE(st.st_mode) == (0o644 if kind == "template" else 0o600), (kind, oct(st.st_mode))
                assert os.path.islink(path + ".tmp"), kind
            with open(bait) as f:
                assert f.read() == "theirs"
            conn = sqlite3.connect(os.path.join(folder, "out-backup"))
            assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1
            conn.close()
            # Nothing else was left behind: no temporary file of ours.
            left = sorted(n for n in os.listdir(folder) if n.startswith("."))
            assert left == [], left
            # Without --force nothing is replaced; with it, the file is.
            for kind, p, path in tool_writes(d, folder, "out")[:2]:
                assert p.returncode == 1 and "exists" in p.stderr, (kind, p.stderr)
            p = d.sessionctl("backup", "--force", os.path.join(folder, "out-backup"), check=0)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


TESTS = [
    test_the_audit_case_planted_files,
    test_files_owned_by_another_user,
    test_files_others_may_write_or_read,
    test_symlinked_state_file,
    test_folder_others_may_write,
    test_sticky_folder_and_readable_database_are_fine,
    test_first_start_on_an_empty_folder,
    test_key_file_elsewhere,
    test_tools_refuse_folders_others_may_write,
    test_tools_write_private_files_past_planted_names,
]

if __name__ == "__main__":
    run_tests(TESTS)
