"""Shared by the web-application tests (python_client, flask, browser):
makes lib/python importable and says which daemon settings keep the sync
and timeout rules of the configuration valid with short timeouts."""

import os
import sys

SOURCE = os.environ.get("MESON_SOURCE_ROOT") or os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(SOURCE, "lib", "python"))

# A 3-second idle timeout with its grace and warning, valid under DESIGN 2.5
# (grace < idle < lifetime <= absolute, cleanup grace >= expiration grace).
SHORT_IDLE = {
    "timeout.idle_timeout": 3,
    "timeout.session_lifetime": 60,
    "timeout.absolute_timeout": 120,
    "timeout.expiration_grace": 1,
    "timeout.cleanup_grace": 1,
    "timeout.warning_threshold": 2,
}

UA = "Mozilla/5.0 (X11; Linux x86_64) sessiond-test"
