"""The env file handed over twice: by systemd's EnvironmentFile= as process
environment, and read by the daemon itself. A reload must still take an
edited line of the env file, while a variable set differently in the
environment keeps winning (DESIGN 2.1: the environment beats the env file).
"""

import signal

from harness import Daemon, run_tests, wait_for


def idle(d):
    return d.call("io.sessiond.Admin.GetConfig")["config"]["timeout"]["idle_timeout"]


def lifetime(d):
    return d.call("io.sessiond.Admin.GetConfig")["config"]["timeout"]["session_lifetime"]


def test_env_file_copy_in_environment_follows_reload():
    with Daemon(wait=False) as d:
        d.stop(expect=None)
        with open(d.env_file, "w") as f:
            f.write("# as systemd would also load it\nSESSION_IDLE_TIMEOUT_SECONDS=1000\n")
        d.extra_env = {"SESSION_IDLE_TIMEOUT_SECONDS": "1000"}
        d.start()
        assert idle(d) == 1000
        with open(d.env_file, "w") as f:
            f.write("SESSION_IDLE_TIMEOUT_SECONDS=1200\n")
        d.signal(signal.SIGHUP)
        wait_for(lambda: idle(d) == 1200, what="the edited env file to take effect")
        d.stop()


def test_environment_that_differs_still_wins():
    with Daemon(wait=False) as d:
        d.stop(expect=None)
        with open(d.env_file, "w") as f:
            f.write("SESSION_LIFETIME_SECONDS=3000\n")
        d.extra_env = {"SESSION_LIFETIME_SECONDS": "2500"}
        d.start()
        assert lifetime(d) == 2500
        with open(d.env_file, "w") as f:
            f.write("SESSION_LIFETIME_SECONDS=4000\n")
        d.call("io.sessiond.Admin.Reload")
        assert lifetime(d) == 2500
        d.stop()


run_tests([test_env_file_copy_in_environment_follows_reload, test_environment_that_differs_still_wins])
