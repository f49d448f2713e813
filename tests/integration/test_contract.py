"""Contract audit: the names of DESIGN sections 2-6 against the real binaries.

Each test pins one part of the product contract that clients and operators
rely on by name: the libconfig paths and variables of table 2.3 (as
`sessionctl config --show` prints them), the profiles of table 2.4, the
seven validation messages of 2.5 word for word, the scale-out flags and
what they need (section 8), what GetClientConfig serves a browser script, and
FeatureDisabled for every feature flag that gates a method. The tables are
copied here on purpose: a rename in the code must fail this file.
"""

import json
import os
import subprocess
import tempfile

from harness import SESSIOND, SESSIONCTL, Daemon, run_tests

S = "io.sessiond.Session."
A = "io.sessiond.Admin."

# DESIGN 2.3: libconfig path, variable (None: file only), default.
SETTINGS = [
    ("environment", "SESSION_ENVIRONMENT", "development"),
    ("debug_mode", "SESSION_DEBUG_MODE", False),
    ("timeout.session_lifetime", "SESSION_LIFETIME_SECONDS", 172800),
    ("timeout.idle_timeout", "SESSION_IDLE_TIMEOUT_SECONDS", 86400),
    ("timeout.absolute_timeout", "SESSION_ABSOLUTE_TIMEOUT_SECONDS", 604800),
    ("timeout.expiration_grace", "SESSION_EXPIRATION_GRACE_SECONDS", 300),
    ("timeout.cleanup_grace", "SESSION_CLEANUP_GRACE_SECONDS", 600),
    ("timeout.warning_threshold", "SESSION_WARNING_THRESHOLD_SECONDS", 900),
    ("cleanup.interval", "SESSION_CLEANUP_INTERVAL_SECONDS", 1800),
    ("cleanup.batch_interval", "SESSION_BATCH_CLEANUP_INTERVAL_SECONDS", 21600),
    ("cleanup.deep_interval", "SESSION_DEEP_CLEANUP_INTERVAL_SECONDS", 86400),
    ("cleanup.batch_size", "SESSION_CLEANUP_BATCH_SIZE", 100),
    ("cleanup.max_batches", "SESSION_MAX_CLEANUP_BATCHES", 10),
    ("cleanup.max_expired_threshold", "SESSION_MAX_EXPIRED_THRESHOLD", 1000),
    ("cleanup.trigger_threshold", "SESSION_CLEANUP_TRIGGER_THRESHOLD", 500),
    ("cleanup.expired_retention_days", "SESSION_EXPIRED_RETENTION_DAYS", 7),
    ("cleanup.audit_retention_days", "SESSION_AUDIT_RETENTION_DAYS", 30),
    ("sync.check_interval", "SESSION_SYNC_CHECK_INTERVAL_SECONDS", 2),
    ("sync.heartbeat_interval", "SESSION_HEARTBEAT_INTERVAL_SECONDS", 30),
    ("sync.timeout", "SESSION_SYNC_TIMEOUT_SECONDS", 5),
    ("sync.tab_response_timeout", "SESSION_TAB_RESPONSE_TIMEOUT_SECONDS", 3),
    ("sync.localstorage_prefix", "SESSION_LOCALSTORAGE_PREFIX", "vedfolnir_session_"),
    ("sync.max_data_size", "SESSION_MAX_SYNC_DATA_SIZE", 1024),
    ("security.fingerprinting", "SESSION_ENABLE_FINGERPRINTING", True),
    ("security.suspicious_detection", "SESSION_ENABLE_SUSPICIOUS_DETECTION", True),
    ("security.audit_logging", "SESSION_ENABLE_AUDIT_LOGGING", True),
    ("security.max_concurrent_per_user", "SESSION_MAX_CONCURRENT_PER_USER", 5),
    ("security.suspicious_activity_threshold", "SESSION_SUSPICIOUS_ACTIVITY_THRESHOLD", 10),
    ("security.max_platform_switches_per_hour", "SESSION_MAX_PLATFORM_SWITCHES_PER_HOUR", 50),
    ("security.check_interval", "SESSION_SECURITY_CHECK_INTERVAL_SECONDS", 300),
    ("monitoring.performance_monitoring", "SESSION_ENABLE_PERFORMANCE_MONITORING", True),
    ("monitoring.metrics_collection", "SESSION_ENABLE_METRICS_COLLECTION", True),
    ("monitoring.health_checks", "SESSION_ENABLE_HEALTH_CHECKS", True),
    ("monitoring.metrics_interval", "SESSION_METRICS_INTERVAL_SECONDS", 60),
    ("monitoring.health_check_interval", "SESSION_HEALTH_CHECK_INTERVAL_SECONDS", 300),
    ("monitoring.metrics_buffer_size", "SESSION_METRICS_BUFFER_SIZE", 1000),
    ("monitoring.events_buffer_size", "SESSION_EVENTS_BUFFER_SIZE", 500),
    ("monitoring.alerts.creation_rate", "SESSION_ALERT_CREATION_RATE", 100.0),
    ("monitoring.alerts.failure_rate", "SESSION_ALERT_FAILURE_RATE", 10.0),
    ("monitoring.alerts.avg_duration", "SESSION_ALERT_AVG_DURATION", 3600.0),
    ("monitoring.alerts.concurrent_sessions", "SESSION_ALERT_CONCURRENT_SESSIONS", 1000.0),
    ("monitoring.alerts.suspicious_rate", "SESSION_ALERT_SUSPICIOUS_RATE", 5.0),
    ("features.cross_tab_sync", "SESSION_FEATURE_CROSS_TAB_SYNC", True),
    ("features.platform_switching", "SESSION_FEATURE_PLATFORM_SWITCHING", True),
    ("features.persistence", "SESSION_FEATURE_PERSISTENCE", True),
    ("features.optimistic_ui", "SESSION_FEATURE_OPTIMISTIC_UI", True),
    ("features.background_cleanup", "SESSION_FEATURE_BACKGROUND_CLEANUP", True),
    ("features.analytics", "SESSION_FEATURE_ANALYTICS", True),
    ("features.clustering", "SESSION_FEATURE_CLUSTERING", False),
    ("features.distributed", "SESSION_FEATURE_DISTRIBUTED", False),
    ("features.caching", "SESSION_FEATURE_CACHING", False),
    ("daemon.socket_path", "SESSIOND_SOCKET", "/run/sessiond/sessiond.sock"),
    ("daemon.database_path", "SESSIOND_DATABASE", "/var/lib/sessiond/sessions.db"),
    ("daemon.env_file", "SESSIOND_ENV_FILE", "/etc/sessiond/session.env"),
    ("daemon.admin_group", None, "sessiond-admin"),
    ("daemon.synchronous", None, "normal"),
    ("daemon.max_connections", None, 1024),
    ("daemon.max_message_size", None, 65536),
    ("daemon.metrics_listen", "SESSIOND_METRICS_LISTEN", ""),
    ("daemon.max_sessions", None, 10000000),
    ("daemon.postgres_url", "SESSIOND_POSTGRES_URL", ""),
    ("daemon.key_file", "SESSIOND_KEY_FILE", ""),
]

FEATURES = [p.split(".")[1] for p, _, _ in SETTINGS if p.startswith("features.")]
SCALE_OUT = ["clustering", "distributed", "caching"]

# DESIGN 2.4: None is "default".
PROFILE_PATHS = ["timeout.session_lifetime", "timeout.idle_timeout", "cleanup.interval",
                 "cleanup.batch_size", "cleanup.max_batches",
                 "monitoring.performance_monitoring", "features.analytics", "debug_mode"]
PROFILES = {
    "development": [86400, None, 900, None, None, True, True, True],
    "testing": [1800, 1800, 300, 10, None, False, False, True],
    "staging": [172800, None, 1800, None, None, True, True, False],
    "production": [172800, None, 3600, 200, 20, True, True, False],
}

# DESIGN 2.5: the guide's seven messages, each with a setting that breaks it.
SEVEN = [
    ("Idle timeout should be less than session lifetime", {"SESSION_IDLE_TIMEOUT_SECONDS": "200000"}),
    ("Expiration grace period should be less than idle timeout",
     {"SESSION_EXPIRATION_GRACE_SECONDS": "90000", "SESSION_CLEANUP_GRACE_SECONDS": "90000"}),
    ("Cleanup batch size must be positive", {"SESSION_CLEANUP_BATCH_SIZE": "0"}),
    ("Cleanup interval should be less than batch cleanup interval",
     {"SESSION_CLEANUP_INTERVAL_SECONDS": "30000"}),
    ("Sync timeout should be less than heartbeat interval", {"SESSION_SYNC_TIMEOUT_SECONDS": "40"}),
    ("Max concurrent sessions per user must be positive", {"SESSION_MAX_CONCURRENT_PER_USER": "0"}),
    ("Metrics buffer size must be positive", {"SESSION_METRICS_BUFFER_SIZE": "0"}),
]


def lookup(d, path):
    for part in path.split("."):
        d = d[part]
    return d


def leaves(d, prefix=""):
    out = set()
    for k, v in d.items():
        if isinstance(v, dict) and k != "custom":
            out |= leaves(v, prefix + k + ".")
        else:
            out.add(prefix + k)
    return out


def config(*args, env=None):
    """sessionctl config ... on the built-in defaults plus env (no file, no env file)."""
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SESSIOND_ENV_FILE": "/nonexistent/session.env"}
    e.update(env or {})
    return subprocess.run([SESSIONCTL, "-c", "/dev/null", "config"] + list(args),
                          capture_output=True, text=True, env=e, timeout=30)


def show(env=None):
    p = config("--show", env=env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_show_keys_are_the_libconfig_paths():
    # staging changes nothing of 2.3 but the environment name and cleanup.interval (1800 = default).
    cfg = show({"SESSION_ENVIRONMENT": "staging"})
    paths = {p for p, _, _ in SETTINGS}
    assert leaves(cfg) == paths | {"custom"}, sorted(leaves(cfg) ^ (paths | {"custom"}))
    assert cfg["custom"] == {}
    for path, _, default in SETTINGS:
        value = lookup(cfg, path)
        if path == "environment":
            assert value == "staging"
        elif path == "daemon.env_file":
            assert value == "/nonexistent/session.env"  # set by config(); its default is checked below
        else:
            assert value == default and type(value) is type(default), (path, value, default)
    if not os.path.exists("/etc/sessiond/session.env"):
        p = subprocess.run([SESSIONCTL, "-c", "/dev/null", "config", "--show"], capture_output=True, text=True,
                           env={"PATH": os.environ.get("PATH", "")}, timeout=30)
        assert json.loads(p.stdout)["daemon"]["env_file"] == "/etc/sessiond/session.env", p.stdout


def test_each_variable_sets_its_path():
    base = {"SESSION_ENVIRONMENT": "staging"}
    defaults = show(base)
    for path, var, _ in SETTINGS:
        if var is None or path == "environment" or path.startswith("features.") and path[9:] in SCALE_OUT:
            continue
        old = lookup(defaults, path)
        if isinstance(old, bool):
            text, new = ("false", False) if old else ("true", True)
        elif isinstance(old, float):
            text, new = "7.5", 7.5
        elif isinstance(old, int):
            text, new = str(old + 1), old + 1
        elif path == "daemon.postgres_url":
            text = new = "host=/run/postgresql dbname=contract"  # no password: shown as written
        else:
            text = new = "/tmp/contract-" + path
        env = dict(base)
        env[var] = text
        p = config("--show", env=env)
        assert p.returncode == 0, (var, p.stderr)
        assert lookup(json.loads(p.stdout), path) == new, (var, path)
        assert "unknown" not in p.stderr and "deprecated" not in p.stderr, (var, p.stderr)


def test_profiles_table():
    defaults = {p: d for p, _, d in SETTINGS}
    for name, values in PROFILES.items():
        env = {"SESSION_ENVIRONMENT": name}
        cfg = show(env)
        assert cfg["environment"] == name
        for path, want in zip(PROFILE_PATHS, values):
            want = defaults[path] if want is None else want
            assert lookup(cfg, path) == want, (name, path, lookup(cfg, path), want)
        p = config("--validate", env=env)
        assert p.returncode == 0, (name, p.stdout, p.stderr)
        # An explicit value beats the profile.
        env["SESSION_CLEANUP_BATCH_SIZE"] = "50"
        assert show(env)["cleanup"]["batch_size"] == 50, name
    p = config("--validate", env={"SESSION_ENVIRONMENT": "qa"})
    assert p.returncode == 1
    assert "development, testing, staging, production" in p.stdout + p.stderr


def test_seven_messages_word_for_word():
    for message, env in SEVEN:
        env = dict(env, SESSION_ENVIRONMENT="staging")
        p = config("--validate", env=env)
        out = p.stdout + p.stderr
        assert p.returncode == 1, (message, out)
        assert "error: " + message + " (" in out, (message, out)


URL = "postgresql://app:s3cr3t@/sessions?host=/run/postgresql"


def check_config(env):
    return subprocess.run([SESSIOND, "-c", "/dev/null", "--check-config"], capture_output=True, text=True,
                          env=dict(env, PATH=os.environ.get("PATH", ""), SESSIOND_ENV_FILE="/nonexistent/session.env"),
                          timeout=30)


def test_scale_out_flags():
    # DESIGN 8: clustering and caching need distributed, distributed needs daemon.postgres_url.
    for flag in ("clustering", "caching"):
        env = {"SESSION_FEATURE_" + flag.upper(): "true"}
        p = config("--validate", env=env)
        assert p.returncode == 1 and "features.%s needs features.distributed: it works over the shared " \
            "PostgreSQL store" % flag in p.stdout + p.stderr, (flag, p.stdout, p.stderr)
        assert check_config(env).returncode == 1, flag
    env = {"SESSION_FEATURE_DISTRIBUTED": "true", "SESSION_FEATURE_CACHING": "true"}
    p = config("--validate", env=env)
    assert p.returncode == 1 and "features.distributed needs daemon.postgres_url (SESSIOND_POSTGRES_URL)" \
        in p.stdout + p.stderr, (p.stdout, p.stderr)
    assert "features.caching" not in p.stdout + p.stderr, p.stdout + p.stderr
    assert check_config(env).returncode == 1
    # With a URL all three validate (the password is never printed).
    env = {"SESSION_FEATURE_DISTRIBUTED": "1", "SESSION_FEATURE_CLUSTERING": "1", "SESSION_FEATURE_CACHING": "1",
           "SESSIOND_POSTGRES_URL": URL}
    for p in (config("--validate", env=env), check_config(env)):
        assert p.returncode == 0 and "s3cr3t" not in p.stdout + p.stderr, (p.stdout, p.stderr)
    cfg = show(env)
    assert cfg["features"]["distributed"] is True
    assert cfg["daemon"]["postgres_url"] == "postgresql://app:***@/sessions?host=/run/postgresql", cfg["daemon"]

    # A running daemon refuses a flag without what it needs on reload and keeps the old configuration.
    with Daemon() as d:
        d.write_config({"features.caching": True})
        p = d.sessionctl("reload", check=1)
        assert "features.caching needs features.distributed" in p.stdout + p.stderr, p.stderr
        with d.connect() as c:
            assert c.call(A + "GetConfig")["config"]["features"]["caching"] is False
            err, params = c.call_error(A + "Reload")
            assert err == A + "ConfigInvalid" and any("features.caching" in i for i in params["issues"]), params
        # A valid distributed configuration is taken, and the store changes at the next start.
        d.write_config({"features.caching": False, "features.distributed": True, "daemon.postgres_url": URL})
        p = d.sessionctl("reload", check=0)
        with d.connect() as c:
            assert c.call(A + "GetConfig")["config"]["features"]["distributed"] is True
        log = d.read_log()
        assert "features.distributed changed; the store changes at the next start" in log, log
        assert "s3cr3t" not in log, log
    # A daemon does not start with one: invalid, or valid but its PostgreSQL out of reach (named
    # without its password, and no SQLite database made instead).
    for settings, message in [({"features.clustering": True}, "features.clustering needs features.distributed"),
                              ({"features.distributed": True, "daemon.postgres_url": URL},
                               "postgresql://app:***@/sessions?host=/run/postgresql")]:
        tmp = tempfile.mkdtemp(prefix="sessiond-contract-")
        try:
            d = Daemon(settings, tmpdir=tmp, wait=False)
            try:
                assert d.proc.wait(timeout=30) == 1
                log = d.read_log()
                assert message in log and "s3cr3t" not in log, log
                assert not os.path.exists(d.database), "the store was opened"
            finally:
                d.cleanup()
        finally:
            subprocess.run(["rm", "-rf", tmp])


def test_client_config():
    with Daemon({"sync.check_interval": 4, "sync.localstorage_prefix": "app_", "timeout.warning_threshold": 60,
                 "features.optimistic_ui": False}) as d, d.connect() as c:
        client = c.call(S + "GetClientConfig")["config"]
        full = c.call(A + "GetConfig")["config"]
        assert set(client) == {"sync", "warning_threshold", "features"}, client
        assert client["sync"] == full["sync"], (client["sync"], full["sync"])
        assert client["sync"]["check_interval"] == 4 and client["sync"]["localstorage_prefix"] == "app_"
        assert client["warning_threshold"] == 60
        assert set(client["features"]) == set(FEATURES), client["features"]
        assert client["features"] == full["features"], (client["features"], full["features"])
        assert client["features"]["optimistic_ui"] is False


def test_feature_disabled():
    def disabled(c, method, params, feature):
        err, p = c.call_error(method, params)
        assert err == S + "FeatureDisabled" and p == {"feature": feature}, (method, err, p)

    with Daemon({"features.cross_tab_sync": False, "features.platform_switching": False,
                 "features.analytics": False}) as d, d.connect() as c:
        token = c.call(S + "Create", {"user_id": "alice"})["token"]
        disabled(c, S + "Create", {"user_id": "alice", "sync_data": "x"}, "cross_tab_sync")
        disabled(c, S + "GetSyncState", {"token": token}, "cross_tab_sync")
        disabled(c, S + "SetSyncState", {"token": token, "data": "x"}, "cross_tab_sync")
        disabled(c, S + "SwitchPlatform", {"token": token, "platform_id": "web"}, "platform_switching")
        disabled(c, A + "Analytics", {}, "analytics")
        p = d.sessionctl("analytics", check=1)
        assert "FeatureDisabled" in p.stderr, p.stderr
    # The same calls work with the features on (the defaults of 2.3).
    with Daemon({"features.analytics": True}) as d, d.connect() as c:
        token = c.call(S + "Create", {"user_id": "alice", "sync_data": "x"})["token"]
        assert c.call(S + "GetSyncState", {"token": token}) == {"version": 1, "data": "x"}
        assert c.call(S + "SetSyncState", {"token": token, "data": "y", "expected_version": 1})["version"] == 2
        assert c.call(S + "SwitchPlatform", {"token": token, "platform_id": "web"})["session"]["platform_id"] == "web"
        assert isinstance(c.call(A + "Analytics")["analytics"], dict)


def test_terminate_ended_session():
    with Daemon() as d, d.connect() as c:
        sid = c.call(S + "Create", {"user_id": "bob"})["session"]["id"]
        d.sessionctl("terminate", sid, check=0)
        p = d.sessionctl("terminate", sid, check=1)
        assert "session '%s' already ended (terminated)" % sid in p.stderr, p.stderr
        shown = d.sessionctl("show", sid, check=0).stdout
        assert "end_reason: terminated" in shown, shown


run_tests([
    test_show_keys_are_the_libconfig_paths,
    test_each_variable_sets_its_path,
    test_profiles_table,
    test_seven_messages_word_for_word,
    test_scale_out_flags,
    test_client_config,
    test_feature_disabled,
    test_terminate_ended_session,
])
