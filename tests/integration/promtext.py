"""A strict parser of the Prometheus text exposition format 0.0.4, and a
scraper of the daemon's HTTP endpoint, for the tests of the scrape endpoint,
the alert rules and the dashboard (standard library only).

(test_observability.py and test_sessionctl.py carry parsers of their own
for `sessionctl metrics --prometheus`; this one is the same grammar.)
"""

import http.client
import re
import socket

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(r"^(%s)(?:\{(.*)\})? (\S+)$" % NAME)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')


def parse(text):
    """{family: {"help", "type", "samples": [(labels, float)]}}; raises
    AssertionError or ValueError on anything Prometheus would reject."""
    families = {}
    current = None
    assert text.endswith("\n"), "no final newline"
    for line in text.split("\n")[:-1]:
        assert line, "empty line"
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP "):].partition(" ")
            assert re.fullmatch(NAME, name) and name not in families, line
            families[name] = {"help": help_text, "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, _, typ = line[len("# TYPE "):].partition(" ")
            assert name == current and families[name]["type"] is None, line
            assert typ in ("counter", "gauge"), line
            families[name]["type"] = typ
        else:
            assert not line.startswith("#"), line
            m = SAMPLE.match(line)
            assert m, "not a sample: %r" % line
            name, labels_text, value = m.groups()
            assert name == current and families[name]["type"], "sample %s not declared before" % name
            labels, pos = {}, 0
            while labels_text and pos < len(labels_text):
                lm = LABEL.match(labels_text, pos)
                assert lm, "bad labels %r" % labels_text
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
            assert labels not in [s[0] for s in families[name]["samples"]], "duplicate " + line
            families[name]["samples"].append((labels, float(value)))
    for name, f in families.items():
        assert f["samples"], "family without samples: " + name
    return families


def value(families, name, **labels):
    found = [v for l, v in families[name]["samples"] if all(l.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, (name, labels, families.get(name))
    return found[0]


def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def request(port, method="GET", path="/metrics", host="127.0.0.1", body=None, headers=None, timeout=10):
    """(status, headers dict with lower-case names, body text)."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        c.close()


def scrape(port, host="127.0.0.1"):
    status, headers, body = request(port, host=host)
    assert status == 200, (status, body)
    assert headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    return parse(body)
