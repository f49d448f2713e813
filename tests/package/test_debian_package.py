"""The Debian packages of debian/, built and installed into a fresh Debian 12.

1. `dpkg-buildpackage -us -uc -b` in a copy of the source tree (the files git
   knows, or would add: never the meson build folders), with
   DEB_BUILD_OPTIONS=nocheck (the unit suite runs elsewhere; a package
   build runs it when nocheck is not given); the tree under test is never
   written to.
2. lintian on the .changes: no error (the accepted warnings are in the
   *.lintian-overrides files, each with its reason).
3. A Debian 12 root from Debian's archive (debootstrap --variant=minbase
   with the run-time dependencies of the packages, read from the built
   .debs), made once and kept as a tarball under the build folder
   (debootstrap-bookworm-<hash of the package list>.tar), unpacked afresh
   for each run. The test machine's own system is never touched: dpkg and
   the maintainer scripts run chrooted in that root.
4. Install: the files where Debian wants them, the conffile, the users and
   groups (sysusers.d), the folders with their owners and modes
   (tmpfiles.d), sessiond.socket and sessiond.service enabled (symlinks
   under etc/systemd/system/*.wants), sessiond-metrics.socket not; the
   daemon runs in the root as its user and answers sessionctl there.
5. Reinstall (the upgrade path of the maintainer scripts): a locally edited
   conffile and session.env are kept.
6. Remove: the programs go, the state, the conffile and the users stay.
7. Purge: the state (/var/lib/sessiond), /etc/sessiond and every
   enablement symlink go; the system users stay (Debian keeps them).

Root only (chroot, file owners): CI runs as root. Environment:
SESSIOND_DEBIAN_MIRROR (default: the first deb.debian.org-style URI of apt's
sources, else http://deb.debian.org/debian), KEEP_TMP=1 keeps the work
folder.
"""

import glob
import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import Skip, run_tests, wait_for  # noqa: E402

SOURCE = os.environ["MESON_SOURCE_ROOT"]
BUILD = os.environ["MESON_BUILD_ROOT"]
SUITE = "bookworm"
OUR_PACKAGES = ("sessiond", "libsessiond2", "libsessiond-dev", "python3-sessiond")
# Besides the dependencies of the packages: what the test itself uses in
# the root (pkg-config and a compiler are not needed: the -dev package is
# checked by its files).
EXTRA = ["systemd"]

state = {}


def run(cmd, check=True, timeout=1800, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%s: exit %d\nstdout: %s\nstderr: %s"
                             % (" ".join(cmd), p.returncode, p.stdout[-6000:], p.stderr[-6000:]))
    return p


def mirror():
    m = os.environ.get("SESSIOND_DEBIAN_MIRROR")
    if m:
        return m
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")):
        try:
            text = open(path).read()
        except OSError:
            continue
        for uri in re.findall(r"(?m)^(?:URIs:|deb)\s+(?:\[[^]]*\]\s+)?(https?://\S+/debian)/?\s*$", text):
            return uri
    return "http://deb.debian.org/debian"


def source_files():
    """The files of a clean checkout: git's (tracked, plus untracked ones
    it would not ignore), else everything but build output."""
    if os.path.isdir(os.path.join(SOURCE, ".git")) or os.path.isfile(os.path.join(SOURCE, ".git")):
        p = run(["git", "-C", SOURCE, "ls-files", "-z", "-co", "--exclude-standard"], check=False)
        if p.returncode == 0:
            return [f for f in p.stdout.split("\0") if f and os.path.lexists(os.path.join(SOURCE, f))]
    files = []
    for top, dirs, names in os.walk(SOURCE):
        rel = os.path.relpath(top, SOURCE)
        dirs[:] = [d for d in dirs if not (rel == "." and (d.startswith("build") or d.startswith("obj-")
                                                           or d in (".git", "state")))]
        files += [os.path.normpath(os.path.join(rel, n)) for n in names]
    return files


CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}


def chroot_argv(cmd, user=None):
    """cmd run in the root, with /proc mounted there (systemd-tmpfiles
    needs it, as on a real system) in a mount namespace of its own, so
    that nothing stays mounted when it ends."""
    spec = ["--userspec=%s:%s" % (user, user)] if user else []
    return (["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount -t proc proc "$0/proc" && exec chroot "$@"', state["root"]]
            + spec + [state["root"]] + list(cmd))


def chroot(*cmd, check=True, user=None, **kw):
    return run(chroot_argv(cmd, user), check=check, env=CHROOT_ENV, **kw)


def rpath(path):
    return os.path.join(state["root"], path.lstrip("/"))


def unmount_under(path):
    """Unmounts whatever is mounted below path (debootstrap mounts proc
    and sys in its target while it works), deepest first."""
    path = os.path.realpath(path)
    mounts = [l.split()[1] for l in open("/proc/self/mounts")]
    for m in sorted((m for m in mounts if m.startswith(path + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


def remove_tree(path):
    unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)


def deb_field(deb, field):
    return run(["dpkg-deb", "-f", deb, field]).stdout.strip()


# ---- 1. build ---------------------------------------------------------------------------

def test_build():
    if os.geteuid() != 0:
        raise Skip("needs root (chroot, file owners); CI runs as root")
    for tool in ("dpkg-buildpackage", "debootstrap", "lintian"):
        if not shutil.which(tool):
            raise AssertionError("%s is missing: run tools/setup-debian" % tool)
    work = tempfile.mkdtemp(prefix="sessiond-package-")
    state["work"] = work
    src = os.path.join(work, "sessiond-0.1.0")
    os.makedirs(src)
    leftovers = ["debian/files", "debian/.debhelper", "debian/tmp", "debian/debhelper-build-stamp",
                 "debian/sessiond", "debian/libsessiond2", "debian/libsessiond-dev",
                 "debian/python3-sessiond"]
    before = {f for f in leftovers + glob.glob(os.path.join(SOURCE, "obj-*")) if os.path.lexists(os.path.join(SOURCE, f))}
    files = source_files()
    assert "debian/control" in files and "meson.build" in files, files[:20]
    tar = subprocess.Popen(["tar", "-C", SOURCE, "--null", "-T", "-", "-cf", "-"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE)
    untar = subprocess.Popen(["tar", "-C", src, "-xf", "-"], stdin=tar.stdout)
    tar.stdout.close()
    tar.stdin.write("\0".join(files).encode())
    tar.stdin.close()
    assert tar.wait() == 0 and untar.wait() == 0
    env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=%d" % max(1, min(os.cpu_count() or 1, 2)))
    for k in [k for k in env if k.startswith(("MESON_", "SESSION", "ASAN_", "UBSAN_", "LSAN_"))]:
        del env[k]
    t0 = time.monotonic()
    p = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env, check=False)
    log = p.stdout + p.stderr
    assert p.returncode == 0, "dpkg-buildpackage failed:\n" + log[-8000:]
    print("  built in %.0f s" % (time.monotonic() - t0))
    # every file meson installs is in a package (dh_missing --fail-missing in compat 13 also says so)
    assert "dh_missing" in log
    # the symbols file matches the exported API: dpkg-gensymbols has nothing to report
    assert "dpkg-gensymbols: warning" not in log, [l for l in log.splitlines() if "gensymbols" in l or l.startswith(("+", "-"))][:40]
    debs = {}
    for name in OUR_PACKAGES:
        found = glob.glob(os.path.join(work, "%s_0.1.0_*.deb" % name))
        assert len(found) == 1, (name, os.listdir(work))
        debs[name] = found[0]
    state["debs"] = debs
    state["changes"] = glob.glob(os.path.join(work, "sessiond_0.1.0_*.changes"))[0]
    # the tree under test was only read: nothing of a package build appeared in it
    after = {f for f in leftovers + glob.glob(os.path.join(SOURCE, "obj-*")) if os.path.lexists(os.path.join(SOURCE, f))}
    assert after == before, "the build wrote into the source tree: %s" % sorted(after - before)


def test_lintian():
    if "changes" not in state:
        raise Skip("no packages built")
    p = run(["lintian", "--fail-on", "error", "--display-level", ">=warning", "--info", state["changes"]],
            check=False, timeout=900)
    out = p.stdout + p.stderr
    print("\n".join("  " + l for l in out.splitlines() if l.startswith(("E:", "W:"))) or "  lintian: clean")
    assert p.returncode == 0 and not re.search(r"(?m)^E: ", out), "lintian:\n" + out[-6000:]


# ---- 2. a fresh Debian 12 ---------------------------------------------------------------------

def dependencies():
    """The packages the root needs: every dependency of ours (the first of
    each alternative, without versions) and EXTRA."""
    names = set(EXTRA)
    for deb in state["debs"].values():
        for field in ("Pre-Depends", "Depends"):
            for dep in filter(None, (d.strip() for d in deb_field(deb, field).split(","))):
                name = re.match(r"[a-z0-9][a-z0-9+.-]*", dep.split("|")[0].strip()).group(0)
                if name not in OUR_PACKAGES:
                    names.add(name)
    return sorted(names)


def test_fresh_root():
    if "debs" not in state:
        raise Skip("no packages built")
    include = dependencies()
    key = hashlib.sha256((SUITE + " " + ",".join(include)).encode()).hexdigest()[:12]
    cache = os.path.join(BUILD, "debootstrap-%s-%s.tar" % (SUITE, key))
    if not os.path.exists(cache):
        t0 = time.monotonic()
        boot = os.path.join(BUILD, "debootstrap-%s.tmp" % key)
        remove_tree(boot)
        p = run(["debootstrap", "--variant=minbase", "--include=" + ",".join(include), SUITE, boot, mirror()],
                check=False, timeout=3000)
        if p.returncode != 0:
            remove_tree(boot)
            raise AssertionError("debootstrap failed:\n%s%s" % (p.stdout[-4000:], p.stderr[-4000:]))
        # debootstrap may leave its proc mounted in the target
        unmount_under(boot)
        run(["find", os.path.join(boot, "var/cache/apt/archives"), "-name", "*.deb", "-delete"])
        run(["tar", "-C", boot, "--numeric-owner", "--one-file-system", "-cf", cache + ".part", "."])
        os.rename(cache + ".part", cache)
        remove_tree(boot)
        print("  debootstrap %s in %.0f s, cached as %s" % (SUITE, time.monotonic() - t0, cache))
    root = os.path.join(state["work"], "root")
    os.makedirs(root)
    run(["tar", "-C", root, "--numeric-owner", "-xf", cache])
    state["root"] = root
    assert open(rpath("/etc/debian_version")).read().startswith("12"), open(rpath("/etc/debian_version")).read()
    # the root is not the machine: nothing runs systemd there, so the
    # maintainer scripts enable units but never start them
    assert not os.path.exists(rpath("/run/systemd/system"))


# ---- 3. install, reinstall, remove, purge -------------------------------------------------------

def owner(path):
    st = os.lstat(rpath(path))
    users = {int(l.split(":")[2]): l.split(":")[0] for l in open(rpath("/etc/passwd"))}
    groups = {int(l.split(":")[2]): l.split(":")[0] for l in open(rpath("/etc/group"))}
    return users.get(st.st_uid, st.st_uid), groups.get(st.st_gid, st.st_gid), stat.S_IMODE(st.st_mode)


def wants(unit):
    """Enablement symlinks of unit under etc/systemd/system/*.wants."""
    return sorted(glob.glob(rpath("/etc/systemd/system/*.wants/" + unit)))


def passwd(name):
    for line in open(rpath("/etc/passwd")):
        if line.split(":")[0] == name:
            return line.strip().split(":")
    return None


def group(name):
    for line in open(rpath("/etc/group")):
        if line.split(":")[0] == name:
            return line.strip().split(":")
    return None


def test_install():
    if "root" not in state:
        raise Skip("no root")
    os.makedirs(rpath("/tmp/debs"))
    for deb in state["debs"].values():
        shutil.copy(deb, rpath("/tmp/debs"))
    chroot("dpkg", "-i", *["/tmp/debs/" + os.path.basename(d) for d in state["debs"].values()])
    p = chroot("dpkg-query", "-W", "-f", "${Package} ${Status}\n", *OUR_PACKAGES)
    assert p.stdout.count("install ok installed") == len(OUR_PACKAGES), p.stdout
    # files
    multiarch = run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"]).stdout.strip()
    for f in ["/usr/sbin/sessiond", "/usr/bin/sessionctl", "/usr/bin/sessiond-bench",
              "/lib/systemd/system/sessiond.service", "/lib/systemd/system/sessiond.socket",
              "/lib/systemd/system/sessiond-metrics.socket",
              "/usr/lib/sysusers.d/sessiond.conf", "/usr/lib/tmpfiles.d/sessiond.conf",
              "/etc/sessiond/sessiond.conf", "/usr/share/man/man8/sessiond.8.gz",
              "/usr/share/man/man1/sessionctl.1.gz", "/usr/share/man/man5/sessiond.conf.5.gz",
              "/usr/share/sessiond/prometheus/sessiond.rules.yml", "/usr/share/sessiond/grafana/sessiond.json",
              "/usr/share/doc/sessiond/copyright",
              "/usr/lib/%s/libsessiond.so.2" % multiarch, "/usr/lib/%s/libsessiond.so" % multiarch,
              "/usr/lib/%s/pkgconfig/libsessiond.pc" % multiarch, "/usr/include/sessiond/config.h",
              "/usr/include/sessiond/client.h", "/usr/include/sessiond/varlink.h",
              "/usr/lib/python3/dist-packages/sessiond/__init__.py",
              "/usr/lib/python3/dist-packages/sessiond/flask.py", "/usr/share/sessiond/js/session-sync.js"]:
        assert os.path.lexists(rpath(f)), f + " not installed"
    # the Python package imports with Debian's python3 and finds the browser script
    chroot("python3", "-c", "import os, sessiond, sessiond._paths as p; "
           "assert os.path.exists(os.path.join(p.JS_DIR, 'session-sync.js')), p.JS_DIR")
    conffiles = chroot("dpkg-query", "-W", "-f", "${Conffiles}", "sessiond").stdout
    assert "/etc/sessiond/sessiond.conf" in conffiles, conffiles
    assert len(conffiles.strip().splitlines()) == 1, conffiles
    # users and groups (sysusers.d)
    u = passwd("sessiond")
    assert u and u[5] == "/var/lib/sessiond" and u[6] in ("/usr/sbin/nologin", "/sbin/nologin"), u
    assert int(u[2]) < 1000, u
    g = group("sessiond-admin")
    assert g and "sessiond" in g[3].split(","), g
    assert group("sessiond"), "no group sessiond"
    # folders and modes (tmpfiles.d)
    assert owner("/var/lib/sessiond") == ("sessiond", "sessiond", 0o700), owner("/var/lib/sessiond")
    assert owner("/etc/sessiond") == ("root", "sessiond", 0o750), owner("/etc/sessiond")
    assert owner("/etc/sessiond/sessiond.conf") == ("root", "sessiond", 0o640), owner("/etc/sessiond/sessiond.conf")
    assert owner("/etc/sessiond/session.env") == ("root", "sessiond", 0o640), owner("/etc/sessiond/session.env")
    # unit enablement
    assert [os.path.relpath(w, rpath("/etc/systemd/system")) for w in wants("sessiond.socket")] == \
        ["sockets.target.wants/sessiond.socket"], wants("sessiond.socket")
    assert [os.path.relpath(w, rpath("/etc/systemd/system")) for w in wants("sessiond.service")] == \
        ["multi-user.target.wants/sessiond.service"], wants("sessiond.service")
    for w in wants("sessiond.socket") + wants("sessiond.service"):
        assert os.readlink(w).startswith("/lib/systemd/system/"), os.readlink(w)
    assert not wants("sessiond-metrics.socket"), "sessiond-metrics.socket enabled by default"
    # the package's daemon runs there: the configuration check of ExecStartPre=
    # as the service user, then the daemon itself, answering sessionctl
    chroot("/usr/sbin/sessiond", "-c", "/etc/sessiond/sessiond.conf", "--check-config", user="sessiond")
    if not os.path.isdir(rpath("/run/sessiond")):
        chroot("systemd-tmpfiles", "--create", "sessiond.conf")
    daemon = subprocess.Popen(chroot_argv(["/usr/sbin/sessiond", "-c", "/etc/sessiond/sessiond.conf"], "sessiond"),
                              env=CHROOT_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: chroot("sessionctl", "status", check=False).returncode == 0, timeout=30,
                 what="the packaged daemon answering sessionctl status")
        out = chroot("sessionctl", "call", "io.sessiond.Session.Create", '{"user_id": "alice"}').stdout
        assert '"token"' in out, out
    finally:
        daemon.send_signal(signal.SIGTERM)
        out = daemon.communicate(timeout=30)[0].decode(errors="replace")
    assert daemon.returncode == 0, out
    assert owner("/var/lib/sessiond/sessions.db")[:2] == ("sessiond", "sessiond")
    state["installed"] = True


def test_reinstall_keeps_local_changes():
    if not state.get("installed"):
        raise Skip("not installed")
    with open(rpath("/etc/sessiond/session.env"), "a") as f:
        f.write("SESSION_ENVIRONMENT=production\n")
    with open(rpath("/etc/sessiond/sessiond.conf"), "a") as f:
        f.write("# edited by the operator\n")
    # the same version again: preinst/postinst run their upgrade branch
    chroot("dpkg", "-i", "--force-confold", "/tmp/debs/" + os.path.basename(state["debs"]["sessiond"]))
    assert "SESSION_ENVIRONMENT=production" in open(rpath("/etc/sessiond/session.env")).read()
    assert "# edited by the operator" in open(rpath("/etc/sessiond/sessiond.conf")).read()
    assert wants("sessiond.service") and wants("sessiond.socket")
    assert os.path.exists(rpath("/var/lib/sessiond/sessions.db"))


def test_remove_keeps_state():
    if not state.get("installed"):
        raise Skip("not installed")
    chroot("dpkg", "-r", "python3-sessiond", "libsessiond-dev", "sessiond")
    assert not os.path.exists(rpath("/usr/sbin/sessiond"))
    assert not os.path.exists(rpath("/lib/systemd/system/sessiond.service"))
    assert os.path.exists(rpath("/var/lib/sessiond/sessions.db")), "remove deleted the state"
    assert os.path.exists(rpath("/var/lib/sessiond/sessiond.key")), "remove deleted the token key"
    assert os.path.exists(rpath("/etc/sessiond/sessiond.conf")), "remove deleted the conffile"
    assert passwd("sessiond")
    status = chroot("dpkg-query", "-W", "-f", "${Status}", "sessiond").stdout
    assert status == "deinstall ok config-files", status


def test_purge():
    if not state.get("installed"):
        raise Skip("not installed")
    chroot("dpkg", "--purge", "sessiond", "libsessiond2")
    for gone in ("/var/lib/sessiond", "/etc/sessiond", "/run/sessiond", "/usr/lib/sysusers.d/sessiond.conf",
                 "/var/lib/systemd/deb-systemd-helper-enabled/sessiond.service.dsh-also"):
        assert not os.path.lexists(rpath(gone)), gone + " left after purge"
    left = [os.path.relpath(os.path.join(t, n), state["root"])
            for t, _, names in os.walk(rpath("/etc/systemd")) for n in names if "sessiond" in n]
    assert not left, "enablement left after purge: %s" % left
    for p in OUR_PACKAGES:
        q = chroot("dpkg-query", "-W", "-f", "${Status}", p, check=False)
        assert q.returncode != 0 or "not-installed" in q.stdout, (p, q.stdout)
    # Debian keeps system users: a later user must not inherit their ids
    assert passwd("sessiond") and group("sessiond-admin")


def cleanup():
    work = state.get("work")
    if work and not os.environ.get("KEEP_TMP"):
        remove_tree(work)


try:
    run_tests([
        test_build,
        test_lintian,
        test_fresh_root,
        test_install,
        test_reinstall_keeps_local_changes,
        test_remove_keeps_state,
        test_purge,
    ])
finally:
    cleanup()
