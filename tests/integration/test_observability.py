"""Observability of the real daemon: metrics and their history, Prometheus
output, alerts that fire and resolve, health (on demand, periodic, STATUS=),
events and their streams, audit rows of every kind, analytics, Status.

Intervals are one second; each test waits for what the daemon reports.
"""

import json
import os
import re
import socket
import subprocess
import time

import promtext
from harness import SESSIONCTL, TIMEOUT, Daemon, VarlinkError, run_tests, wait_for

S = "io.sessiond.Session."
A = "io.sessiond.Admin."

FAST = {
    "monitoring.metrics_interval": 1,
    "monitoring.health_check_interval": 1,
    "security.check_interval": 1,
    "cleanup.interval": 3600,
    "cleanup.batch_interval": 7200,
    "cleanup.deep_interval": 86400,
    # thresholds out of reach unless a test lowers one
    "monitoring.alerts.creation_rate": 100000.0,
    "monitoring.alerts.failure_rate": 100.0,
    "monitoring.alerts.avg_duration": 10000000.0,
    "monitoring.alerts.concurrent_sessions": 100000.0,
    "monitoring.alerts.suspicious_rate": 100000.0,
}
SHORT = {
    "timeout.idle_timeout": 2,
    "timeout.expiration_grace": 1,
    "timeout.cleanup_grace": 1,
    "timeout.warning_threshold": 1,
}
DEVELOPMENT = {"environment": '"development"'}


def settings(*groups, **kw):
    s = dict(FAST)
    for g in groups:
        s.update(g)
    s.update({k.replace("__", "."): v for k, v in kw.items()})
    return s


def create(c, user, **params):
    params["user_id"] = user
    return c.call(S + "Create", params)


def call_error(c, method, params):
    try:
        r = c.call(method, params)
    except VarlinkError as e:
        return e
    raise AssertionError("%s succeeded: %r" % (method, r))


def alerts(c, name=None, state=None):
    return [a for a in c.call(A + "Alerts")["alerts"]
            if (name is None or a["name"] == name) and (state is None or a["state"] == state)]


def events(c, kind=None):
    return [e for e in c.call(A + "Events")["events"] if kind is None or e["kind"] == kind]


def metric(metrics, name, **labels):
    found = [m["value"] for m in metrics if m["name"] == name and (m.get("labels") or {}) == labels]
    assert len(found) == 1, (name, labels, found)
    return found[0]


# The parser of the Prometheus text format is promtext.parse (shared with
# the scrape endpoint's tests).
parse_prometheus = promtext.parse


def test_prometheus_parser_can_fail():
    for bad in ("# HELP a x\n# TYPE a gauge\na 1",            # no final newline
                "a 1\n",                                        # undeclared
                "# HELP a x\n# TYPE a gauge\na one\n",          # not a float
                "# HELP a x\n# TYPE a summary\na 1\n",          # a type we never write
                "# HELP a x\n# TYPE a gauge\na{b=\"1} 1\n",     # open quote
                "# HELP a x\n# TYPE a gauge\na 1\na 2\n",       # same sample twice
                "# HELP a x\n# TYPE a gauge\n"):                # no samples
        try:
            parse_prometheus(bad)
        except (AssertionError, ValueError):
            continue
        raise AssertionError("accepted %r" % bad)


# ---- metrics ---------------------------------------------------------------------------------

def test_metrics_and_prometheus():
    with Daemon(settings(DEVELOPMENT, monitoring__metrics_buffer_size=3)) as d, d.connect() as c:
        tokens = [create(c, "m%d" % i)["token"] for i in range(3)]
        for t in tokens:
            c.call(S + "Validate", {"token": t})
        c.call(S + "Destroy", {"token": tokens[0]})
        call_error(c, S + "Validate", {"token": "A" * 43})
        c.call(A + "Cleanup", {"kind": "regular"})
        m = c.call(A + "Metrics")
        metrics = m["metrics"]
        assert m["collecting"] is True and m["interval"] == 1
        assert metric(metrics, "sessions_created_total") == 3
        assert metric(metrics, "sessions_active") == 2
        assert metric(metrics, "validations_total", result="ok") == 3
        assert metric(metrics, "validations_total", result="not_found") == 1
        assert metric(metrics, "sessions_ended_total", reason="destroyed") == 1
        assert metric(metrics, "cleanup_runs_total", kind="regular") == 1
        assert metric(metrics, "cleanup_runs_total", kind="deep") == 0
        assert metric(metrics, "connections") >= 1
        assert metric(metrics, "db_size_bytes") > 0
        assert metric(metrics, "requests_timed_total") >= 5
        for q in ("0.5", "0.9", "0.99"):
            assert metric(metrics, "request_duration_seconds", quantile=q) > 0
        assert metric(metrics, "loop_lag_seconds") >= 0
        for x in metrics:
            assert not x["name"].startswith("sessiond_") and x["type"] in ("counter", "gauge") and x["help"], x

        # the history: one sample a second, at most metrics_buffer_size
        hist = wait_for(lambda: (lambda h: len(h) == 3 and h)(c.call(A + "Metrics")["history"]),
                        what="three samples")
        first = hist[0]["time"]
        hist = wait_for(lambda: (lambda h: h[0]["time"] > first and h)(c.call(A + "Metrics")["history"]),
                        what="the oldest sample to go")
        assert len(hist) == 3 and [h["time"] for h in hist] == sorted(h["time"] for h in hist), hist
        assert {"time", "sessions_active", "created_per_minute", "failure_rate_percent",
                "loop_lag_max_seconds", "db_size_bytes"} <= set(hist[-1]), hist[-1]
        assert hist[-1]["created_per_minute"] == 3 and hist[-1]["sessions_active"] == 2, hist[-1]

        # the Prometheus output of sessionctl parses and says the same
        p = d.sessionctl("metrics", "--prometheus", check=0)
        fams = parse_prometheus(p.stdout)
        now_metrics = c.call(A + "Metrics")["metrics"]
        assert set(fams) == {"sessiond_" + x["name"] for x in now_metrics}, set(fams) ^ {
            "sessiond_" + x["name"] for x in now_metrics}
        created = fams["sessiond_sessions_created_total"]
        assert created["type"] == "counter" and created["samples"] == [({}, 3.0)], created
        assert ({"reason": "idle"}, 0.0) in fams["sessiond_sessions_ended_total"]["samples"]
        assert fams["sessiond_sessions_active"]["type"] == "gauge"
        assert len(fams["sessiond_validations_total"]["samples"]) == 6
        # node_exporter's textfile collector reads the same file
        textfile = os.path.join(d.tmp, "sessiond.prom")
        with open(textfile, "w") as f:
            f.write(p.stdout)
        parse_prometheus(open(textfile).read())


def test_metrics_collection_off():
    s = settings(monitoring__metrics_collection=False, monitoring__alerts__creation_rate=1.0)
    with Daemon(s) as d, d.connect() as c:
        for i in range(5):
            create(c, "x%d" % i)
        st = c.call(A + "Status")["status"]
        assert not st["jobs"]["metrics"]["enabled"] and st["jobs"]["metrics"]["next_run"] is None
        # wait for two health checks: time passes without samples or alerts
        wait_for(lambda: c.call(A + "Status")["status"]["jobs"]["health"]["runs"] >= 2, what="health checks")
        m = c.call(A + "Metrics")
        assert m["history"] == [] and m["collecting"] is False, m
        assert metric(m["metrics"], "sessions_created_total") == 5
        assert metric(m["metrics"], "metrics_samples_total") == 0
        assert alerts(c, "creation_rate") == []
        assert "metrics_collection is off" in d.read_log()
        # switched on by a reload: samples and the alert follow (counting
        # from the reload: the time without samples is not a minute's worth)
        d.write_config({"monitoring.metrics_collection": True})
        assert c.call(A + "Reload") == {}
        wait_for(lambda: c.call(A + "Metrics")["history"], what="a sample")
        assert alerts(c, "creation_rate") == []
        create(c, "y1")
        create(c, "y2")
        a = wait_for(lambda: alerts(c, "creation_rate", "firing"), what="the creation_rate alert")[0]
        assert a["value"] == 2, a


def test_performance_monitoring_switch():
    # testing profile: performance_monitoring off
    with Daemon(settings()) as d, d.connect() as c:
        create(c, "p")
        names = {m["name"] for m in c.call(A + "Metrics")["metrics"]}
        assert not names & {"request_duration_seconds", "requests_timed_total", "loop_lag_seconds"}, names
        loop = c.call(A + "Health")["components"]["loop"]
        assert loop["status"] == "healthy" and "not measured" in loop["message"], loop
        d.write_config({"monitoring.performance_monitoring": True})
        assert c.call(A + "Reload") == {}
        c.call(S + "Create", {"user_id": "p"})
        m = wait_for(lambda: (lambda m: metric(m, "requests_timed_total") >= 1 and m)(
            c.call(A + "Metrics")["metrics"]), what="timed requests")
        assert metric(m, "loop_lag_seconds") >= 0
        wait_for(lambda: "lag_max_ms" in c.call(A + "Health")["components"]["loop"], what="the loop-lag probe")


# ---- alerts ------------------------------------------------------------------------------------

def test_creation_rate_alert_fires_and_resolves():
    # 10 sessions in a minute against a threshold of 5 a minute; a minute
    # later the window no longer holds them and the alert resolves itself.
    with Daemon(settings(monitoring__alerts__creation_rate=5.0)) as d, d.connect() as c:
        for i in range(10):
            create(c, "burst%d" % i)
        a = wait_for(lambda: alerts(c, "creation_rate", "firing"), what="creation_rate to fire")[0]
        assert a["value"] == 10 and a["threshold"] == 5 and a["resolved_at"] is None, a
        assert "10 sessions created in the last minute" in a["message"], a
        assert re.search(r"warning.*Alert creation_rate raised", d.read_log()), d.read_log()
        p = d.sessionctl("alerts", check=0)
        assert re.search(r"^creation_rate\s+firing\s+10\s+5\s", p.stdout, re.M), p.stdout
        assert len(alerts(c, "creation_rate")) == 1, "raised once"

        r = wait_for(lambda: alerts(c, "creation_rate", "resolved"), timeout=90,
                     what="creation_rate to resolve")[0]
        assert r["raised_at"] == a["raised_at"] and r["resolved_at"] >= a["raised_at"] + 55, r
        assert alerts(c, "creation_rate", "firing") == []
        kinds = [e["kind"] for e in events(c) if e["kind"].startswith("alert_")
                 and e["detail"]["name"] == "creation_rate"]
        assert kinds == ["alert_raised", "alert_resolved"], kinds
        assert "Alert creation_rate resolved" in d.read_log()


def test_failure_rate_alert_resolves_by_itself():
    with Daemon(settings(monitoring__alerts__failure_rate=50.0)) as d, d.connect() as c:
        token = create(c, "f")["token"]
        for i in range(10):
            call_error(c, S + "Validate", {"token": "%042d" % i + "B"})
        a = wait_for(lambda: alerts(c, "failure_rate", "firing"), what="failure_rate to fire")[0]
        assert a["value"] == 100 and a["threshold"] == 50, a
        for _ in range(100):
            c.call(S + "Validate", {"token": token})
        r = wait_for(lambda: alerts(c, "failure_rate", "resolved"), what="failure_rate to resolve")[0]
        assert r["resolved_at"] >= r["raised_at"]


def test_other_thresholds():
    s = settings(SHORT, monitoring__alerts__concurrent_sessions=3.0, monitoring__alerts__avg_duration=1.0,
                 monitoring__alerts__suspicious_rate=1.0, security__max_concurrent_per_user=100)
    with Daemon(s) as d, d.connect() as c:
        tokens = [create(c, "u", client={"user_agent": "A"})["token"] for _ in range(4)]
        a = wait_for(lambda: alerts(c, "concurrent_sessions", "firing"), what="concurrent_sessions")[0]
        assert a["value"] == 4 and a["threshold"] == 3, a
        # two refused user agents: two suspicious events in the minute
        for t in tokens[:2]:
            e = call_error(c, S + "Validate", {"token": t, "client": {"user_agent": "B"}})
            assert e.error == S + "FingerprintMismatch", e
        a = wait_for(lambda: alerts(c, "suspicious_rate", "firing"), what="suspicious_rate")[0]
        assert a["value"] == 2, a
        # sessions that lasted over a second end: their mean is above 1 s
        time.sleep(1.1)
        c.call(S + "Destroy", {"token": tokens[2]})
        c.call(S + "Destroy", {"token": tokens[3]})
        a = wait_for(lambda: alerts(c, "avg_duration", "firing"), what="avg_duration")[0]
        assert a["value"] >= 1, a
        # below the threshold again: concurrent_sessions resolves by itself
        c.call(A + "TerminateUser", {"user_id": "u"})
        wait_for(lambda: alerts(c, "concurrent_sessions", "resolved"), what="concurrent_sessions to resolve")


# ---- health --------------------------------------------------------------------------------------

def test_health_degraded_with_backlog():
    notify = os.path.join("/tmp", "sessiond-notify-%d.sock" % os.getpid())
    if os.path.exists(notify):
        os.unlink(notify)
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(notify)
    sink.settimeout(TIMEOUT)
    s = settings(SHORT, cleanup__trigger_threshold=3, cleanup__max_expired_threshold=3,
                 features__background_cleanup=False)
    try:
        with Daemon(s, env={"NOTIFY_SOCKET": notify}) as d, d.connect() as c:
            for i in range(5):
                create(c, "h%d" % i)
            h = c.call(A + "Health")
            assert h["status"] == "healthy", h
            assert set(h["components"]) == {"database", "cleanup", "security", "loop"}, h
            wait_for(lambda: c.call(A + "Status")["status"]["sessions_awaiting_cleanup"] == 5, what="the backlog")
            h = c.call(A + "Health")
            assert h["status"] == "degraded", h
            cl = h["components"]["cleanup"]
            assert cl["status"] == "degraded" and cl["awaiting"] == 5, cl
            assert "above cleanup.max_expired_threshold 3" in cl["message"], cl
            assert "background cleanup is off" in cl["message"], cl
            assert d.sessionctl("health").returncode == 3
            assert "cleanup: degraded" in d.sessionctl("health").stdout
            # the periodic check: Status, STATUS=, the alert, the event
            wait_for(lambda: c.call(A + "Status")["status"].get("health") == "degraded", what="periodic health")

            def status_line(want):
                while True:
                    msg = sink.recv(4096).decode()
                    for line in msg.split("\n"):
                        if line.startswith("STATUS=") and want(line):
                            return line
            line = status_line(lambda l: "health degraded" in l)
            assert "cleanup: 5 sessions await cleanup" in line, line
            assert wait_for(lambda: alerts(c, "cleanup_backlog", "firing"), what="the backlog alert")[0]["value"] == 5
            assert any(e["detail"]["status"] == "degraded" for e in events(c, "health_changed"))

            assert c.call(A + "Cleanup", {"kind": "regular"}) == {"ended": 5, "purged": 0}
            assert c.call(A + "Health")["status"] == "healthy"
            assert d.sessionctl("health").returncode == 0
            wait_for(lambda: alerts(c, "cleanup_backlog", "resolved"), what="cleanup_backlog to resolve")
            line = status_line(lambda l: "health" not in l)
            assert line.startswith("STATUS=Serving 0 sessions"), line
    finally:
        sink.close()
        os.unlink(notify)


def test_health_security_settings():
    off = {"security.fingerprinting": False, "security.audit_logging": False}
    with Daemon(settings(off)) as d, d.connect() as c:
        sec = c.call(A + "Health")["components"]["security"]
        assert sec["status"] == "healthy" and "fingerprinting is off" in sec["message"], sec
    with Daemon(settings(off, environment='"production"')) as d, d.connect() as c:
        h = c.call(A + "Health")
        sec = h["components"]["security"]
        assert h["status"] == "degraded" and sec["status"] == "degraded", h
        assert "fingerprinting is off in production" in sec["message"], sec
        assert "audit logging is off in production" in sec["message"], sec
        assert sec["fingerprinting"] is False and sec["audit_logging"] is False
        p = d.sessionctl("health")
        assert p.returncode == 3 and "security: degraded (fingerprinting is off in production" in p.stdout, p.stdout


def test_health_checks_off():
    with Daemon(settings(monitoring__health_checks=False)) as d, d.connect() as c:
        st = c.call(A + "Status")["status"]
        assert not st["jobs"]["health"]["enabled"] and "health" not in st, st
        # on demand it still answers
        h = c.call(A + "Health")
        assert h["status"] == "healthy" and h["components"]["database"]["integrity_check"]["result"] == "ok", h


def test_integrity_check_runs_periodically():
    with Daemon(settings()) as d, d.connect() as c:
        started = c.call(A + "Status")["status"]["started_at"]
        db = wait_for(lambda: (lambda db: db["integrity_check"]["at"] > started and db)(
            c.call(A + "Health")["components"]["database"]), timeout=15, what="a periodic integrity check")
        assert db["integrity_check"]["result"] == "ok" and db["latency_ms"] >= 0, db
        job = c.call(A + "Status")["status"]["jobs"]["health"]
        assert job["runs"] >= 1 and job["last_result"] == "healthy", job


# ---- security checks ----------------------------------------------------------------------------

def test_security_check():
    s = settings(security__suspicious_activity_threshold=2)
    with Daemon(s) as d, d.connect() as c:
        t = create(c, "mallory", client={"user_agent": "A"})["token"]
        for _ in range(2):
            call_error(c, S + "Validate", {"token": t, "client": {"user_agent": "B"}})
        a = wait_for(lambda: alerts(c, "suspicious_users", "firing"), what="suspicious_users")[0]
        assert a["value"] == 2 and a["threshold"] == 2 and "mallory (2)" in a["message"], a
        rows = wait_for(lambda: c.call(A + "Audit", {"kind": "security_check"})["entries"], what="the audit row")
        assert rows[0]["detail"]["users"] == [{"user_id": "mallory", "count": 2}], rows
        assert c.call(A + "Audit", {"kind": "suspicious", "user_id": "mallory"})["entries"]
        sec = c.call(A + "Health")["components"]["security"]
        assert sec["status"] == "degraded" and sec["suspicious_users"] == 1, sec
        assert "1 user at or above" in sec["message"], sec
        job = c.call(A + "Status")["status"]["jobs"]["security"]
        assert job["last_result"] == "1 user flagged", job
        # detection switched off: no check, the alert resolves
        d.write_config({"security.suspicious_detection": False})
        assert c.call(A + "Reload") == {}
        assert not c.call(A + "Status")["status"]["jobs"]["security"]["enabled"]
        assert alerts(c, "suspicious_users", "resolved")
        assert alerts(c, "suspicious_users", "firing") == []


# ---- events ---------------------------------------------------------------------------------------

def test_events_ring_and_stream():
    with Daemon(settings(monitoring__events_buffer_size=5)) as d, d.connect() as c, d.connect() as f:
        for i in range(8):
            create(c, "e%d" % i)
        ring = c.call(A + "Events")["events"]
        assert len(ring) == 5 and [e["user_id"] for e in ring] == ["e%d" % i for i in range(3, 8)], ring
        assert all(e["kind"] == "created" and e["time"] > 0 and e["session_id"] for e in ring), ring
        f.send(A + "Events", {}, more=True)
        first = f.recv()
        assert first["continues"] is True and len(first["parameters"]["events"]) == 5, first
        t = create(c, "late")["token"]
        c.call(S + "Rotate", {"token": t})
        got = []
        while len(got) < 3:
            r = f.recv()
            assert r["continues"] is True, r
            got += r["parameters"]["events"]
        assert [e["kind"] for e in got] == ["created", "rotated", "ended"], got
        assert got[2]["detail"]["reason"] == "rotated", got
        assert got[1]["detail"]["new_session_id"] != got[1]["session_id"], got
        assert all(t not in json.dumps(e) for e in got), "a token in an event"
        assert metric(c.call(A + "Metrics")["metrics"], "event_followers") == 1
        f.close()
        wait_for(lambda: metric(c.call(A + "Metrics")["metrics"], "event_followers") == 0,
                 what="the follower to go")
        # a reload changes the ring's size
        d.write_config({"monitoring.events_buffer_size": 2})
        assert c.call(A + "Reload") == {}
        ring = c.call(A + "Events")["events"]
        assert len(ring) == 2 and ring[-1]["kind"] == "config_reloaded", ring


def test_events_follower_that_never_reads():
    with Daemon(settings(security__max_concurrent_per_user=100000)) as d, d.connect(timeout=60) as c:
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(d.socket)
        slow.sendall(b'{"method":"io.sessiond.Admin.Events","more":true}\0')
        wait_for(lambda: metric(c.call(A + "Metrics")["metrics"], "event_followers") == 1, what="the follower")
        batch = b"".join(b'{"method":"io.sessiond.Session.Create","parameters":{"user_id":"flood"}}\0'
                         for _ in range(2000))
        for _ in range(10):
            c.send_raw(batch)
            for _ in range(2000):
                assert "error" not in c.recv()
            if "does not read" in d.read_log():
                break
        assert "does not read" in d.read_log(), "the follower was never cut"
        wait_for(lambda: metric(c.call(A + "Metrics")["metrics"], "event_followers") == 0, what="the cut")
        slow.close()
        assert c.call(A + "Health")["status"] in ("healthy", "degraded")


def test_sessionctl_events_follow():
    with Daemon(settings()) as d, d.connect() as c:
        proc = subprocess.Popen([SESSIONCTL, "-s", d.socket, "--json", "events", "--follow"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: metric(c.call(A + "Metrics")["metrics"], "event_followers") == 1, what="sessionctl")
            sid = create(c, "watched")["session"]["id"]
            line = proc.stdout.readline()
            ev = json.loads(line)
            assert ev["kind"] == "created" and ev["session_id"] == sid, ev
        finally:
            proc.kill()
            proc.wait()


# ---- audit ------------------------------------------------------------------------------------------

def test_audit_rows_for_each_kind():
    s = settings(security__max_concurrent_per_user=1, security__suspicious_activity_threshold=2,
                 environment='"development"')
    with Daemon(s) as d, d.connect() as c:
        start = int(time.time())
        a = create(c, "alice", client={"user_agent": "UA", "ip": "10.0.0.1"}, platform_id="web")
        create(c, "alice")                                         # evicts the first
        b = create(c, "bob", client={"user_agent": "UA", "ip": "10.0.0.1"})
        bt = b["token"]
        c.call(S + "Validate", {"token": bt, "client": {"user_agent": "UA", "ip": "10.0.0.2"}})  # fingerprint_changed
        c.call(S + "Extend", {"token": bt})
        c.call(S + "SwitchPlatform", {"token": bt, "platform_id": "mobile"})
        new = c.call(S + "Rotate", {"token": bt})["token"]
        call_error(c, S + "Validate", {"token": bt})               # validation_failed (rotated)
        call_error(c, S + "Validate", {"token": new, "client": {"user_agent": "X"}})  # suspicious 2
        c.call(S + "Destroy", {"token": create(c, "carol")["token"]})  # ended
        assert c.call(A + "Reload") == {}                          # config_reloaded
        wait_for(lambda: c.call(A + "Audit", {"kind": "security_check"})["entries"], what="security_check")

        entries = c.call(A + "Audit", {"limit": 10000})["entries"]
        kinds = {e["kind"] for e in entries}
        for k in ("created", "evicted", "fingerprint_changed", "extended", "platform_switched", "rotated",
                  "validation_failed", "suspicious", "ended", "config_reloaded", "security_check"):
            assert k in kinds, (k, kinds)
        assert [e["id"] for e in entries] == sorted(e["id"] for e in entries), "oldest first"
        evicted = [e for e in entries if e["kind"] == "evicted"]
        assert evicted[0]["user_id"] == "alice" and evicted[0]["session_id"] == a["session"]["id"], evicted
        failed = [e for e in entries if e["kind"] == "validation_failed"][0]
        assert failed["detail"]["reason"] == "expired" and failed["detail"]["end_reason"] == "rotated", failed
        ended = [e for e in entries if e["kind"] == "ended" and e["user_id"] == "carol"][0]
        assert ended["detail"]["reason"] == "destroyed", ended
        switched = [e for e in entries if e["kind"] == "platform_switched"][0]
        assert switched["detail"] == {"from": None, "to": "mobile"}, switched
        reloaded = [e for e in entries if e["kind"] == "config_reloaded"][0]
        assert reloaded["detail"]["ok"] is True and reloaded["user_id"] is None, reloaded
        assert all(e["time"] >= start for e in entries)

        # filters
        bob = c.call(A + "Audit", {"user_id": "bob"})["entries"]
        assert bob and all(e["user_id"] == "bob" for e in bob)
        assert [e["kind"] for e in c.call(A + "Audit", {"kind": "rotated"})["entries"]] == ["rotated"]
        assert len(c.call(A + "Audit", {"limit": 2})["entries"]) == 2
        last = c.call(A + "Audit", {"limit": 1})["entries"][0]
        assert last["id"] >= entries[-1]["id"], (last, entries[-1])
        assert c.call(A + "Audit", {"since": int(time.time()) + 60})["entries"] == []
        for params, field in (({"limit": 0}, "limit"), ({"limit": 10001}, "limit"), ({"since": -1}, "since"),
                              ({"user_id": ""}, "user_id"), ({"kind": ""}, "kind"), ({"kind": "k" * 65}, "kind")):
            e = call_error(c, A + "Audit", params)
            assert e.error == A + "InvalidArgument" and e.parameters["field"] == field, (params, e)
        e = call_error(c, A + "Audit", {"limit": "ten"})
        assert e.error == "org.varlink.service.InvalidParameter", e
        p = d.sessionctl("audit", "--user", "bob", "--kind", "rotated", check=0)
        assert re.search(r"\srotated\s+bob\s", p.stdout) and "1 entry listed." in p.stdout, p.stdout


def test_audit_logging_off():
    with Daemon(settings(security__audit_logging=False)) as d, d.connect() as c:
        t = create(c, "quiet")["token"]
        c.call(S + "Destroy", {"token": t})
        assert c.call(A + "Reload") == {}
        assert c.call(A + "Audit", {})["entries"] == []


# ---- analytics ----------------------------------------------------------------------------------------

def check_analytics(c):
    for i in range(3):
        create(c, "a%d" % i, platform_id="web")
    create(c, "b", platform_id="mobile")
    create(c, "n")
    web = create(c, "w", platform_id="web")["token"]
    c.call(S + "Destroy", {"token": web})
    a = c.call(A + "Analytics")["analytics"]
    assert a["active_by_platform"] == {"web": 3, "mobile": 1}, a
    assert a["active_without_platform"] == 1, a
    assert a["end_reasons"] == {"destroyed": 1}, a
    hours = a["created_per_hour"]
    assert len(hours) == 24 and hours[-1]["created"] == 6, hours
    assert hours[-1]["hour"] <= time.time() < hours[-1]["hour"] + 3600
    assert all(h["hour"] % 3600 == 0 for h in hours)
    du = a["durations"]
    assert du["count"] == 1 and du["p50"] == du["mean"] and du["p99"] >= du["p90"] >= du["p50"] >= 0, du
    return a


def test_analytics():
    with Daemon(settings(features__analytics=True)) as d, d.connect() as c:
        check_analytics(c)
        p = d.sessionctl("analytics", check=0)
        assert re.search(r"^durations:", p.stdout, re.M), p.stdout
    with Daemon(settings(features__analytics=True, features__persistence=False)) as d, d.connect() as c:
        check_analytics(c)
    with Daemon(settings()) as d, d.connect() as c:   # testing profile: off
        e = call_error(c, A + "Analytics", {})
        assert e.error == S + "FeatureDisabled" and e.parameters == {"feature": "analytics"}, e
        assert d.sessionctl("analytics").returncode == 1


# ---- stopping ------------------------------------------------------------------------------------------

def test_clean_stop_with_everything_open():
    # Streams, an analytics job and a cleanup in flight when SIGTERM comes:
    # the daemon stops at once, exit 0 (the sanitizer build checks leaks here).
    s = settings(DEVELOPMENT, SHORT, features__analytics=True, cleanup__batch_size=1,
                 features__background_cleanup=False, security__max_concurrent_per_user=100000)
    with Daemon(s) as d:
        with d.connect() as c, d.connect() as f, d.connect() as a, d.connect() as k:
            c.send_raw(b"".join(b'{"method":"io.sessiond.Session.Create","parameters":{"user_id":"s%d"}}\0' % i
                                for i in range(2000)))
            for _ in range(2000):
                assert "error" not in c.recv()
            wait_for(lambda: c.call(A + "Status")["status"]["sessions_awaiting_cleanup"] == 2000, what="expiry")
            f.send(A + "Events", {}, more=True)
            assert f.recv()["continues"] is True
            a.send(A + "Analytics", {})
            k.send(A + "Cleanup", {"kind": "batch"})  # 2000 batches of one
            c.call(A + "Alerts")
            assert d.stop() == 0
        log = d.read_log()
        assert "Stopped" in log and "left open" not in log, log


# ---- Status ------------------------------------------------------------------------------------------

def test_status_jobs_and_origin():
    with Daemon(settings(), wait=False) as d:
        with open(d.env_file, "w") as f:
            f.write("SESSION_CLEANUP_BATCH_SIZE=7\n")
        d.wait_ready()
        with d.connect() as c:
            # The daemon may have read its sources before the env file was
            # written: a reload reads them again, deterministically.
            c.call(A + "Reload")
            st = c.call(A + "Status")["status"]
            for name in ("regular", "batch", "deep", "security", "metrics", "health"):
                job = st["jobs"][name]
                assert set(job) >= {"enabled", "interval", "last_run", "next_run", "last_duration_ms",
                                    "last_result"}, job
            assert st["jobs"]["metrics"]["interval"] == 1 and st["jobs"]["deep"]["interval"] == 86400
            cfg = st["configuration"]
            assert cfg["file"] == d.config and cfg["env_file"] == d.env_file and cfg["env_file_present"], cfg
            assert cfg["settings_from"]["env_file"] == 1 and cfg["settings_from"]["file"] >= 10, cfg
            assert cfg["settings_from"]["profile"] >= 1 and cfg["environment"] == "testing", cfg
            assert st["env_file"] == d.env_file
            job = wait_for(lambda: (lambda j: j["runs"] >= 1 and j)(c.call(A + "Status")["status"]["jobs"]["metrics"]),
                           what="a metrics run")
            assert job["last_run"] >= st["started_at"] and job["next_run"] >= job["last_run"], job
            p = d.sessionctl("status", check=0)
            assert re.search(r"^jobs:", p.stdout, re.M) and "regular:" in p.stdout, p.stdout


run_tests([
    test_prometheus_parser_can_fail,
    test_metrics_and_prometheus,
    test_metrics_collection_off,
    test_performance_monitoring_switch,
    test_failure_rate_alert_resolves_by_itself,
    test_other_thresholds,
    test_health_degraded_with_backlog,
    test_health_security_settings,
    test_health_checks_off,
    test_integrity_check_runs_periodically,
    test_security_check,
    test_events_ring_and_stream,
    test_events_follower_that_never_reads,
    test_sessionctl_events_follow,
    test_audit_rows_for_each_kind,
    test_audit_logging_off,
    test_analytics,
    test_status_jobs_and_origin,
    test_clean_stop_with_everything_open,
    test_creation_rate_alert_fires_and_resolves,
])
