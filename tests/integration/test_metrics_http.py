"""The Prometheus scrape endpoint (daemon.metrics_listen, daemon/metrics_http.c)
of the real daemon, scraped over HTTP like Prometheus does.

- off by default; on with the file setting or SESSIOND_METRICS_LISTEN;
- GET /metrics parses as the text format 0.0.4 and has exactly the series of
  `sessionctl metrics --prometheus` plus the endpoint's own two; it follows
  the daemon on demand (the render timer is an hour here);
- everything else is refused (405 with Allow, 404), bad HTTP does not hurt
  the daemon, connections are bounded and the Varlink socket stays served
  while they are all taken;
- reload starts, moves and stops the listener, keeps it when the new
  address cannot be bound, refuses an invalid address;
- a port in use stops the start; a socket passed by systemd under the name
  "metrics" is served as it is; a stop with scrapers connected is clean.
"""

import os
import signal
import socket
import subprocess
import time

import promtext
from harness import Daemon, SESSIOND, TIMEOUT, run_tests, wait_for

A = "io.sessiond.Admin."
S = "io.sessiond.Session."
ENDPOINT_ONLY = {"sessiond_metrics_snapshot_age_seconds", "sessiond_build_info"}
QUIET = {"monitoring.metrics_interval": 3600}


def listen_settings(port, host="127.0.0.1"):
    s = dict(QUIET)
    s["daemon.metrics_listen"] = "%s:%d" % (host, port)
    return s


def answered(port):
    try:
        return promtext.request(port, timeout=3)[0] == 200
    except (ConnectionError, socket.timeout, OSError):
        return False


def served(d):
    """The daemon has finished starting (wait_ready only sees the socket,
    where a connection waits in the backlog): the endpoint is up."""
    try:
        assert d.call("org.varlink.service.GetInfo")["product"] == "sessiond"
    except BaseException:
        d.cleanup()
        raise
    return d


def refused(port):
    try:
        promtext.request(port, timeout=3)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    return False


def test_off_by_default():
    with Daemon(QUIET) as d:
        assert "Serving metrics" not in d.read_log()
        shown = d.sessionctl("config", "--show", check=0).stdout
        assert '"metrics_listen": ""' in shown or '"metrics_listen":""' in shown, shown


def test_scrape_matches_sessionctl():
    port = promtext.free_port()
    with served(Daemon(listen_settings(port))) as d, d.connect() as c:
        assert "Serving metrics on http://127.0.0.1:%d/metrics" % port in d.read_log()
        first = promtext.scrape(port)
        assert promtext.value(first, "sessiond_sessions_created_total") == 0
        assert promtext.value(first, "sessiond_build_info", version=first["sessiond_build_info"]["samples"][0][0]["version"]) == 1
        tokens = [c.call(S + "Create", {"user_id": "u%d" % i})["token"] for i in range(3)]
        for t in tokens:
            c.call(S + "Validate", {"token": t})
        c.call_error(S + "Validate", {"token": "A" * 43})
        # The render timer is an hour away: only a render on demand shows these.
        fams = wait_for(lambda: (lambda f: promtext.value(f, "sessiond_sessions_created_total") == 3 and f)(
            promtext.scrape(port)), what="the creates in a scrape")
        assert promtext.value(fams, "sessiond_sessions_active") == 3
        assert promtext.value(fams, "sessiond_validations_total", result="ok") == 3
        assert promtext.value(fams, "sessiond_validations_total", result="not_found") == 1
        assert promtext.value(fams, "sessiond_metrics_snapshot_age_seconds") >= 0
        ctl = promtext.parse(d.sessionctl("metrics", "--prometheus", check=0).stdout)
        assert set(fams) == set(ctl) | ENDPOINT_ONLY, set(fams) ^ (set(ctl) | ENDPOINT_ONLY)
        for name in ctl:
            assert fams[name]["type"] == ctl[name]["type"] and fams[name]["help"] == ctl[name]["help"], name
            assert [l for l, _ in fams[name]["samples"]] == [l for l, _ in ctl[name]["samples"]], name
        # HEAD: the headers only; a query string is ignored
        status, headers, body = promtext.request(port, "HEAD")
        assert status == 200 and body == "" and int(headers["content-length"]) > 1000, (status, headers)
        status, _, body = promtext.request(port, path="/metrics?name[]=sessiond_users")
        assert status == 200 and "sessiond_users " in body


def test_refuses_everything_else():
    port = promtext.free_port()
    with served(Daemon(listen_settings(port))) as d:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            status, headers, _ = promtext.request(port, method, body="x=1" if method != "OPTIONS" else None)
            assert status == 405 and headers.get("allow") == "GET, HEAD", (method, status, headers)
        for path in ("/", "/metrics/", "/metricsx", "/Metrics", "/debug/pprof", "/../metrics"):
            status, _, body = promtext.request(port, path=path)
            assert status == 404, (path, status, body)
        # a large body is not read: the 405 comes first, then the connection is closed
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            s.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (1 << 20))
            try:
                s.sendall(b"x" * (1 << 20))
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                reply = s.recv(65536)
            except ConnectionResetError:
                reply = b""
            assert reply == b"" or reply.startswith(b"HTTP/1.1 405"), reply[:100]
        # bad HTTP: garbage, a request line without a version, a huge URL, a NUL
        for raw in (b"\x00\xff garbage\r\n\r\n", b"GET /metrics\r\n\r\n", b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n\r\n",
                    b"GET /metrics HTTP/1.1\r\nHost: x\r\nBad header line\r\n\r\n", b"GET /metrics HTTP/9.9\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
                try:
                    s.sendall(raw)
                    s.shutdown(socket.SHUT_WR)
                    reply = s.recv(65536)
                except (ConnectionResetError, BrokenPipeError):
                    reply = b""
                assert not reply.startswith(b"HTTP/1.1 200"), (raw[:40], reply[:200])
        # the daemon is fine and so is the endpoint
        assert d.call("org.varlink.service.GetInfo")["product"] == "sessiond"
        promtext.scrape(port)


def test_connections_are_bounded():
    port = promtext.free_port()
    with served(Daemon(listen_settings(port))) as d, d.connect() as c:
        idle = []
        try:
            # 16 connections that never finish a request take every slot
            for _ in range(16):
                s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
                s.sendall(b"GET /metrics HTTP/1.1\r\n")
                idle.append(s)

            wait_for(lambda: not answered(port), what="a 17th connection turned away")
            # the loop is not held by any of it
            for _ in range(20):
                assert c.call(A + "Status")["status"]
        finally:
            for s in idle:
                s.close()
        wait_for(lambda: answered(port), what="a slot again")
        assert "Serving metrics" in d.read_log()


def test_reload_starts_moves_and_stops():
    p1, p2 = promtext.free_port(), promtext.free_port()
    with Daemon(QUIET) as d:
        assert refused(p1)
        d.write_config({"daemon.metrics_listen": "127.0.0.1:%d" % p1})
        d.sessionctl("reload", check=0)
        promtext.scrape(p1)
        # moved
        d.write_config({"daemon.metrics_listen": "127.0.0.1:%d" % p2})
        d.sessionctl("reload", check=0)
        promtext.scrape(p2)
        assert refused(p1)
        # a port somebody else holds: logged, the old address kept
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen(1)
            taken = other.getsockname()[1]
            d.write_config({"daemon.metrics_listen": "127.0.0.1:%d" % taken})
            d.sessionctl("reload", check=0)
            log = d.read_log()
            assert "Failed to listen on daemon.metrics_listen=127.0.0.1:%d: Address already in use" % taken in log, log
            assert "Keeping the metrics endpoint on 127.0.0.1:%d" % p2 in log, log
            promtext.scrape(p2)
        # an invalid address: the reload fails, nothing changes
        d.write_config({"daemon.metrics_listen": "localhost:%d" % p1})
        p = d.sessionctl("reload", check=1)
        assert "daemon.metrics_listen must be empty (off) or a numeric IP address" in p.stderr, p.stderr
        promtext.scrape(p2)
        # off
        d.write_config({"daemon.metrics_listen": ""})
        d.sessionctl("reload", check=0)
        assert refused(p2)
        assert "Stopped serving metrics" in d.read_log()
        d.stop()


def test_environment_and_start_failure():
    port = promtext.free_port()
    with served(Daemon(QUIET, env={"SESSIOND_METRICS_LISTEN": "127.0.0.1:%d" % port})) as d:
        promtext.scrape(port)
        out = d.sessionctl("config", "--show", "--origin", check=0).stdout
        assert "127.0.0.1:%d" % port in out and "environment" in out, out
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        taken = other.getsockname()[1]
        with Daemon(listen_settings(taken), wait=False) as d:
            assert d.proc.wait(timeout=TIMEOUT) == 1, d.read_log()
            assert "Failed to listen on daemon.metrics_listen=127.0.0.1:%d: Address already in use" % taken in d.read_log()


class Activated:
    """sessiond started the way systemd starts it with sessiond-metrics.socket:
    a listening socket as fd 3, LISTEN_FDS=1, LISTEN_FDNAMES=metrics."""

    def __init__(self, d, sock):
        env = d.environ()
        env.update({"LISTEN_FDS": "1", "LISTEN_FDNAMES": "metrics"})
        fd = sock.fileno()

        def to_fd3():
            os.dup2(fd, 3)
            os.set_inheritable(3, True)
        d.log = open(d.log_path, "ab")
        # fd 3 of the child is made in preexec_fn; pass_fds keeps that
        # number open through the close of every other descriptor after it
        d.proc = subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", SESSIOND, "-c", d.config],
                                  stdout=d.log, stderr=d.log, env=env, preexec_fn=to_fd3, pass_fds=(3,))


def test_socket_from_systemd():
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        port = lsock.getsockname()[1]
        other = promtext.free_port()
        d = Daemon({"daemon.metrics_listen": "127.0.0.1:%d" % other}, wait=False)
        with d:
            d.stop(expect=None)
            Activated(d, lsock)
            d.wait_ready()
            served(d)
            lsock.close()  # the daemon has its own copy
            promtext.scrape(port)
            log = d.read_log()
            assert "Serving metrics on http://127.0.0.1:%d/metrics (socket from systemd)" % port in log, log
            assert "is not the address of the socket systemd passed" in log, log
            assert refused(other)
            # reload: the socket from systemd stays
            d.write_config({"daemon.metrics_listen": ""})
            d.sessionctl("reload", check=0)
            promtext.scrape(port)
            d.stop()
    # a socket that is not TCP is refused at start
    with socket.socket(socket.AF_UNIX) as usock:
        d = Daemon(wait=False)
        with d:
            d.stop(expect=None)
            usock.bind(os.path.join(d.tmp, "not-tcp.sock"))
            usock.listen(1)
            Activated(d, usock)
            assert d.proc.wait(timeout=TIMEOUT) == 1, d.read_log()
            assert 'passed as "metrics" is not a listening TCP socket' in d.read_log()


def test_stop_with_scrapers_connected():
    port = promtext.free_port()
    with served(Daemon(listen_settings(port))) as d:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(4)]
        try:
            idle[0].sendall(b"GET /metrics HTTP/1.1\r\n")
            promtext.scrape(port)
            d.signal(signal.SIGTERM)
            assert d.proc.wait(timeout=TIMEOUT) == 0, d.read_log()
        finally:
            for s in idle:
                s.close()


run_tests([
    test_off_by_default,
    test_scrape_matches_sessionctl,
    test_refuses_everything_else,
    test_connections_are_bounded,
    test_reload_starts_moves_and_stops,
    test_environment_and_start_failure,
    test_socket_from_systemd,
    test_stop_with_scrapers_connected,
])
