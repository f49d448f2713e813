"""Installation: `meson install` puts every file where Debian expects it.

Two layouts are checked:
- the build under test, installed with `meson install --destdir` into a
  temporary folder (whatever its prefix): every expected file is there, the
  installed programs run, and a C program compiles and links against the
  installed headers and library through `pkg-config libsessiond` pointed at
  the destdir;
- the Debian layout (--prefix=/usr), from a second build folder that is only
  configured, never built: `meson introspect --installed` tells where each
  file would go, and the generated units name /usr/sbin and /etc.
"""

import glob
import json
import os
import shutil
import subprocess
import tempfile

from harness import run_tests

BUILD = os.environ["MESON_BUILD_ROOT"]
SOURCE = os.environ["MESON_SOURCE_ROOT"]
MESON = shutil.which("meson") or "meson"

PUBLIC_HEADERS = ["config.h", "varlink.h", "client.h", "envfile.h"]
MAN_PAGES = ["man8/sessiond.8", "man1/sessionctl.1", "man5/sessiond.conf.5"]


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    if p.returncode != 0:
        raise AssertionError("%s: exit %d\nstdout: %s\nstderr: %s"
                             % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p


def build_options(build):
    opts = json.loads(run([MESON, "introspect", build, "--buildoptions"]).stdout)
    return {o["name"]: o["value"] for o in opts}


def man_pages_expected(opts):
    """The man pages are built when scdoc exists, unless -Dman=disabled."""
    return opts["man"] != "disabled" and shutil.which("scdoc") is not None


def expected_files(opts, systemd_dirs):
    """Absolute install paths (without destdir) that must exist."""
    prefix = opts["prefix"]

    def p(*parts):
        return os.path.join(prefix, *parts)

    unit_dir, sysusers_dir, tmpfiles_dir = systemd_dirs
    files = [
        p(opts["sbindir"], "sessiond"),
        p(opts["bindir"], "sessionctl"),
        p(opts["libdir"], "libsessiond.so"),
        p(opts["libdir"], "pkgconfig", "libsessiond.pc"),
        p(opts["sysconfdir"], "sessiond", "sessiond.conf"),
        os.path.join(unit_dir, "sessiond.service"),
        os.path.join(unit_dir, "sessiond.socket"),
        os.path.join(sysusers_dir, "sessiond.conf"),
        os.path.join(tmpfiles_dir, "sessiond.conf"),
    ]
    files += [p(opts["includedir"], "sessiond", h) for h in PUBLIC_HEADERS]
    if man_pages_expected(opts):
        files += [p(opts["mandir"], m) for m in MAN_PAGES]
    return files


def systemd_dirs_for(prefix):
    """The rule of systemd/meson.build: Debian's directories from systemd.pc
    for --prefix=/usr, PREFIX/lib/... for any other prefix."""
    if prefix == "/usr" and subprocess.run(["pkg-config", "--exists", "systemd"]).returncode == 0:
        def var(name):
            return run(["pkg-config", "--variable=" + name, "systemd"]).stdout.strip()
        return var("systemdsystemunitdir"), var("sysusersdir"), var("tmpfilesdir")
    return (os.path.join(prefix, "lib/systemd/system"), os.path.join(prefix, "lib/sysusers.d"),
            os.path.join(prefix, "lib/tmpfiles.d"))


class Install:
    """`meson install --destdir` of the build under test into a temporary folder."""

    def __init__(self):
        self.destdir = tempfile.mkdtemp(prefix="sessiond-install-")
        run([MESON, "install", "-C", BUILD, "--no-rebuild", "--quiet", "--destdir", self.destdir])
        self.opts = build_options(BUILD)

    def path(self, absolute):
        return os.path.join(self.destdir, absolute.lstrip("/"))

    def libdir(self):
        return self.path(os.path.join(self.opts["prefix"], self.opts["libdir"]))

    def cleanup(self):
        if not os.environ.get("KEEP_TMP"):
            shutil.rmtree(self.destdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.cleanup()


def test_destdir_lists_every_expected_file():
    with Install() as inst:
        missing = [f for f in expected_files(inst.opts, systemd_dirs_for(inst.opts["prefix"]))
                   if not os.path.exists(inst.path(f))]
        assert not missing, "not installed: %s\ninstalled:\n%s" % (
            missing, "\n".join(sorted(os.path.relpath(os.path.join(d, f), inst.destdir)
                                      for d, _, fs in os.walk(inst.destdir) for f in fs)))
        # The library is installed with its versioned names.
        sonames = glob.glob(os.path.join(inst.libdir(), "libsessiond.so.*"))
        assert sonames, "no versioned libsessiond.so.* in " + inst.libdir()
        # The programs are executable by everybody (web apps run sessionctl
        # call as their own user).
        prefix = inst.opts["prefix"]
        for f in (os.path.join(prefix, inst.opts["sbindir"], "sessiond"),
                  os.path.join(prefix, inst.opts["bindir"], "sessionctl")):
            st = os.stat(inst.path(f))
            assert st.st_mode & 0o111 == 0o111, "%s is not executable by all" % f


def test_installed_programs_run():
    with Install() as inst:
        prefix = inst.opts["prefix"]
        env = dict(os.environ, LD_LIBRARY_PATH=inst.libdir())
        sessiond = inst.path(os.path.join(prefix, inst.opts["sbindir"], "sessiond"))
        sessionctl = inst.path(os.path.join(prefix, inst.opts["bindir"], "sessionctl"))
        out = run([sessiond, "--version"], env=env).stdout
        version = json.loads(run([MESON, "introspect", BUILD, "--projectinfo"]).stdout)["version"]
        assert version in out, "sessiond --version printed %r, expected %s" % (out, version)
        # The installed configuration is valid as installed: the unit's
        # ExecStartPre= would pass.
        conf = inst.path(os.path.join(prefix, inst.opts["sysconfdir"], "sessiond", "sessiond.conf"))
        clean = {k: v for k, v in env.items()
                 if not k.startswith("SESSION_") and not k.startswith("SESSIOND_")}
        clean["SESSIOND_ENV_FILE"] = inst.path("/nonexistent/session.env")
        p = subprocess.run([sessiond, "-c", conf, "--check-config"], capture_output=True,
                           text=True, env=clean, timeout=30)
        assert p.returncode == 0, "installed sessiond.conf fails --check-config:\n" + p.stderr
        p = subprocess.run([sessionctl, "-c", conf, "config", "--validate"], capture_output=True,
                           text=True, env=clean, timeout=30)
        assert p.returncode == 0, "installed sessiond.conf fails config --validate:\n" + p.stdout + p.stderr


def test_pkg_config_against_destdir():
    with Install() as inst:
        env = dict(os.environ,
                   PKG_CONFIG_PATH=os.path.join(inst.libdir(), "pkgconfig"),
                   PKG_CONFIG_SYSROOT_DIR=inst.destdir)
        cflags = run(["pkg-config", "--cflags", "libsessiond"], env=env).stdout.split()
        libs = run(["pkg-config", "--libs", "libsessiond"], env=env).stdout.split()
        assert "-I" + inst.path(os.path.join(inst.opts["prefix"], inst.opts["includedir"])) in cflags, cflags
        assert "-lsessiond" in libs, libs
        # A C program builds against the installed headers and library and
        # runs with it.
        work = tempfile.mkdtemp(prefix="sessiond-pc-")
        try:
            src = os.path.join(work, "prog.c")
            with open(src, "w") as f:
                f.write('#include <stdio.h>\n'
                        '#include <sessiond/config.h>\n'
                        '#include <sessiond/client.h>\n'
                        '#include <sessiond/varlink.h>\n'
                        '#include <sessiond/envfile.h>\n'
                        'int main(void) {\n'
                        '        puts(sessiond_environment_valid_names());\n'
                        '        return 0;\n'
                        '}\n')
            exe = os.path.join(work, "prog")
            sanitize = inst.opts.get("b_sanitize", "none")
            # A library built with sanitizers needs their runtime in the program.
            extra = ["-fsanitize=" + sanitize] if sanitize != "none" else []
            run(["cc", "-Wall", "-Werror", "-o", exe, src] + extra + cflags + libs, env=env)
            out = run([exe], env=dict(os.environ, LD_LIBRARY_PATH=inst.libdir())).stdout
            assert out.strip() == "development, testing, staging, production", out
        finally:
            shutil.rmtree(work, ignore_errors=True)


def test_debian_layout():
    """--prefix=/usr: the places a Debian administrator expects."""
    build = tempfile.mkdtemp(prefix="sessiond-usr-")
    try:
        run([MESON, "setup", build, SOURCE, "--prefix=/usr", "-Dtests=false"])
        opts = build_options(build)
        assert opts["sysconfdir"] == "/etc", opts["sysconfdir"]
        installed = set(json.loads(run([MESON, "introspect", build, "--installed"]).stdout).values())
        multiarch = os.path.join("/usr", opts["libdir"])
        want = {
            "/usr/sbin/sessiond", "/usr/bin/sessionctl",
            "/etc/sessiond/sessiond.conf",
            "/usr/lib/sysusers.d/sessiond.conf", "/usr/lib/tmpfiles.d/sessiond.conf",
            os.path.join(multiarch, "pkgconfig/libsessiond.pc"),
        }
        unit_dir = systemd_dirs_for("/usr")[0]
        want |= {os.path.join(unit_dir, "sessiond.service"), os.path.join(unit_dir, "sessiond.socket")}
        want |= {"/usr/include/sessiond/" + h for h in PUBLIC_HEADERS}
        if man_pages_expected(opts):
            want |= {"/usr/share/man/" + m for m in MAN_PAGES}
        missing = sorted(want - installed)
        assert not missing, "not installed with --prefix=/usr: %s\nall: %s" % (missing, sorted(installed))
        assert any(f.startswith(os.path.join(multiarch, "libsessiond.so")) for f in installed), installed
        # The generated units name the binaries and the file in Debian's places.
        with open(os.path.join(build, "systemd", "sessiond.service")) as f:
            unit = f.read()
        for line in ("ExecStartPre=/usr/sbin/sessiond -c /etc/sessiond/sessiond.conf --check-config",
                     "ExecStart=/usr/sbin/sessiond -c /etc/sessiond/sessiond.conf",
                     "ExecReload=/usr/bin/sessionctl -c /etc/sessiond/sessiond.conf reload"):
            assert line + "\n" in unit, "missing %r in the /usr unit" % line
        with open(os.path.join(build, "systemd", "tmpfiles.conf")) as f:
            assert "d /etc/sessiond " in f.read()
    finally:
        if not os.environ.get("KEEP_TMP"):
            shutil.rmtree(build, ignore_errors=True)


def test_default_prefix_stays_under_prefix():
    """Any prefix other than /usr: nothing is installed outside it, and the
    units name the binaries and the file under it."""
    build = tempfile.mkdtemp(prefix="sessiond-opt-")
    try:
        run([MESON, "setup", build, SOURCE, "--prefix=/opt/sessiond", "-Dtests=false"])
        installed = json.loads(run([MESON, "introspect", build, "--installed"]).stdout).values()
        outside = sorted(f for f in installed if not f.startswith("/opt/sessiond/"))
        assert not outside, "installed outside --prefix=/opt/sessiond: %s" % outside
        with open(os.path.join(build, "systemd", "sessiond.service")) as f:
            unit = f.read()
        assert "ExecStart=/opt/sessiond/sbin/sessiond -c /opt/sessiond/etc/sessiond/sessiond.conf\n" in unit, unit
        assert "ExecReload=/opt/sessiond/bin/sessionctl -c /opt/sessiond/etc/sessiond/sessiond.conf reload\n" in unit
    finally:
        if not os.environ.get("KEEP_TMP"):
            shutil.rmtree(build, ignore_errors=True)


run_tests([
    test_destdir_lists_every_expected_file,
    test_installed_programs_run,
    test_pkg_config_against_destdir,
    test_debian_layout,
    test_default_prefix_stays_under_prefix,
])
