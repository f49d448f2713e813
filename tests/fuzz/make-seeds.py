#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/.

Seeds are what libFuzzer starts from, so they should already reach every
part of the code: a real call of every method of both interfaces, replies
and errors of each shape, pipelined and partial streams, nesting at and over
the limit for varlink; the shipped configuration files and the unit tests'
fixtures for config; the shipped env file and the editor's cases for envfile.

Run it again after adding a method or a setting (it rewrites the files it
owns, named seed-*, and leaves the rest alone: inputs that a long run found
interesting may be added under other names). The input formats are those
described at the top of each fuzz-<name>.c.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")

# Byte 0 of a varlink input: size limit (bits 0-1: 24, 512, 4096, 65536)
# and the zero-copy path (bit 2); byte 1 seeds the chunk sizes.
BIG_FEED = b"\x03\x00"
BIG_SPACE = b"\x07\x5a"
SMALL = b"\x00\x01"
MEDIUM_SPACE = b"\x05\x33"

CLIENT = {"user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/115.0", "ip": "192.0.2.10",
          "accept_language": "en-US,en;q=0.5", "accept_encoding": "gzip, deflate, br"}
TOKEN = "s1.6bWJ4Zm9vYmFyYmF6cXV4.Yx1-ZmVkY2JhOTg3NjU0MzIxMA"
SESSION = {"id": "9f0c2d4e6a8b1c3d", "user_id": "alice", "platform_id": "web", "created_at": 1700000000,
           "last_activity": 1700000100, "expires_at": 1700172800, "state": "active", "ip": "192.0.2.10",
           "user_agent": "Mozilla/5.0", "ended_at": None, "end_reason": None}

SESSION_CALLS = {
    "Create": {"user_id": "alice", "platform_id": "web", "client": CLIENT, "sync_data": "{\"tabs\":2}"},
    "Validate": {"token": TOKEN, "client": CLIENT, "touch": True},
    "Heartbeat": {"token": TOKEN},
    "Extend": {"token": TOKEN},
    "Rotate": {"token": TOKEN},
    "SwitchPlatform": {"token": TOKEN, "platform_id": "mobile"},
    "GetSyncState": {"token": TOKEN},
    "SetSyncState": {"token": TOKEN, "data": "{\"cart\":[1,2,3]}", "expected_version": 4},
    "Watch": {"token": TOKEN},
    "Destroy": {"token": TOKEN},
    "DestroyUser": {"user_id": "alice", "except_token": TOKEN},
    "ListUser": {"user_id": "alice"},
    "GetClientConfig": {},
}
ADMIN_CALLS = {
    "Status": {}, "GetConfig": {}, "Reload": {}, "Health": {}, "Metrics": {}, "Alerts": {}, "Events": {},
    "Audit": {"user_id": "alice", "since": 1700000000, "kind": "session_created", "limit": 50},
    "ListSessions": {"user_id": "alice", "include_ended": True, "limit": 100},
    "Terminate": {"id": "9f0c2d4e6a8b1c3d"},
    "TerminateUser": {"user_id": "alice"},
    "Cleanup": {"kind": "deep"},
    "Analytics": {},
}
REPLIES = [
    {"parameters": {"token": TOKEN, "session": SESSION, "evicted": ["a1", "b2"]}},
    {"parameters": {"session": SESSION, "state": "active", "expires_in": 86300, "warning": False}},
    {"parameters": {"event": "sync", "session": SESSION, "version": 5, "data": "{}"}, "continues": True},
    {"parameters": {"status": "degraded", "components": {"database": {"status": "healthy", "message": "ok",
                                                                     "latency_ms": 0.25}}}},
    {"parameters": {"metrics": [{"name": "sessions_active", "help": "Active sessions", "type": "gauge",
                                 "value": 12, "labels": {"platform": "web"}}], "history": []}},
    {"parameters": {}},
    {"error": "io.sessiond.Session.Expired", "parameters": {"reason": "idle"}},
    {"error": "io.sessiond.Session.RateLimited", "parameters": {"retry_after": 30}},
    {"error": "io.sessiond.Session.InvalidArgument", "parameters": {"field": "user_id", "reason": "empty"}},
    {"error": "io.sessiond.Admin.ConfigInvalid", "parameters": {"issues": ["error: x", "warning: y"]}},
    {"error": "org.varlink.service.MethodNotFound", "parameters": {"method": "io.sessiond.Session.Nope"}},
    {"error": "io.sessiond.Session.NotFound"},
]


def write(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, "seed-" + name), "wb") as f:
        f.write(data)


def msg(obj):
    return json.dumps(obj, separators=(",", ":")).encode() + b"\0"


def varlink_seeds():
    calls = []
    for iface, methods in (("io.sessiond.Session", SESSION_CALLS), ("io.sessiond.Admin", ADMIN_CALLS)):
        for method, params in methods.items():
            call = {"method": iface + "." + method, "parameters": params}
            if method in ("Watch", "Events"):
                call["more"] = True
            calls.append(msg(call))
            write("varlink", "call-%s-%s" % (iface.rsplit(".", 1)[1].lower(), method), BIG_FEED + calls[-1])
    calls.append(msg({"method": "io.sessiond.Session.Heartbeat", "parameters": {"token": TOKEN}, "oneway": True}))
    calls.append(msg({"method": "org.varlink.service.GetInfo"}))
    calls.append(msg({"method": "org.varlink.service.GetInterfaceDescription",
                      "parameters": {"interface": "io.sessiond.Session"}}))
    for i, r in enumerate(REPLIES):
        write("varlink", "reply-%02d" % i, BIG_FEED + msg(r))
    write("varlink", "pipelined-calls", BIG_SPACE + b"".join(calls))
    write("varlink", "pipelined-replies", MEDIUM_SPACE + b"".join(msg(r) for r in REPLIES))
    write("varlink", "partial", BIG_FEED + calls[0] + calls[1][: len(calls[1]) // 2])
    write("varlink", "too-long", SMALL + calls[0])
    write("varlink", "pretty-printed", BIG_FEED + json.dumps(
        {"method": "io.sessiond.Session.Create", "parameters": SESSION_CALLS["Create"]}, indent=2).encode() + b"\0")
    write("varlink", "escapes", BIG_FEED + (
        b'{"method":"io.sessiond.Session.Create","parameters":{"user_id":"\\u00e9\\ud83d\\ude00\\"\\\\\\/\\b\\f\\n\\r\\t",'
        b'"platform_id":"\xc3\xa9\xe2\x82\xac","sync_data":"[{]}\\"[["},"more":false,"oneway":false,"upgrade":false}\0'))
    write("varlink", "numbers", BIG_FEED + (
        b'{"method":"a.b.C","parameters":{"i":-9223372036854775808,"j":9223372036854775807,"r":-0.0,'
        b'"e":1.5e300,"f":2.2250738585072014e-308,"n":null,"t":true,"o":{"p":{"q":[1,{"r":{}}]}}}}\0'))
    deep = "{\"a\":" * 62 + "1" + "}" * 62
    write("varlink", "deep-limit", BIG_FEED + b'{"method":"a.b.C","parameters":' + deep.encode() + b"}\0")
    deeper = "[" * 70 + "]" * 70
    write("varlink", "deep-over", BIG_FEED + b'{"method":"a.b.C","parameters":{"x":' + deeper.encode() + b"}}\0")
    write("varlink", "brackets-in-strings", BIG_FEED + (
        b'{"method":"a.b.C","parameters":{"x":"' + b"[" * 100 + b'\\"' + b"{" * 100 + b'"}}\0'))
    write("varlink", "bad-shapes", MEDIUM_SPACE + b"\0".join([
        b'{"method":"a.b.C","oneway":true,"more":true}', b'{"method":"nodot"}', b'{"method":"a.b.c"}',
        b'{"method":"1a.b.C"}', b'{"method":"a.-b.C"}', b'{"method":"a.b.C","parameters":[]}',
        b'{"method":"a.b.C","more":1}', b'{"method":"a.b.C","method":"a.b.D"}', b'[]', b'"x"', b'',
        b'{"error":"a.b.E","continues":true}', b'{"error":5}', b'{"parameters":{}} trailing',
        b'{"method":"a.b.C","parameters":{"k":"\\u0000"}}']) + b"\0")
    # The call scanner's edges (lib/varlink/scan.c): what it takes, next to
    # what it must hand to jansson.
    write("varlink", "scanner-edges", MEDIUM_SPACE + b"\0".join([
        b' {"more" : true , "method":"a.b.C","upgrade":false,"x":null,"parameters":{"o":{},"e":{"a":-0}}}\n',
        b'{"method":"a.b.C","parameters":{"s":"\\"\\\\\\/\\b\\f\\n\\r\\t","n":-12,"z":0,"b":false}}',
        b'{"method":"a.b.C","parameters":{"big":999999999999999999,"bigger":9999999999999999999}}',
        b'{"method":"a.b.C","parameters":{"c":{"ip":"1","ip":"2"}}}',
        b'{"method":"a.b.C","parameters":{"c":{"d":{}}}}', b'{"method":"a.b.C","parameters":{"n":01}}',
        b'{"method":"a.b.C","parameters":{"t":truex}}', b'{"method":"a.b.C","parameters":{"f":1.0}}',
        b'{"method":"a.b.C","parameters":{"s":"\xc3\xa9"}}', b'{"method":"a.b.C","x":{}}',
        b'{"method":"a.b.C","parameters":{"a":1},"parameters":{"a":1}}']) + b"\0")
    # "parameters": null, as the Go reference implementation sends every call
    # without parameters: no parameters, to the scanner and to jansson.
    write("varlink", "null-parameters", MEDIUM_SPACE + b"\0".join([
        b'{"method":"org.varlink.service.GetInfo","parameters":null}',
        b'{"method":"io.sessiond.Session.NoSuch","parameters":null}',
        b'{"method":"io.sessiond.Session.Watch","parameters" : null ,"more":true}',
        b'{"method":"a.b.C","parameters":nul}', b'{"method":"a.b.C","parameters":nullx}',
        b'{"method":"a.b.C","parameters":null,"parameters":null}',
        b'{"parameters":null}']) + b"\0")


def read(path):
    with open(os.path.join(TOP, path), "rb") as f:
        return f.read()


SEP = b"%%\n"


def config_seeds():
    conf, local, env = read("conf/sessiond.conf"), read("conf/local.conf"), read("conf/session.env.example")
    write("config", "sessiond-conf", conf)
    write("config", "local-conf", local)
    write("config", "env-example", SEP + env)
    write("config", "all-three", conf + SEP + env.replace(b"#SESSION_", b"SESSION_") + SEP +
          b"SESSION_ENVIRONMENT=production\nSESSION_DEBUG_MODE=yes\nSESSION_CUSTOM_Team=blue\nSESSION_MANAGER=x\n")
    fixtures = [
        b'environment = "production";\ncleanup: { max_batches = 3; };\n',
        b'environment = "qa";\n',
        b'environment = "testing";\n\ntimeout: { idle_timeout = ; };\n',
        b'a = 1;\n\ncustom: { "x" };\n',
        b'debug_mode = true "x";\n',
        b'environment = "testing";\nsync: { localstorage_prefix = "a" "b"; };\nx = 1.5 "y";\n',
        b'a = [\"x\"] "y";\n',
        b'a = 1; "b" = 2;\n',
        b'a = 1;\n# x\0y\nb "= "z";\n',
        b'x = ("p", "q", ["t", "u"], { v = "w"; });\ny = ["r"];\nz : "s", zz = "t";\n',
        b'debug_mode = 5;\ntimeout = 5;\n',
        b'custom = 5;\n',
        b'timeout: { session_lifetime = 5000000000; idle_timeout = "48h"; absolute_timeout = 0x7fffffffffffffffL; };\n',
        b'timeout: { session_lifetime = -1; idle_timeout = "7d"; warning_threshold = "90s"; };\n'
        b'monitoring: { alerts: { creation_rate = 1e16; failure_rate = 2; }; };\n',
        b'custom: { team = "blue"; limit = 5; ratio = 0.5; on = true; list = [1]; };\n',
        b'timout: { idle_timeout = 5; };\nfeatures: { analytic = true; };\n',
        b'/* comment */ // line\n# hash\nenvironment = "staging"; @include "missing.conf"\n',
        b'daemon: { synchronous = "off"; max_connections = 0; max_message_size = 10L; };\n',
    ]
    for i, text in enumerate(fixtures):
        write("config", "fixture-%02d" % i, text)
    write("config", "env-file-cases", b"environment = \"testing\";\n" + SEP +
          b"FOREIGN_KEY=keep me\nexport SESSION_ENVIRONMENT=staging # note\nSESSION_CLEANUP_BATCH_SIZE=10\n"
          b"SESSION_CLEANUP_BATCH_SIZE = 20\r\nSESSION_LOCALSTORAGE_PREFIX='a b'\nSESSIOND_ENV_FILE=/x\n"
          b"SESSION_ENABLE_ANALYTICS=false\nSESSION_IDLE_TIMEOUT_SECONDS=30m\nlast_line=no newline")
    write("config", "environment-cases", SEP + SEP +
          b"SESSION_ENVIRONMENT=Production\nSESSION_ENABLE_ANALYTICS=true\nSESSION_FEATURE_ANALYTICS=false\n"
          b"SESSION_LIFETIME_SECONDS=\nSESSION_CUSTOM_=x\nSESSIOND_SOKET_PATH=/x\nSESSION_ALERT_CREATION_RATE=1e3\n"
          b"SESSION_SYNC_MAX_DATA_SIZE=99999999999\nSESSION_SECURITY_FINGERPRINTING=maybe\nNOEQUALS\n")
    write("config", "include", b'@include "session.env"\n' + SEP + b'environment = "staging";\n')
    # The fleet (DESIGN 8): connection strings in both of libpq's forms,
    # with passwords to hide, readable by libpq or not.
    write("config", "fleet", b'features: { distributed = true; clustering = true; caching = true; };\n'
          b'daemon: { postgres_url = "postgresql://app:p%40ss@h1:5432,h2/sessions?host=/run/pg&password=x&a=b"; '
          b'key_file = "fleet.key"; };\n' + SEP +
          b"SESSIOND_POSTGRES_URL=\"host=/x password='a b\\\\' c' sslpassword = y dbname=z\"\n" + SEP +
          b"SESSIOND_KEY_FILE=/etc/sessiond/fleet.key\n")
    write("config", "fleet-broken", b'features: { caching = true; };\n' + SEP +
          b"SESSIOND_POSTGRES_URL=postgresql://app:se%zz/cr?et@h/db?password=a&b\n" + SEP +
          b"SESSIOND_POSTGRES_URL=host=x password='open\nSESSION_FEATURE_DISTRIBUTED=yes\n")


def envfile_seeds():
    env = read("conf/session.env.example")
    write("envfile", "env-example", env)
    write("envfile", "env-example-edited", env + SEP + b"SESSION_ENVIRONMENT=production\nSESSION_DEBUG_MODE=true\n"
          b"SESSION_LOCALSTORAGE_PREFIX=a b # c\nNEW_KEY=$HOME `x` \"q\" \\\n1BAD=x\n=empty\nexport=1\n")
    write("envfile", "editor-cases", b"# keep\n\nFOREIGN_KEY=keep me\nexport SESSION_ENVIRONMENT=staging # note\n"
          b"SESSION_CLEANUP_BATCH_SIZE=10\nSESSION_CLEANUP_BATCH_SIZE = 20\r\n"
          b"SESSION_LOCALSTORAGE_PREFIX='a b'\nlast_line=no newline\n" + SEP +
          b"SESSION_CLEANUP_BATCH_SIZE=20\nSESSION_ENVIRONMENT=testing\nlast_line=no newline\nlast_line=changed\n")
    write("envfile", "quoting", b"A=\"x \\\" \\\\ \\$ \\` \\n y\" # c\nB='lit \\ $x'\nC=a#b\nD=a #b\n"
          b"E=  spaced  \nexport   F=1\n\tG\t=\t2\nH=\"\"\nI=''\n   # indented comment\n\r\n")
    write("envfile", "malformed", b"OK=1\nno equals sign\nKEY=\"open\nK=\"a\" b\nK=a\"b\n1X=2\nexport\nX Y=1\n")
    write("envfile", "nul", b"A=1\0B=2\n")
    write("envfile", "no-final-newline", b"A=1\nB=2" + SEP + b"B=3\n")
    write("envfile", "crlf", b"A=1\r\nB='2'\r\nC=\"3\"\r\n# c\r\n")


def main():
    varlink_seeds()
    config_seeds()
    envfile_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
