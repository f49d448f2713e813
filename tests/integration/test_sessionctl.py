"""sessionctl's daemon verbs against the real sessiond.

Each verb is run as a subprocess against a daemon in a temporary folder:
the table for people (header, rows, "N ... listed." footer, --no-legend),
the --json output, and the exit codes: 0, 1 for a Varlink error, 2 for
usage errors, 3/4 for health, 5 with no daemon. Sessions are made with the
harness's own Varlink connection, so that sessionctl is only ever the thing
under test; no output may ever contain a session token.

Verbs whose admin methods land later (Health, Metrics, Alerts, Events,
Audit, Analytics, Cleanup) are checked in full when the daemon answers
them; while it answers MethodNotFound those tests report a skip.
"""

import grp
import json
import os
import re
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time

from harness import (SESSIONCTL, TIMEOUT, Connection, Daemon, Skip, VarlinkError,
                     run_tests, wait_for)

ADMIN = "io.sessiond.Admin."
SESSION = "io.sessiond.Session."


def create(d, user, platform=None):
    """Creates a session; returns (token, id)."""
    params = {"user_id": user}
    if platform:
        params["platform_id"] = platform
    r = d.call(SESSION + "Create", params)
    return r["token"], r["session"]["id"]


def ctl(d, *args, check=None):
    p = d.sessionctl(*args, check=check)
    return p


def run(args, env=None, check=None):
    """sessionctl with exactly these arguments (no -s/-c added)."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("SESSION_") and not k.startswith("SESSIOND_")}
    if env:
        base.update(env)
    p = subprocess.run([SESSIONCTL] + list(args), capture_output=True, text=True,
                       timeout=TIMEOUT * 3, env=base)
    if check is not None and p.returncode != check:
        raise AssertionError("sessionctl %s: exit %d, expected %d\nstdout: %s\nstderr: %s"
                             % (" ".join(args), p.returncode, check, p.stdout, p.stderr))
    return p


def idarg(sid):
    """A session id as an argument: ids are base64url and may start with
    '-' (fine, verbs have no short options) or, rarely, "--" (then it must
    follow the "--" that ends the options)."""
    return ["--", sid] if sid.startswith("--") else [sid]


def table(stdout):
    """Splits a table into (header columns, rows of columns, footer)."""
    lines = stdout.rstrip("\n").split("\n")
    assert len(lines) >= 3, stdout
    assert lines[-2] == "", "no blank line before the footer:\n" + stdout
    header = lines[0].split()
    rows = [re.split(r"\s{2,}", l.strip()) for l in lines[1:-2]]
    return header, rows, lines[-1]


def require_method(d, method, params=None):
    """Skips the test while the daemon does not offer method yet."""
    try:
        d.call(method, params or {})
    except VarlinkError as e:
        if e.error == "org.varlink.service.MethodNotFound":
            raise Skip(method + " not offered by the daemon yet")


def no_token(tokens, *outputs):
    for out in outputs:
        for t in tokens:
            assert t not in out, "a session token was printed:\n" + out


# ---- no daemon, usage ------------------------------------------------------------------

def test_no_daemon():
    with tempfile.TemporaryDirectory() as tmp:
        missing = os.path.join(tmp, "missing.sock")
        p = run(["-s", missing, "status"], check=5)
        assert "not running" in p.stderr, p.stderr
        # a socket file nobody listens on (a daemon that died)
        stale = os.path.join(tmp, "stale.sock")
        s = socket.socket(socket.AF_UNIX)
        s.bind(stale)
        s.close()
        run(["-s", stale, "list"], check=5)
        # the same through $SESSIOND_SOCKET and through the configuration
        run(["status"], env={"SESSIOND_SOCKET": stale}, check=5)
        conf = os.path.join(tmp, "c.conf")
        with open(conf, "w") as f:
            f.write('daemon: { socket_path = "%s"; env_file = ""; };\n' % missing)
        p = run(["-c", conf, "health"], check=5)
        assert missing in p.stderr, p.stderr


def test_usage():
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "none.sock")
        run([], check=2)
        p = run(["--help"], check=0)
        for word in ("status", "health", "backup", "Exit status", "not running"):
            assert word in p.stdout, p.stdout
        for args in (["frobnicate"], ["list", "--bogus"], ["show"], ["show", "a", "b"],
                     ["terminate"], ["terminate-user"], ["cleanup", "weird"],
                     ["list", "--limit", "0"], ["list", "--limit", "x"],
                     ["list", "--prometheus"], ["audit", "--since", "yesterday-ish"],
                     ["call"], ["call", "NoInterface"], ["call", "a.b.C", "[1]"],
                     ["call", "a.b.C", "{nope"], ["call", "--more", "--oneway", "a.b.C"],
                     ["backup"], ["--bogus", "status"], ["list", "--user"], ["list", "--json=yes"],
                     ["list", "--us", "x"], ["show", "--", "a", "b"]):
            p = run(["-s", sock] + args)
            assert p.returncode == 2, "%s: exit %d\n%s" % (args, p.returncode, p.stderr)
            assert p.stderr, args


# ---- sessions ----------------------------------------------------------------------------

def test_list_show_terminate():
    with Daemon() as d:
        ta1, a1 = create(d, "alice", "web")
        ta2, a2 = create(d, "alice")
        tb, b1 = create(d, "bob", "mobile")
        tokens = [ta1, ta2, tb]

        p = ctl(d, "list", check=0)
        header, rows, footer = table(p.stdout)
        assert header == ["ID", "USER", "PLATFORM", "STATE", "CREATED", "LAST-ACTIVE", "EXPIRES"], header
        assert footer == "3 sessions listed.", footer
        ids = {r[0]: r for r in rows}
        assert set(ids) == {a1, a2, b1}, rows
        assert ids[a1][1:4] == ["alice", "web", "active"], ids[a1]
        assert ids[a2][2] == "-", ids[a2]
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", ids[b1][4]), ids[b1]

        p2 = ctl(d, "--no-legend", "list", check=0)
        assert len(p2.stdout.strip().split("\n")) == 3, p2.stdout
        # No header line, no footer (a session id may itself contain "ID").
        lines = p2.stdout.strip().split("\n")
        assert not any(l.split()[:2] == ["ID", "USER"] for l in lines), p2.stdout
        assert "listed" not in p2.stdout, p2.stdout
        # options after the verb work too
        assert ctl(d, "list", "--no-legend", check=0).stdout == p2.stdout

        p3 = ctl(d, "list", "--user", "alice", check=0)
        assert table(p3.stdout)[2] == "2 sessions listed.", p3.stdout
        p4 = ctl(d, "list", "--user", "nobody-here", check=0)
        assert p4.stdout.strip().endswith("0 sessions listed."), p4.stdout

        j = json.loads(ctl(d, "--json", "list", check=0).stdout)
        assert {s["id"] for s in j["sessions"]} == {a1, a2, b1}, j
        assert all(isinstance(s["created_at"], int) for s in j["sessions"]), j

        p5 = ctl(d, "show", *idarg(a1), check=0)
        lines = dict(l.split(": ", 1) for l in p5.stdout.strip().split("\n"))
        assert lines["id"] == a1 and lines["user_id"] == "alice", p5.stdout
        assert lines["platform_id"] == "web" and lines["state"] == "active", p5.stdout
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(in ", lines["expires_at"]), p5.stdout
        js = json.loads(ctl(d, "--json", "show", *idarg(a1), check=0).stdout)
        assert js["id"] == a1 and isinstance(js["expires_at"], int), js
        p6 = ctl(d, "show", "no-such-id", check=1)
        assert "no-such-id" in p6.stderr, p6.stderr

        ctl(d, "terminate", *idarg(a1), check=0)
        with d.connect() as c:
            err, params = c.call_error(SESSION + "Validate", {"token": ta1})
        assert err == SESSION + "Expired" and params["reason"] == "terminated", (err, params)
        assert table(ctl(d, "list", check=0).stdout)[2] == "2 sessions listed."
        p7 = ctl(d, "list", "--all", check=0)
        rows = {r[0]: r for r in table(p7.stdout)[1]}
        assert a1 in rows and rows[a1][3] == "ended", p7.stdout
        ended = dict(l.split(": ", 1) for l in ctl(d, "show", *idarg(a1), check=0).stdout.strip().split("\n"))
        assert ended["end_reason"] == "terminated" and ended["state"] == "ended", ended
        unknown = "A" * len(a1)  # well-formed, but nobody's id
        p8 = ctl(d, "terminate", *idarg(unknown), check=1)
        assert "no session with id '%s'" % unknown in p8.stderr, p8.stderr
        p8 = ctl(d, "terminate", "no-such-id", check=1)
        assert "'no-such-id' is not a session id" in p8.stderr, p8.stderr

        p9 = ctl(d, "terminate-user", "alice", check=0)
        assert p9.stdout.strip() == "Terminated 1 session of user alice.", p9.stdout
        j = json.loads(ctl(d, "--json", "terminate-user", "bob", check=0).stdout)
        assert j == {"count": 1}, j
        assert ctl(d, "--no-legend", "list", check=0).stdout == ""

        outs = [ctl(d, *a, check=0).stdout for a in
                (["list", "--all"], ["--json", "list", "--all"], ["show"] + idarg(a2), ["--json", "show"] + idarg(b1))]
        no_token(tokens, p.stdout, p5.stdout, *outs)


def test_status_and_call():
    with Daemon() as d:
        p = ctl(d, "status", check=0)
        assert re.search(r"^version: \S+", p.stdout, re.M), p.stdout
        j = json.loads(ctl(d, "--json", "status", check=0).stdout)
        assert isinstance(j["status"], dict) and j["status"]["pid"] == d.proc.pid, j

        j = json.loads(ctl(d, "call", "org.varlink.service.GetInfo", check=0).stdout)
        assert j["product"] == "sessiond" and "io.sessiond.Admin" in j["interfaces"], j
        p = ctl(d, "call", ADMIN + "ListSessions", '{"user_id": "x"}', "--json", check=0)
        assert json.loads(p.stdout) == {"sessions": []} and p.stdout.count("\n") == 1, p.stdout

        # a Varlink error: name and parameters on stderr, exit 1
        p = ctl(d, "call", SESSION + "Validate", '{"token": "not-a-token"}', check=1)
        assert SESSION in p.stderr and p.stdout == "", p.stderr
        p = ctl(d, "call", ADMIN + "Terminate", "{}", check=1)
        assert "org.varlink.service.InvalidParameter" in p.stderr and "id" in p.stderr, p.stderr
        p = ctl(d, "call", "io.sessiond.Nothing.Here", check=1)
        assert "org.varlink.service.InterfaceNotFound" in p.stderr, p.stderr

        # oneway: nothing printed, the daemon goes on
        token, sid = create(d, "carol")
        ctl(d, "call", "--oneway", SESSION + "Heartbeat", json.dumps({"token": token}), check=0)
        assert ctl(d, "--no-legend", "list", check=0).stdout.startswith(sid)


def test_call_more_stream():
    """call --more follows a stream (Watch) until it ends."""
    with Daemon() as d:
        token, sid = create(d, "dave")
        proc = subprocess.Popen([SESSIONCTL, "-s", d.socket, "call", "--more", SESSION + "Watch",
                                 json.dumps({"token": token})],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # the first reply (the session's state) tells the stream is open
            first = json.loads(proc.stdout.readline())
            assert first["event"] == "state" and first["session"]["id"] == sid, first
            d.call(SESSION + "Destroy", {"token": token})
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, (proc.returncode, err)
        events = [json.loads(l) for l in out.strip().split("\n") if l]
        assert events[-1]["event"] == "ended", (out, err)
        assert all(e["session"]["id"] == sid for e in events), out
        assert token not in out


def test_permission_denied():
    if os.geteuid() != 0:
        raise Skip("needs root to run sessionctl as nobody")
    with Daemon() as d:
        os.chmod(d.tmp, 0o711)
        os.chown(d.socket, -1, grp.getgrnam("nogroup").gr_gid)
        p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            SESSIONCTL, "-s", d.socket, "list"],
                           capture_output=True, text=True, timeout=TIMEOUT, cwd="/")
        if p.returncode == 127 or "error while loading shared libraries" in p.stderr:
            raise Skip("the build folder is not readable by nobody")
        assert p.returncode == 1, (p.returncode, p.stderr)
        assert "permission denied: need root or membership in group sessiond-admin" in p.stderr, p.stderr


# ---- reload ---------------------------------------------------------------------------------

def test_reload():
    with Daemon() as d:
        d.write_config({"timeout.warning_threshold": 120})
        ctl(d, "reload", check=0)
        j = d.call(ADMIN + "GetConfig")
        assert j["config"]["timeout"]["warning_threshold"] == 120, j

        # two errors at once: both printed, exit 1, old configuration kept
        d.write_config({"cleanup.batch_size": 0, "monitoring.metrics_buffer_size": 0})
        p = ctl(d, "reload", check=1)
        assert "Cleanup batch size must be positive" in p.stderr, p.stderr
        assert "Metrics buffer size must be positive" in p.stderr, p.stderr
        assert "keeps the previous" in p.stderr, p.stderr
        assert p.stdout == ""
        assert d.proc.poll() is None
        ctl(d, "status", check=0)
        assert d.call(ADMIN + "GetConfig")["config"]["cleanup"]["batch_size"] > 0

        # a file that does not parse at all is refused the same way
        with open(d.config, "a") as f:
            f.write("this is not libconfig\n")
        p = ctl(d, "reload", check=1)
        assert p.stderr.count("\n") >= 2, p.stderr
        create(d, "still-serving")


# ---- backup -----------------------------------------------------------------------------------

def test_backup():
    with Daemon() as d:
        tokens = [create(d, "u%d" % i)[0] for i in range(5)]
        _, ended = create(d, "gone")
        ctl(d, "terminate", *idarg(ended), check=0)
        out = os.path.join(d.tmp, "backup.db")

        p = ctl(d, "backup", out, check=0)
        assert "6 sessions" in p.stdout and "5 not ended" in p.stdout, p.stdout
        assert not os.path.exists(out + ".tmp")
        assert os.stat(out).st_mode & 0o077 == 0, oct(os.stat(out).st_mode)
        db = sqlite3.connect("file:%s?mode=ro" % out, uri=True)
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 6
            assert db.execute("SELECT count(*) FROM sessions WHERE ended_at IS NULL").fetchone()[0] == 5
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        finally:
            db.close()

        # never overwrites without --force; the file stays as it was
        before = open(out, "rb").read()
        create(d, "later")
        p = ctl(d, "backup", out, check=1)
        assert "--force" in p.stderr, p.stderr
        assert open(out, "rb").read() == before
        j = json.loads(ctl(d, "--json", "backup", "--force", out, check=0).stdout)
        assert j["sessions"] == 7 and j["live"] == 6 and j["file"] == out, j
        no_token(tokens, p.stdout, p.stderr)

        # a folder that does not exist: exit 1, nothing left behind
        p = ctl(d, "backup", os.path.join(d.tmp, "no", "such", "dir.db"), check=1)
        assert p.stderr, p.stderr

    # no database at the configured path
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "c.conf")
        with open(conf, "w") as f:
            f.write('daemon: { database_path = "%s/none.db"; env_file = ""; };\n' % tmp)
        p = run(["-c", conf, "backup", os.path.join(tmp, "x.db")], check=1)
        assert "none.db" in p.stderr, p.stderr
        assert not os.path.exists(os.path.join(tmp, "x.db"))
        # a daemon that keeps its sessions in memory has no database to copy
        with open(conf, "w") as f:
            f.write('features: { persistence = false; };\ndaemon: { env_file = ""; };\n')
        p = run(["-c", conf, "backup", os.path.join(tmp, "x.db")], check=1)
        assert "features.persistence" in p.stderr, p.stderr
        assert not os.path.exists(os.path.join(tmp, "x.db"))


# ---- observability verbs (issue 4 methods) ----------------------------------------------------

def test_health():
    with Daemon() as d:
        require_method(d, ADMIN + "Health")
        p = ctl(d, "health")
        j = json.loads(ctl(d, "--json", "health").stdout)
        code = {"healthy": 0, "degraded": 3, "unhealthy": 4}[j["status"]]
        assert p.returncode == code, (p.returncode, j)
        assert p.stdout.startswith("Health: " + j["status"] + "\n"), p.stdout
        for name in j["components"]:
            assert re.search(r"^  %s: " % re.escape(name), p.stdout, re.M), p.stdout


PROM_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
PROM_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')


def parse_prometheus(text):
    """A small parser of the text exposition format 0.0.4: returns
    {name: {"help", "type", "samples": [(labels, value)]}}; asserts the rules
    node_exporter's textfile collector relies on."""
    families = {}
    current = None
    for line in text.split("\n"):
        if not line:
            continue
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, "second HELP for " + name
            families[name] = {"help": help_text, "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            assert name == current and families[name]["type"] is None, line
            assert typ in ("counter", "gauge", "untyped"), line
            families[name]["type"] = typ
        elif line.startswith("#"):
            continue
        else:
            m = PROM_SAMPLE.match(line)
            assert m, "not a sample line: %r" % line
            name, labels_text, value = m.group(1), m.group(3), m.group(4)
            assert name == current, "sample %s outside its family %s" % (name, current)
            labels = {}
            if labels_text:
                pos = 0
                while pos < len(labels_text):
                    lm = PROM_LABEL.match(labels_text, pos)
                    assert lm, "bad labels: %r" % labels_text
                    labels[lm.group(1)] = lm.group(2).replace('\\"', '"').replace("\\n", "\n") \
                        .replace("\\\\", "\\")
                    pos = lm.end()
            float(value)
            families[name]["samples"].append((labels, value))
    return families


def test_metrics():
    with Daemon() as d:
        require_method(d, ADMIN + "Metrics")
        create(d, "m1")
        j = json.loads(ctl(d, "--json", "metrics", check=0).stdout)
        assert isinstance(j["metrics"], list) and isinstance(j["history"], list), j
        p = ctl(d, "metrics", check=0)
        header, rows, footer = table(p.stdout)
        assert header == ["NAME", "LABELS", "TYPE", "VALUE"], header
        assert footer == "%d metric%s listed." % (len(j["metrics"]), "" if len(j["metrics"]) == 1 else "s")

        fams = parse_prometheus(ctl(d, "metrics", "--prometheus", check=0).stdout)
        names = {m["name"] for m in j["metrics"]}
        assert set(fams) == {"sessiond_" + n for n in names}, (fams.keys(), names)
        for m in j["metrics"]:
            f = fams["sessiond_" + m["name"]]
            assert f["type"] == m["type"], (f, m)
            assert (m.get("labels") or {}) in [s[0] for s in f["samples"]], (f, m)
        assert sum(len(f["samples"]) for f in fams.values()) == len(j["metrics"])


def test_prometheus_parser_rejects():
    """The parser above must be able to fail."""
    for bad in ("sessiond_x 1\n",                                   # no family
                "# HELP a h\n# TYPE a gauge\na{l=\"x} 1\n",         # open quote
                "# HELP a h\n# TYPE a gauge\n# HELP a h\n",         # HELP twice
                "# HELP a h\n# TYPE a gauge\na one\n"):             # bad value
        try:
            parse_prometheus(bad)
        except (AssertionError, ValueError):
            continue
        raise AssertionError("accepted: %r" % bad)
    fams = parse_prometheus('# HELP a h\n# TYPE a counter\na{x="q\\"\\\\\\n"} 2\n')
    assert fams["a"]["samples"] == [({"x": 'q"\\\n'}, "2")], fams


def test_alerts():
    with Daemon() as d:
        require_method(d, ADMIN + "Alerts")
        j = json.loads(ctl(d, "--json", "alerts", check=0).stdout)
        p = ctl(d, "alerts", check=0)
        lines = p.stdout.rstrip("\n").split("\n")
        assert lines[0].split() == ["NAME", "STATE", "VALUE", "THRESHOLD", "RAISED", "RESOLVED", "MESSAGE"]
        n = len(j["alerts"])
        assert lines[-1] == "%d alert%s listed." % (n, "" if n == 1 else "s"), p.stdout


def test_events():
    with Daemon() as d:
        require_method(d, ADMIN + "Events")
        create(d, "e1")
        j = json.loads(ctl(d, "--json", "events", check=0).stdout)
        assert isinstance(j["events"], list), j
        p = ctl(d, "events", check=0)
        assert len([l for l in p.stdout.split("\n") if l]) == len(j["events"]), p.stdout

        proc = subprocess.Popen([SESSIONCTL, "-s", d.socket, "--json", "events", "--follow"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for _ in j["events"]:
                json.loads(proc.stdout.readline())
            token, sid = create(d, "e2")
            deadline = time.monotonic() + TIMEOUT
            seen = False
            while not seen and time.monotonic() < deadline:
                line = proc.stdout.readline()
                assert line, proc.stderr.read()
                seen = sid in line
                assert token not in line
            assert seen, "the new session's event did not arrive"
        finally:
            proc.kill()
            proc.wait()


def test_audit():
    with Daemon() as d:
        require_method(d, ADMIN + "Audit")
        token, sid = create(d, "auditee")
        j = json.loads(ctl(d, "--json", "audit", "--user", "auditee", check=0).stdout)
        assert j["entries"] and all(e["user_id"] == "auditee" for e in j["entries"]), j
        p = ctl(d, "audit", "--user", "auditee", "--since", "1h", "--limit", "1", check=0)
        header, rows, footer = table(p.stdout)
        assert header == ["TIME", "KIND", "USER", "SESSION", "DETAIL"], header
        assert footer == "1 entry listed." and rows[0][2] == "auditee", p.stdout
        future = str(int(time.time()) + 3600)
        j = json.loads(ctl(d, "--json", "audit", "--since", future, check=0).stdout)
        assert j["entries"] == [], j
        no_token([token], p.stdout)


def test_analytics():
    # the testing profile turns analytics off (DESIGN 2.4)
    with Daemon({"features.analytics": True}) as d:
        require_method(d, ADMIN + "Analytics")
        j = json.loads(ctl(d, "--json", "analytics", check=0).stdout)
        assert isinstance(j["analytics"], dict), j
        p = ctl(d, "analytics", check=0)
        for key in j["analytics"]:
            assert re.search(r"^%s:" % re.escape(key), p.stdout, re.M), p.stdout


def test_cleanup():
    with Daemon() as d:
        require_method(d, ADMIN + "Cleanup", {"kind": "regular"})
        p = ctl(d, "cleanup", check=0)
        assert re.match(r"Regular cleanup: \d+ sessions? ended, \d+ rows? purged\.$", p.stdout.strip()), p.stdout
        for kind in ("batch", "deep"):
            j = json.loads(ctl(d, "--json", "cleanup", kind, check=0).stdout)
            assert isinstance(j["ended"], int) and isinstance(j["purged"], int), j


# ---- rendering of every reply shape, against a scripted daemon -----------------------------
#
# The real daemon cannot be made to answer every shape on demand (an
# unhealthy component, label values with quotes and newlines, a stream that
# ends); this small Varlink server answers the shapes of
# io.sessiond.Admin.varlink with fixed values and records the calls.

class ScriptedDaemon:
    def __init__(self, answers):
        self.tmp = tempfile.mkdtemp(prefix="sessionctl-test-")
        self.socket = os.path.join(self.tmp, "s.sock")
        self.answers = answers  # method -> list of (parameters, error, continues)
        self.calls = []
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.socket)
        self.sock.listen(4)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # shut down
            with conn:
                buf = b""
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    buf += data
                    while b"\0" in buf:
                        raw, buf = buf.split(b"\0", 1)
                        call = json.loads(raw)
                        self.calls.append(call)
                        for params, error, continues in self.answers.get(
                                call["method"],
                                [({"method": call["method"]}, "org.varlink.service.MethodNotFound", False)]):
                            msg = {"parameters": params}
                            if error:
                                msg["error"] = error
                            if continues:
                                msg["continues"] = True
                            conn.sendall(json.dumps(msg).encode() + b"\0")
                            time.sleep(0.01)

    def ctl(self, *args, check=None):
        return run(["-s", self.socket] + list(args), check=check)

    def close(self):
        # shutdown() wakes the thread blocked in accept(); close() alone would
        # not, and the thread would then accept on whatever socket reuses the
        # descriptor number.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "scripted daemon did not stop"
        self.sock.close()
        subprocess.run(["rm", "-rf", self.tmp])

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def test_rendering_health_codes():
    for status, code in (("healthy", 0), ("degraded", 3), ("unhealthy", 4)):
        answers = {ADMIN + "Health": [({"status": status, "components": {
            "database": {"status": "healthy", "message": "ok", "latency_ms": 0.5},
            "loop": {"status": status, "message": "lag", "lag_ms": 12}}}, None, False)]}
        with ScriptedDaemon(answers) as s:
            p = s.ctl("health", check=code)
            assert p.stdout.startswith("Health: %s\n" % status), p.stdout
            assert "  database: healthy (ok)\n    latency_ms: 0.5\n" in p.stdout, p.stdout
            assert json.loads(s.ctl("--json", "health", check=code).stdout)["status"] == status
    with ScriptedDaemon({ADMIN + "Health": [({"status": "confused", "components": {}}, None, False)]}) as s:
        s.ctl("health", check=1)


def test_rendering_prometheus():
    metrics = [
        {"name": "sessions_active", "help": "Active sessions", "type": "gauge", "value": 3},
        {"name": "sessions_ended_total", "help": "Sessions ended,\nby reason \\ kind", "type": "counter",
         "value": 2, "labels": {"reason": "idle"}},
        {"name": "db_latency_seconds", "help": "Latency", "type": "gauge", "value": 0.000125},
        {"name": "sessions_ended_total", "help": "Sessions ended", "type": "counter", "value": 7,
         "labels": {"reason": 'we"ird\\x\ny'}},
    ]
    answers = {ADMIN + "Metrics": [({"metrics": metrics, "history": []}, None, False)]}
    with ScriptedDaemon(answers) as s:
        text = s.ctl("metrics", "--prometheus", check=0).stdout
        fams = parse_prometheus(text)
        assert list(fams) == ["sessiond_sessions_active", "sessiond_sessions_ended_total",
                              "sessiond_db_latency_seconds"], text
        ended = fams["sessiond_sessions_ended_total"]
        assert ended["type"] == "counter" and ended["help"] == "Sessions ended,\\nby reason \\\\ kind", text
        assert ended["samples"] == [({"reason": "idle"}, "2"), ({"reason": 'we"ird\\x\ny'}, "7")], ended
        assert float(fams["sessiond_db_latency_seconds"]["samples"][0][1]) == 0.000125
        p = s.ctl("metrics", check=0)
        header, rows, footer = table(p.stdout)
        assert footer == "4 metrics listed." and rows[3][1] == 'reason=we"ird\\x\\x0ay', p.stdout


def test_rendering_streams_and_tables():
    now = int(time.time())
    ev = lambda kind, sid: {"time": now, "kind": kind, "session_id": sid}
    s1 = {"id": "s1", "user_id": "evil\x1b[2Juser", "platform_id": None, "created_at": now,
          "last_activity": now, "expires_at": now + 60, "state": "active", "ip": None,
          "user_agent": "ua\x9b31m", "ended_at": None, "end_reason": None, "token": "SECRET"}
    dash = {"id": "-dash-id", "user_id": "x", "created_at": now, "last_activity": now, "expires_at": now,
            "state": "active"}
    answers = {
        ADMIN + "Events": [({"events": [ev("created", "s1")]}, None, True),
                           ({"events": [ev("ended", "s1")]}, None, True),
                           ({"events": [ev("created", "s2")]}, None, False)],
        ADMIN + "Alerts": [({"alerts": [{"name": "creation_rate", "state": "firing", "value": 120.5,
                                         "threshold": 100.0, "message": "too many", "raised_at": now,
                                         "resolved_at": None}]}, None, False)],
        ADMIN + "Audit": [({"entries": [{"id": 1, "time": now, "kind": "created", "user_id": "alice",
                                         "session_id": "s1", "detail": {"platform": "web"}}]}, None, False)],
        ADMIN + "Analytics": [({"analytics": {"created_per_hour": [1, 2], "end_reasons": {"idle": 3},
                                              "by_hour": [{"hour": now, "created": 2}],
                                              "nested": [{"a": {"b": 1}}]}},
                               None, False)],
        ADMIN + "Cleanup": [({"ended": 1, "purged": 4}, None, False)],
        ADMIN + "Terminate": [({}, None, False)],
        ADMIN + "ListSessions": [({"sessions": [dash, s1]}, None, False)],
        ADMIN + "GetSession": [({"session": s1}, None, False)],
    }
    with ScriptedDaemon(answers) as s:
        p = s.ctl("events", "--follow", check=0)
        lines = p.stdout.strip().split("\n")
        assert [l.split()[2] for l in lines] == ["created", "ended", "created"], p.stdout
        assert lines[1].endswith("session_id=s1"), p.stdout
        assert s.calls[-1].get("more") is True
        p = s.ctl("--json", "events", "--follow", check=0)
        assert [json.loads(l)["kind"] for l in p.stdout.strip().split("\n")] == ["created", "ended", "created"]

        p = s.ctl("alerts", check=0)
        header, rows, footer = table(p.stdout)
        assert rows[0][:4] == ["creation_rate", "firing", "120.5", "100"] and rows[0][5] == "-", p.stdout
        assert footer == "1 alert listed."

        p = s.ctl("audit", "--user", "alice", "--since", "1h", "--kind", "created", "--limit", "5", check=0)
        sent = s.calls[-1]["parameters"]
        assert sent["user_id"] == "alice" and sent["kind"] == "created" and sent["limit"] == 5, sent
        assert abs(sent["since"] - (time.time() - 3600)) < 60, sent
        assert table(p.stdout)[1][0][4] == '{"platform":"web"}', p.stdout
        s.ctl("audit", "--since", "2024-05-01 10:00", check=0)
        assert s.calls[-1]["parameters"]["since"] == int(time.mktime((2024, 5, 1, 10, 0, 0, 0, 0, -1)))
        s.ctl("audit", "--since", "1714557600", check=0)
        assert s.calls[-1]["parameters"]["since"] == 1714557600

        p = s.ctl("analytics", check=0)
        local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        assert p.stdout == ("created_per_hour: 1, 2\nend_reasons:\n  idle: 3\n"
                            "by_hour:\n  - hour: %s, created: 2\n"
                            "nested:\n  -\n    a:\n      b: 1\n" % local), p.stdout
        p = s.ctl("cleanup", "deep", check=0)
        assert p.stdout == "Deep cleanup: 1 session ended, 4 rows purged.\n", p.stdout
        assert s.calls[-1]["parameters"] == {"kind": "deep"}

        # control characters from the web never reach the terminal raw;
        # a field named token is never shown
        p = s.ctl("show", "s1", check=0)
        assert s.calls[-1]["parameters"] == {"id": "s1"}, s.calls[-1]
        assert "\x1b" not in p.stdout and "\x9b" not in p.stdout, repr(p.stdout)
        assert "user_id: evil\\x1b[2Juser" in p.stdout and "user_agent: ua\\u009b31m" in p.stdout, p.stdout
        assert "SECRET" not in p.stdout
        assert "\x1b" not in s.ctl("list", check=0).stdout


        # ids may start with a dash; "--" ends the options
        s.ctl("terminate", "--", "--double", check=0)
        assert s.calls[-1]["parameters"] == {"id": "--double"}, s.calls[-1]
        s.ctl("terminate", "--double", check=2)

        # an error reply in the middle of nowhere: MethodNotFound says so
        p = s.ctl("status", check=1)
        assert "org.varlink.service.MethodNotFound" in p.stderr, p.stderr
    with ScriptedDaemon({ADMIN + "GetSession": [({"session": dash}, None, False)]}) as s:
        p = s.ctl("show", "-dash-id", check=0)
        assert p.stdout.startswith("id: -dash-id\n"), p.stdout
        assert s.calls[-1]["parameters"] == {"id": "-dash-id"}, s.calls[-1]

run_tests([test_no_daemon, test_usage, test_list_show_terminate, test_status_and_call,
           test_call_more_stream, test_permission_denied, test_reload, test_backup,
           test_health, test_metrics, test_prometheus_parser_rejects, test_alerts,
           test_events, test_audit, test_analytics, test_cleanup, test_rendering_health_codes,
           test_rendering_prometheus, test_rendering_streams_and_tables])
