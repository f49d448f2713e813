#!/usr/bin/python3
"""The example app: sessiond from a Flask app and a browser.

A login form, two pages, logout and logout everywhere, an expiry banner,
and a note shared live by every tab of the browser (session-sync.js). The
Flask session (a visit counter, the last page seen) lives in the daemon.

Run it with tools/example-app/run (which starts the daemon too), or, with a
daemon already running: SESSIOND_SOCKET=... python3 tools/example-app/app.py.
The demo users and their passwords are in USERS.
"""

import argparse
import hmac
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# From the source tree, the package is in lib/python; once installed it is
# on Debian's Python path already.
sys.path.insert(1, os.path.join(HERE, "..", "..", "lib", "python"))

import flask  # noqa: E402

import sessiond  # noqa: E402
import sessiond.flask as sf  # noqa: E402

USERS = {"alice": "wonderland", "bob": "builder"}
PLATFORMS = ["web", "mobile", "admin"]
OPEN_ENDPOINTS = {"login", "static"}


def create_app(socket_path=None, trusted_proxies=0):
    app = flask.Flask(__name__, template_folder=os.path.join(HERE, "templates"))
    iface = sf.SessionInterface(socket_path=socket_path, trusted_proxies=trusted_proxies)
    iface.init_app(app)  # sessions, the /session endpoints, the ended hook

    @iface.ended_handler
    def session_ended(reason):
        if flask.request.blueprint == "sessiond":
            return None  # the browser script reads the 401 itself
        return flask.redirect(flask.url_for("login", reason=reason))

    @app.before_request
    def require_login():
        s = flask.session
        if s.user_id is None and flask.request.endpoint not in OPEN_ENDPOINTS \
                and flask.request.blueprint != "sessiond":
            return flask.redirect(flask.url_for("login"))
        if s.user_id is not None and s.data_available and flask.request.blueprint != "sessiond":
            s["visits"] = s.get("visits", 0) + 1  # Flask session data, kept by the daemon
        return None

    @app.route("/login", methods=["GET", "POST"])
    def login():
        error = None
        if flask.request.method == "POST":
            user = flask.request.form.get("username", "")
            password = flask.request.form.get("password", "")
            if user in USERS and hmac.compare_digest(USERS[user], password):
                sf.login(user, platform_id="web")
                return flask.redirect(flask.url_for("home"))
            error = "Wrong user name or password."
        reason = flask.request.args.get("reason")
        return flask.render_template("login.html", error=error, reason=reason, users=USERS)

    @app.get("/")
    def home():
        s = flask.session
        return flask.render_template("home.html", s=s,
                                     sessions=iface.client.list_user(s.user_id)["sessions"])

    @app.route("/settings", methods=["GET", "POST"])
    def settings():
        message = None
        if flask.request.method == "POST":
            try:
                sf.switch_platform(flask.request.form["platform"])
                message = "Switched to %s." % flask.session.platform_id
            except sessiond.RateLimited as e:
                message = "Too many switches: try again in %d s." % e.retry_after
            except sessiond.FeatureDisabled:
                message = "Platform switching is turned off."
        return flask.render_template("settings.html", s=flask.session, platforms=PLATFORMS,
                                     message=message)

    @app.post("/logout")
    def logout():
        sf.logout()
        return flask.redirect(flask.url_for("login", reason="logged_out"))

    @app.post("/logout-everywhere")
    def logout_everywhere():
        sf.logout_everywhere()
        return flask.redirect(flask.url_for("login", reason="logged_out_everywhere"))

    return app


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--socket", help="sessiond's socket (default: $SESSIOND_SOCKET)")
    parser.add_argument("--trusted-proxies", type=int, default=0)
    args = parser.parse_args()
    app = create_app(args.socket, args.trusted_proxies)
    app.run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
