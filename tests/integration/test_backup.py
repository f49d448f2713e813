"""sessionctl backup copies the database of the daemon it talks to (issue
15): the path comes from the daemon (Admin.Status "database"); a local
configuration that names another file is refused with a clear error and
nothing is written; a daemon in memory has nothing to copy; a socket named
with -s where nothing listens is an error, not a copy of whatever the local
configuration names.
"""

import os
import sqlite3

from harness import Daemon, format_conf, run_tests

S = "io.sessiond.Session."
A = "io.sessiond.Admin."


def count(path):
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return db.execute("SELECT count(*) FROM sessions").fetchone()[0]
    finally:
        db.close()


def test_status_names_the_database():
    with Daemon() as d:
        assert d.call(A + "Status")["status"]["database"] == os.path.realpath(d.database)
        d.stop()
    with Daemon({"features.persistence": False}) as d:
        assert d.call(A + "Status")["status"]["database"] is None
        d.stop()


def test_backup_of_the_daemon_on_the_socket():
    with Daemon() as a, Daemon() as b:
        for i in range(3):
            a.call(S + "Create", {"user_id": "a%d" % i})
        b.call(S + "Create", {"user_id": "b"})
        out = os.path.join(a.tmp, "copy.db")
        # a's socket, b's configuration: refused, nothing written
        p = a.sessionctl("-s", a.socket, "-c", b.config, "backup", out)
        assert p.returncode == 1, (p.stdout, p.stderr)
        assert a.database in p.stderr and b.database in p.stderr, p.stderr
        assert "nothing was copied" in p.stderr, p.stderr
        assert not os.path.exists(out)
        # a's socket and configuration: a's sessions
        p = a.sessionctl("backup", out, check=0)
        assert count(out) == 3
        assert a.database in p.stdout or os.path.realpath(a.database) in p.stdout, p.stdout
        # the socket alone decides when the configuration names no file
        conf = os.path.join(a.tmp, "memory.conf")
        with open(conf, "w") as f:
            f.write(format_conf({"features.persistence": False, "daemon.env_file": '""'}))
        p = a.sessionctl("-s", b.socket, "-c", conf, "--json", "backup", "--force", out, check=0)
        assert count(out) == 1
        a.stop()
        b.stop()


def test_backup_refuses_without_a_daemon_to_ask():
    with Daemon({"features.persistence": False}) as d:
        out = os.path.join(d.tmp, "copy.db")
        p = d.sessionctl("backup", out, check=1)
        assert "in memory" in p.stderr, p.stderr
        assert not os.path.exists(out)
        sock = d.socket
        d.stop()
        # -s names a daemon that is not there: exit 5, no copy of the
        # configured file
        p = d.sessionctl("-s", sock, "backup", out, check=5)
        assert not os.path.exists(out)


if __name__ == "__main__":
    run_tests([test_status_names_the_database, test_backup_of_the_daemon_on_the_socket,
               test_backup_refuses_without_a_daemon_to_ask])
