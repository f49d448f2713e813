"""`sessionctl config` as an operator runs it: the real binary, real files,
no daemon. Every test works in its own temporary folder with an explicit
-c FILE, so /etc and the caller's environment never leak in."""

import json
import os
import shutil
import stat
import subprocess
import tempfile

from harness import SESSIOND, SESSIONCTL, TIMEOUT, run_tests


class Setup:
    """A folder with sessiond.conf pointing at session.env in the same folder."""

    def __init__(self, env_text=None, conf_extra=""):
        self.dir = tempfile.mkdtemp(prefix="sessionctl-config-")
        self.conf = os.path.join(self.dir, "sessiond.conf")
        self.env_file = os.path.join(self.dir, "session.env")
        with open(self.conf, "w") as f:
            f.write('daemon: { env_file = "%s"; };\n%s' % (self.env_file, conf_extra))
        if env_text is not None:
            self.write_env(env_text)

    def write_env(self, text):
        with open(self.env_file, "w") as f:
            f.write(text)

    def read_env(self):
        with open(self.env_file) as f:
            return f.read()

    def run(self, *args, env=None, conf=True):
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith("SESSION_") and not k.startswith("SESSIOND_")}
        environ.update(env or {})
        cmd = [SESSIONCTL] + (["-c", self.conf] if conf else []) + list(args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=environ)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        shutil.rmtree(self.dir, ignore_errors=True)


def expect(p, code):
    assert p.returncode == code, "exit %d, expected %d\nstdout: %s\nstderr: %s" % (
        p.returncode, code, p.stdout, p.stderr)
    return p


OPERATOR_FILE = ("# Hand-written; keep this.\n"
                 "\n"
                 "DATABASE_URL=postgres://app@db/app  # not ours\n"
                 "export SESSION_ENVIRONMENT=development\n"
                 "SESSION_CUSTOM_MAX_RETRIES=3\n")


def test_validate_exit_codes():
    with Setup("") as s:
        p = expect(s.run("config", "--validate"), 0)
        assert "configuration is valid" in p.stdout
        s.write_env("SESSION_WARNING_THRESHOLD_SECONDS=86400\n")
        p = expect(s.run("config", "--validate"), 0)
        assert "warning: Warning threshold should be less than idle timeout" in p.stdout
        s.write_env("SESSION_IDLE_TIMEOUT_SECONDS=90000\nSESSION_CLEANUP_BATCH_SIZE=0\n")
        p = expect(s.run("config", "--validate"), 1)
        assert ("error: Idle timeout should be less than session lifetime (timeout.idle_timeout=90000 from env file %s:1, "
                "timeout.session_lifetime=86400 from profile development)" % s.env_file) in p.stdout, p.stdout
        assert "error: Cleanup batch size must be positive (cleanup.batch_size=0 from env file %s:2)" % s.env_file in p.stdout
        assert "configuration is invalid: 2 errors, 0 warnings" in p.stdout
        # --json: the same, for scripts
        p = expect(s.run("--json", "config", "--validate"), 1)
        r = json.loads(p.stdout)
        assert r["valid"] is False
        assert {i["setting"] for i in r["issues"]} == {"timeout.idle_timeout", "cleanup.batch_size"}


def test_parse_errors_name_their_place():
    with Setup("", conf_extra="timeout: {\n  idle_timeout = \"5x\";\n};\ncleanup: { batch_size = 5000000000; };\n") as s:
        p = expect(s.run("config", "--validate"), 1)
        assert '%s:3: timeout.idle_timeout: value "5x" is not a duration' % s.conf in p.stdout, p.stdout
        assert "%s:5: integer 5000000000 does not fit a plain libconfig integer" % s.conf in p.stdout
    with Setup("", conf_extra="timeout: { idle_timeout = ; };\n") as s:
        p = expect(s.run("config", "--validate"), 1)
        assert "%s:2: syntax error" % s.conf in p.stdout, p.stdout
    with Setup("") as s:
        p = expect(s.run("config", "--validate", env={"SESSION_DEBUG_MODE": "", "SESSION_IDLE_TIMOUT_SECONDS": "1"}), 1)
        assert "environment: SESSION_DEBUG_MODE is empty" in p.stdout
        assert "did you mean SESSION_IDLE_TIMEOUT_SECONDS?" in p.stdout


def test_show_and_origins():
    with Setup("SESSION_MAX_CLEANUP_BATCHES=4\n", conf_extra="cleanup: { batch_size = 5; };\n") as s:
        env = {"SESSION_CUSTOM_SPECIAL_MODE": "enabled", "SESSION_ENABLE_ANALYTICS": "false"}
        p = expect(s.run("config", "--show", env=env), 0)
        c = json.loads(p.stdout)
        assert list(c) == ["environment", "debug_mode", "timeout", "cleanup", "sync", "security",
                           "monitoring", "features", "custom", "daemon"]
        assert c["cleanup"]["batch_size"] == 5 and c["cleanup"]["max_batches"] == 4
        assert c["timeout"]["session_lifetime"] == 86400  # the development profile
        assert c["monitoring"]["alerts"]["failure_rate"] == 10.0
        assert c["features"]["analytics"] is False  # the deprecated alias
        assert "SESSION_ENABLE_ANALYTICS is deprecated" in p.stderr
        assert c["custom"] == {"special_mode": "enabled"}
        assert c["daemon"]["env_file"] == s.env_file

        p = expect(s.run("config", "--show", "--origin", env=env), 0)
        o = json.loads(p.stdout)
        assert o["cleanup"]["batch_size"] == {"value": 5, "origin": "%s:2" % s.conf}
        assert o["cleanup"]["max_batches"] == {"value": 4, "origin": "env file %s:1" % s.env_file}
        assert o["timeout"]["session_lifetime"] == {"value": 86400, "origin": "profile development"}
        assert o["timeout"]["absolute_timeout"] == {"value": 604800, "origin": "default"}
        assert o["custom"]["special_mode"] == {"value": "enabled", "origin": "environment"}

        # the environment beats the env file, which beats the file
        p = expect(s.run("--json", "config", "--show", env={"SESSION_MAX_CLEANUP_BATCHES": "6"}), 0)
        assert len(p.stdout.strip().splitlines()) == 1
        assert json.loads(p.stdout)["cleanup"]["max_batches"] == 6


def test_summary():
    with Setup("SESSION_ENVIRONMENT=production\nSESSION_CUSTOM_A=1\n") as s:
        p = expect(s.run("config", "--summary"), 0)
        # features_enabled is the original's mapping, which its test suite checks key by key
        assert json.loads(p.stdout) == {
            "environment": "production", "debug_mode": False, "session_lifetime_hours": 48.0,
            "cleanup_interval_minutes": 60.0,
            "features_enabled": {"cross_tab_sync": True, "platform_switching": True, "monitoring": True,
                                 "security": True},
            "custom_settings_count": 1}
        p = expect(s.run("config", "--summary", env={"SESSION_FEATURE_CROSS_TAB_SYNC": "false",
                                                     "SESSION_ENABLE_PERFORMANCE_MONITORING": "false",
                                                     "SESSION_ENABLE_FINGERPRINTING": "off"}), 0)
        assert json.loads(p.stdout)["features_enabled"] == {
            "cross_tab_sync": False, "platform_switching": True, "monitoring": False, "security": False}


def test_set_env_keeps_every_line():
    with Setup(OPERATOR_FILE) as s:
        os.chmod(s.env_file, 0o640)
        p = expect(s.run("config", "--set-env", "production"), 0)
        assert "SESSION_ENVIRONMENT: development -> production" in p.stdout
        assert s.read_env() == OPERATOR_FILE.replace("export SESSION_ENVIRONMENT=development",
                                                     "export SESSION_ENVIRONMENT=production")
        assert stat.S_IMODE(os.stat(s.env_file).st_mode) == 0o640
        assert sorted(os.listdir(s.dir)) == ["session.env", "sessiond.conf"]  # no temporary left
        summary = json.loads(expect(s.run("config", "--summary"), 0).stdout)
        assert summary["environment"] == "production" and summary["session_lifetime_hours"] == 48.0


def test_set_env_invalid_leaves_file():
    with Setup(OPERATOR_FILE) as s:
        before = os.stat(s.env_file)
        p = expect(s.run("config", "--set-env", "prod"), 1)
        assert "valid names: development, testing, staging, production" in p.stderr
        assert s.read_env() == OPERATOR_FILE
        assert os.stat(s.env_file).st_ino == before.st_ino
        # a result that breaks a rule is not written either
        s.write_env("SESSION_IDLE_TIMEOUT_SECONDS=86400\n")
        p = expect(s.run("config", "--set-env", "testing"), 1)
        assert "Idle timeout should be less than session lifetime" in p.stderr
        assert s.read_env() == "SESSION_IDLE_TIMEOUT_SECONDS=86400\n"


def test_optimize_for():
    with Setup(OPERATOR_FILE) as s:
        p = expect(s.run("config", "--optimize-for", "production"), 0)
        for change in ["SESSION_ENVIRONMENT: development -> production",
                       "SESSION_LIFETIME_SECONDS: 86400 -> 172800",
                       "SESSION_CLEANUP_INTERVAL_SECONDS: 900 -> 3600",
                       "SESSION_CLEANUP_BATCH_SIZE: 100 -> 200",
                       "SESSION_MAX_CLEANUP_BATCHES: 10 -> 20",
                       "SESSION_DEBUG_MODE: true -> false"]:
            assert change in p.stdout, p.stdout
        text = s.read_env()
        assert text.startswith(OPERATOR_FILE.replace("=development", "=production"))
        o = json.loads(expect(s.run("config", "--show", "--origin"), 0).stdout)
        assert o["cleanup"]["batch_size"]["value"] == 200
        assert o["cleanup"]["batch_size"]["origin"].startswith("env file %s:" % s.env_file)
        # twice: nothing to change
        p = expect(s.run("config", "--optimize-for", "production"), 0)
        assert "nothing changed" in p.stdout
        assert s.read_env() == text
    # Already production by the environment line alone: the profile's values
    # are in effect, so writing them out explicitly changes none of them.
    with Setup("SESSION_ENVIRONMENT=production\nSESSION_CLEANUP_BATCH_SIZE=50\n") as s:
        p = expect(s.run("config", "--optimize-for", "production"), 0)
        assert "SESSION_CLEANUP_BATCH_SIZE: 50 -> 200" in p.stdout, p.stdout
        for unchanged in ("SESSION_MAX_CLEANUP_BATCHES", "SESSION_LIFETIME_SECONDS", "SESSION_ENVIRONMENT",
                          "SESSION_CLEANUP_INTERVAL_SECONDS", "SESSION_DEBUG_MODE"):
            assert unchanged not in p.stdout, p.stdout
        assert " -> " not in p.stdout.replace("SESSION_CLEANUP_BATCH_SIZE: 50 -> 200", ""), p.stdout
        assert "lines written with the value already in effect" in p.stdout, p.stdout
        assert "SESSION_MAX_CLEANUP_BATCHES=20\n" in s.read_env()


def test_read_only_and_missing_env_file():
    with Setup(OPERATOR_FILE) as s:
        os.chmod(s.env_file, 0o444)
        p = expect(s.run("config", "--set-env", "staging"), 1)
        assert "read-only" in p.stderr
        assert s.read_env() == OPERATOR_FILE
        os.chmod(s.env_file, 0o644)
    with Setup(None) as s:
        p = expect(s.run("config", "--optimize-for", "staging"), 1)
        assert "%s does not exist" % s.env_file in p.stderr
        assert not os.path.exists(s.env_file)


def test_env_file_from_environment():
    with Setup(OPERATOR_FILE) as s:
        other = os.path.join(s.dir, "other.env")
        with open(other, "w") as f:
            f.write("# other\n")
        expect(s.run("config", "--set-env", "staging", env={"SESSIOND_ENV_FILE": other}), 0)
        with open(other) as f:
            assert f.read() == "# other\nSESSION_ENVIRONMENT=staging\n"
        assert s.read_env() == OPERATOR_FILE


def test_template_round_trip():
    with Setup("") as s:
        reference = json.loads(expect(s.run("config", "--show"), 0).stdout)
        # conf: used as the configuration file
        conf = os.path.join(s.dir, "template.conf")
        expect(s.run("config", "--generate-template", "--format", "conf", "--output", conf), 0)
        # (its env file is /etc/sessiond/session.env: point it at nothing,
        # so that this machine's /etc stays out of the test)
        nothing = {"SESSIOND_ENV_FILE": os.path.join(s.dir, "none.env")}
        shown = json.loads(expect(s.run("-c", conf, "config", "--show", conf=False, env=nothing), 0).stdout)
        assert shown == dict(reference, daemon=dict(reference["daemon"], env_file=nothing["SESSIOND_ENV_FILE"]))
        p = expect(s.run("-c", conf, "config", "--validate", conf=False, env=nothing), 0)
        assert p.stdout == "configuration is valid\n"
        # env: used as the env file
        expect(s.run("config", "--generate-template", "--output", s.env_file), 0)
        assert json.loads(expect(s.run("config", "--show"), 0).stdout) == reference
        p = expect(s.run("config", "--generate-template"), 0)
        assert p.stdout == s.read_env()
        # the shipped files are the generator's output
        root = os.environ.get("MESON_SOURCE_ROOT")
        if root:
            with open(os.path.join(root, "conf", "sessiond.conf")) as f:
                assert f.read() == expect(s.run("config", "--generate-template", "--format", "conf"), 0).stdout
            with open(os.path.join(root, "conf", "session.env.example")) as f:
                assert f.read() == p.stdout


def test_max_sessions_setting():
    """daemon.max_sessions (issue 16): a default for a large site, only in the
    file, 1 .. 64000000 (the daemon's session handles)."""
    with Setup("") as s:
        o = json.loads(expect(s.run("config", "--show", "--origin"), 0).stdout)
        assert o["daemon"]["max_sessions"] == {"value": 10000000, "origin": "default"}, o["daemon"]
    with Setup("") as s:
        # The file's daemon group holds env_file already: write it whole.
        with open(s.conf, "w") as f:
            f.write('daemon: { env_file = "%s"; max_sessions = 5; };\n' % s.env_file)
        o = json.loads(expect(s.run("config", "--show", "--origin"), 0).stdout)
        assert o["daemon"]["max_sessions"] == {"value": 5, "origin": "%s:1" % s.conf}, o["daemon"]
        for value, message in (("0", "daemon.max_sessions must be positive (daemon.max_sessions=0 from %s:1)"),
                               ("64000001", "daemon.max_sessions must be at most 64000000 (the daemon's limit on "
                                            "sessions held at once) (daemon.max_sessions=64000001 from %s:1)")):
            with open(s.conf, "w") as f:
                f.write('daemon: { env_file = "%s"; max_sessions = %s; };\n' % (s.env_file, value))
            p = expect(s.run("config", "--validate"), 1)
            assert "error: " + message % s.conf in p.stdout, p.stdout
        with open(s.conf, "w") as f:
            f.write('daemon: { env_file = "%s"; max_sessions = 64000000; };\n' % s.env_file)
        expect(s.run("config", "--validate"), 0)
        # Only in the file: there is no variable for it.
        assert "daemon.max_sessions" in s.run("config", "--generate-template", "--format", "env").stdout
        s.write_env("SESSION_MAX_SESSIONS=5\n")
        p = expect(s.run("config", "--show"), 0)
        assert json.loads(p.stdout)["daemon"]["max_sessions"] == 64000000
        assert "SESSION_MAX_SESSIONS" in p.stderr, p.stderr


def test_postgres_url_password_never_shown():
    """daemon.postgres_url (issue 11): the password of the connection string is
    never printed, in either of libpq's forms, from the file, the env file or
    the environment, used or ignored, readable by libpq or not: not by
    `sessionctl config` (--show, --origin, --summary, --validate), not by
    `sessiond --check-config`. It is shown as ***."""
    secret = "s3cr3t-Pa55"
    uri = "postgresql://app:%s@/sessions?host=/run/postgresql" % secret
    uri_shown = "postgresql://app:***@/sessions?host=/run/postgresql"
    keywords = "host=/run/postgresql dbname=sessions user=app password='%s and more'" % secret
    keywords_shown = "host=/run/postgresql dbname=sessions user=app password='***'"
    broken = "host=/run/postgresql %s" % secret

    def outputs(s, env):
        """Every command that prints the configuration: {name: process}."""
        out = {}
        for args in (["--show"], ["--show", "--origin"], ["--summary"], ["--validate"]):
            out[" ".join(args)] = s.run("config", *args, env=env)
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith("SESSION_") and not k.startswith("SESSIOND_")}
        environ.update(env)
        out["sessiond --check-config"] = subprocess.run([SESSIOND, "-c", s.conf, "--check-config"],
                                                        capture_output=True, text=True, timeout=TIMEOUT,
                                                        env=environ)
        for name, p in out.items():
            assert "s3cr3t" not in p.stdout + p.stderr, (name, p.stdout, p.stderr)
        return out

    with Setup("") as s:
        for source in ("environment", "env file", "file"):
            for value, shown in ((uri, uri_shown), (keywords, keywords_shown)):
                env = {}
                s.write_env("")
                with open(s.conf, "w") as f:
                    f.write('daemon: { env_file = "%s"; };\n' % s.env_file)
                if source == "environment":
                    env["SESSIOND_POSTGRES_URL"] = value
                    origin = "environment"
                elif source == "env file":
                    s.write_env("SESSIOND_POSTGRES_URL=%s\n" % json.dumps(value))
                    origin = "env file %s:1" % s.env_file
                else:
                    with open(s.conf, "w") as f:
                        f.write('daemon: { env_file = "%s"; postgres_url = %s; };\n' % (s.env_file, json.dumps(value)))
                    origin = "%s:1" % s.conf
                for distributed in (False, True):
                    env["SESSION_FEATURE_DISTRIBUTED"] = "true" if distributed else "false"
                    out = outputs(s, env)
                    where = (source, value, distributed)
                    for name, p in out.items():
                        expect(p, 0)
                    assert json.loads(out["--show"].stdout)["daemon"]["postgres_url"] == shown, where
                    assert json.loads(out["--show --origin"].stdout)["daemon"]["postgres_url"] == \
                        {"value": shown, "origin": origin}, where
                    validate = out["--validate"].stdout + out["--validate"].stderr
                    if not distributed:
                        assert "warning: daemon.postgres_url is ignored while features.distributed is false" in \
                            validate and "daemon.postgres_url=%s from %s" % (shown, origin) in validate, \
                            (where, validate)
                    else:
                        assert "daemon.postgres_url" not in validate, (where, validate)

        # Not readable by libpq: an error naming the setting (a warning when unused).
        s.write_env("")
        with open(s.conf, "w") as f:
            f.write('daemon: { env_file = "%s"; };\n' % s.env_file)
        out = outputs(s, {"SESSIOND_POSTGRES_URL": broken, "SESSION_FEATURE_DISTRIBUTED": "yes"})
        for name in ("--validate", "sessiond --check-config"):
            p = expect(out[name], 1)
            assert "error: daemon.postgres_url is not a connection string or URI that libpq can read: " \
                "missing \"=\" after \"***\" in connection info string (daemon.postgres_url=host=/run/postgresql *** " \
                "from environment)" in p.stdout + p.stderr, (name, p.stdout, p.stderr)
        assert json.loads(expect(out["--show"], 0).stdout)["daemon"]["postgres_url"] == "host=/run/postgresql ***"
        p = expect(outputs(s, {"SESSIOND_POSTGRES_URL": broken})["--validate"], 0)
        assert "warning: daemon.postgres_url is not a connection string" in p.stdout + p.stderr, p.stdout


def test_usage():
    with Setup("") as s:
        for args in [[], ["--show", "--summary"], ["--origin"], ["--validate", "--output", "x"],
                     ["--generate-template", "--format", "yaml"], ["--bogus"], ["--set-env"], ["--validate", "x"]]:
            expect(s.run("config", *args), 2)
        assert "--generate-template" in expect(s.run("config", "--help"), 0).stdout


run_tests([
    test_validate_exit_codes,
    test_parse_errors_name_their_place,
    test_show_and_origins,
    test_summary,
    test_set_env_keeps_every_line,
    test_set_env_invalid_leaves_file,
    test_optimize_for,
    test_read_only_and_missing_env_file,
    test_env_file_from_environment,
    test_template_round_trip,
    test_postgres_url_password_never_shown,
    test_max_sessions_setting,
    test_usage,
])
