"""The systemd glue as installed: units, sysusers.d, tmpfiles.d.

PID 1 is not systemd here, so nothing is started by systemd. Instead:
- `systemd-analyze verify` checks the installed units (syntax, every
  directive known and well-formed, the programs they run exist and are
  executable, the man pages of Documentation= exist, the dependencies
  resolve);
- `systemd-analyze security --offline=true` rates the hardening of the
  installed service, and the figure must stay at most 1.2;
- systemd-sysusers and systemd-tmpfiles apply the installed files to an
  empty root folder, and the users, groups, owners and modes are checked;
- the units, the tmpfiles.d file and the daemon's defaults must agree with
  each other (socket path, its folder's mode, state folder);
- the exact ExecStartPre= and ExecReload= command lines of the unit run
  against a real daemon, with a valid and then an invalid configuration.
Starting sessiond with its own NOTIFY_SOCKET and through
systemd-socket-activate is covered by test_lifecycle.py.
"""

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile

from harness import Daemon, SESSIOND, SESSIONCTL, run_tests

BUILD = os.environ["MESON_BUILD_ROOT"]
MESON = shutil.which("meson") or "meson"
MAX_EXPOSURE = 1.2


def run(cmd, check=True, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%s: exit %d\nstdout: %s\nstderr: %s"
                             % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p


def clean_environ(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SESSION_") and not k.startswith("SESSIOND_")}
    env.update(extra)
    return env


class Install:
    """`meson install --destdir` of the build under test, and where its
    systemd files landed (found from meson's own install plan)."""

    def __init__(self):
        self.destdir = tempfile.mkdtemp(prefix="sessiond-install-")
        run([MESON, "install", "-C", BUILD, "--no-rebuild", "--quiet", "--destdir", self.destdir])
        opts = json.loads(run([MESON, "introspect", BUILD, "--buildoptions"]).stdout)
        self.opts = {o["name"]: o["value"] for o in opts}
        installed = json.loads(run([MESON, "introspect", BUILD, "--installed"]).stdout).values()
        self.files = {}
        for f in installed:
            self.files.setdefault(os.path.basename(f), []).append(f)

    def installed(self, name, under):
        """The installed path (without destdir) of file `name` in a folder
        whose path ends with `under`."""
        for f in self.files.get(name, []):
            if os.path.dirname(f).endswith(under):
                return f
        raise AssertionError("%s not installed under */%s: %s" % (name, under, self.files.get(name)))

    def path(self, absolute):
        return os.path.join(self.destdir, absolute.lstrip("/"))

    def unit(self, name):
        return self.path(self.installed(name, "systemd/system"))

    def config_file(self):
        return self.path(os.path.join(self.opts["prefix"], self.opts["sysconfdir"], "sessiond", "sessiond.conf"))

    def man_dir(self):
        return self.path(os.path.join(self.opts["prefix"], self.opts["mandir"]))

    def cleanup(self):
        if not os.environ.get("KEEP_TMP"):
            shutil.rmtree(self.destdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.cleanup()


def parse_unit(path):
    """{section: [(key, value), ...]} of a unit file, in order."""
    sections = {}
    current = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], [])
                continue
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def unit_values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


def unit_value(unit, section, key):
    values = unit_values(unit, section, key)
    assert len(values) == 1, "%s= in [%s]: %r" % (key, section, values)
    return values[0]


def exec_argv(value):
    """ExecStart= value -> argv, without the special prefixes (-, +, !, @)."""
    return shlex.split(value.lstrip("-+!@:|"))


def test_units_verify():
    # systemd-analyze verify (systemd 252) checks that each Exec*= program
    # exists and is executable at its absolute path. The installed units
    # name PREFIX/sbin/sessiond, which exists only inside the destdir.
    # `--root=DESTDIR` would resolve those paths, but then every unit must be
    # found under the root too, and sysinit.target, basic.target,
    # sockets.target ... are not there ("Unit sysinit.target not found").
    # So the units are verified from a copy whose program paths are
    # rewritten into the destdir; everything else is byte for byte the
    # installed text. The man pages of Documentation= are looked up by
    # man(1), pointed at the destdir's man folder with MANPATH.
    with Install() as inst:
        work = tempfile.mkdtemp(prefix="sessiond-verify-")
        try:
            prefix = inst.opts["prefix"]
            programs = [os.path.join(prefix, inst.opts["sbindir"], "sessiond"),
                        os.path.join(prefix, inst.opts["bindir"], "sessionctl")]
            copies = []
            for name in ("sessiond.service", "sessiond.socket", "sessiond-metrics.socket"):
                with open(inst.unit(name)) as f:
                    text = f.read()
                for prog in programs:
                    text = re.sub(r"(?m)^(Exec\w+=[-+!@:|]*)" + re.escape(prog) + r"\b",
                                  lambda m, prog=prog: m.group(1) + inst.path(prog), text)
                copy = os.path.join(work, name)
                with open(copy, "w") as f:
                    f.write(text)
                copies.append(copy)
            with open(copies[0]) as f:
                assert inst.path(programs[0]) in f.read(), "ExecStart= does not name " + programs[0]
            # Without man(1) (a bare machine) verify cannot look pages up.
            if os.path.isdir(os.path.join(inst.man_dir(), "man8")) and shutil.which("man"):
                env = dict(os.environ, MANPATH=inst.man_dir())
                man = []
            else:
                env = dict(os.environ)
                man = ["--man=no"]
            p = run(["systemd-analyze", "verify"] + man + copies, check=False, env=env)
            # verify exits 0 on unknown keys and bad values (it only warns):
            # any output at all is a failure.
            assert p.returncode == 0 and not p.stderr.strip() and not p.stdout.strip(), \
                "systemd-analyze verify: exit %d\n%s%s" % (p.returncode, p.stdout, p.stderr)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def test_security_exposure():
    with Install() as inst:
        unit = inst.unit("sessiond.service")
        p = run(["systemd-analyze", "security", "--offline=true", "--no-pager", unit], check=False)
        m = re.search(r"Overall exposure level for sessiond\.service: (\d+\.\d+)", p.stdout)
        assert m, "no exposure figure in:\n%s%s" % (p.stdout, p.stderr)
        exposure = float(m.group(1))
        assert exposure <= MAX_EXPOSURE, "exposure %.1f > %.1f:\n%s" % (exposure, MAX_EXPOSURE, p.stdout)
        # The protections the daemon's design relies on, named so that a
        # failure says which one went missing.
        for check in ("User=/DynamicUser=", "PrivateNetwork=", "RestrictAddressFamilies=~AF_(INET|INET6)",
                      "CapabilityBoundingSet=~CAP_SYS_ADMIN", "ProtectSystem=", "PrivateTmp=",
                      "PrivateDevices=", "SystemCallFilter=~@privileged", "SystemCallFilter=~@resources",
                      "SystemCallArchitectures=", "NoNewPrivileges=", "MemoryDenyWriteExecute=", "UMask="):
            line = next((l for l in p.stdout.splitlines() if check in l.split()), None)
            assert line is not None, "%s not rated:\n%s" % (check, p.stdout)
            assert line.lstrip().startswith("\u2713"), "%s not satisfied: %s" % (check, line)


def test_unit_contract():
    with Install() as inst:
        svc = parse_unit(inst.unit("sessiond.service"))
        sock = parse_unit(inst.unit("sessiond.socket"))
        S = "Service"
        assert unit_value(svc, S, "Type") == "notify"
        start = exec_argv(unit_value(svc, S, "ExecStart"))
        pre = exec_argv(unit_value(svc, S, "ExecStartPre"))
        reload = exec_argv(unit_value(svc, S, "ExecReload"))
        sbin = os.path.join(inst.opts["prefix"], inst.opts["sbindir"], "sessiond")
        bindir = os.path.join(inst.opts["prefix"], inst.opts["bindir"], "sessionctl")
        conf = os.path.join(inst.opts["prefix"], inst.opts["sysconfdir"], "sessiond", "sessiond.conf")
        assert start == [sbin, "-c", conf], start
        # The check and the reload read the same file as the daemon.
        assert pre == start + ["--check-config"], pre
        assert reload == [bindir, "-c", conf, "reload"], reload
        assert unit_value(svc, S, "Restart") == "on-failure"
        assert unit_value(svc, S, "WatchdogSec"), "no WatchdogSec="
        assert unit_value(svc, S, "User") == "sessiond" and unit_value(svc, S, "Group") == "sessiond"
        assert not unit_values(svc, S, "DynamicUser")
        # In a private user namespace every peer but root and sessiond reads
        # as nobody in SO_PEERCRED: the admin group check would break.
        assert not unit_values(svc, S, "PrivateUsers")
        assert unit_value(svc, S, "StateDirectory") == "sessiond"
        assert unit_value(svc, S, "StateDirectoryMode") == "0700"
        assert unit_value(svc, S, "ConfigurationDirectory") == "sessiond"
        assert unit_value(svc, S, "RuntimeDirectory") == "sessiond"
        # Without it, stopping the service removes /run/sessiond and with it
        # the socket that sessiond.socket keeps listening on.
        assert unit_value(svc, S, "RuntimeDirectoryPreserve") == "yes"
        assert unit_value(svc, S, "RestrictAddressFamilies") == "AF_UNIX"
        assert "sessiond.socket" in unit_value(svc, "Unit", "Requires").split()
        assert "sessiond.socket" in unit_value(svc, "Unit", "After").split()
        assert "sessiond.socket" in unit_value(svc, "Install", "Also").split()

        listen = unit_value(sock, "Socket", "ListenStream")
        assert listen == "/run/sessiond/sessiond.sock", listen
        assert unit_value(sock, "Socket", "FileDescriptorName") == "varlink"
        assert unit_value(sock, "Socket", "SocketMode") == "0660"
        assert unit_value(sock, "Socket", "SocketGroup") == "sessiond"
        assert unit_value(sock, "Install", "WantedBy") == "sockets.target"

        # The socket's folder is the service's RuntimeDirectory, made with
        # one mode by whichever comes first: the socket unit, the service,
        # or tmpfiles.d at boot.
        assert os.path.dirname(listen) == "/run/" + unit_value(svc, S, "RuntimeDirectory")
        tmpfiles = tmpfiles_lines(inst)
        run_line = tmpfiles[os.path.dirname(listen)]
        assert run_line[0] == "d"
        assert (unit_value(sock, "Socket", "DirectoryMode") == unit_value(svc, S, "RuntimeDirectoryMode")
                == run_line[1]), (run_line, unit_value(sock, "Socket", "DirectoryMode"))
        assert run_line[2:4] == ["sessiond", "sessiond"], run_line
        state = "/var/lib/" + unit_value(svc, S, "StateDirectory")
        assert tmpfiles[state][1] == unit_value(svc, S, "StateDirectoryMode"), tmpfiles[state]

        # The daemon's own defaults, with the installed file, agree with the
        # units: sessionctl finds the socket that systemd made, and the
        # database is in the StateDirectory.
        p = run([SESSIONCTL, "-c", inst.config_file(), "config", "--show"],
                env=clean_environ(SESSIOND_ENV_FILE=inst.path("/nonexistent/session.env")))
        daemon = json.loads(p.stdout)["daemon"]
        assert daemon["socket_path"] == listen, daemon
        assert os.path.dirname(daemon["database_path"]) == state, daemon
        assert daemon["admin_group"] == "sessiond-admin", daemon


def tmpfiles_lines(inst):
    """{path: [type, mode, user, group, ...]} of the installed tmpfiles.d file."""
    lines = {}
    with open(inst.path(inst.installed("sessiond.conf", "tmpfiles.d"))) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                fields = line.split(None, 6)
                lines[fields[1]] = [fields[0]] + fields[2:]
    return lines


def read_db(path):
    """/etc/passwd or /etc/group of a root folder -> {name: fields}."""
    with open(path) as f:
        return {l.split(":")[0]: l.rstrip("\n").split(":") for l in f if l.strip()}


def apply_sysusers(inst, root):
    os.makedirs(os.path.join(root, "etc"), exist_ok=True)
    sysusers = inst.path(inst.installed("sessiond.conf", "sysusers.d"))
    run(["systemd-sysusers", "--root=" + root, sysusers])


def test_sysusers():
    with Install() as inst:
        root = tempfile.mkdtemp(prefix="sessiond-root-")
        try:
            apply_sysusers(inst, root)
            passwd = read_db(os.path.join(root, "etc/passwd"))
            group = read_db(os.path.join(root, "etc/group"))
            user = passwd["sessiond"]
            uid, gid = int(user[2]), int(user[3])
            assert 0 < uid < 1000, "sessiond is not a system user: %r" % user
            assert user[5] == "/var/lib/sessiond", user
            assert user[6].endswith("nologin"), user
            assert int(group["sessiond"][2]) == gid, (group, user)
            assert "sessiond-admin" in group, group
            assert 0 < int(group["sessiond-admin"][2]) < 1000
            # The service user is an admin, so that ExecReload= (run as that
            # user) may call io.sessiond.Admin.Reload.
            assert "sessiond" in group["sessiond-admin"][3].split(","), group["sessiond-admin"]
            # Applying it again changes nothing (what every boot does).
            before = open(os.path.join(root, "etc/passwd")).read() + open(os.path.join(root, "etc/group")).read()
            apply_sysusers(inst, root)
            after = open(os.path.join(root, "etc/passwd")).read() + open(os.path.join(root, "etc/group")).read()
            assert before == after
        finally:
            shutil.rmtree(root, ignore_errors=True)


def test_tmpfiles():
    with Install() as inst:
        root = tempfile.mkdtemp(prefix="sessiond-root-")
        try:
            apply_sysusers(inst, root)
            passwd = read_db(os.path.join(root, "etc/passwd"))
            uid, gid = int(passwd["sessiond"][2]), int(passwd["sessiond"][3])
            # The configuration as meson installs it (root, 0644), then
            # tmpfiles.d fixes its owner and mode.
            etc = os.path.join(inst.opts["prefix"], inst.opts["sysconfdir"], "sessiond")
            os.makedirs(os.path.join(root, etc.lstrip("/")))
            shutil.copy(inst.config_file(), os.path.join(root, etc.lstrip("/"), "sessiond.conf"))
            tmpfiles = inst.path(inst.installed("sessiond.conf", "tmpfiles.d"))
            run(["systemd-tmpfiles", "--root=" + root, "--create", tmpfiles])

            def check(path, mode, owner, group, kind=stat.S_ISDIR):
                st = os.stat(os.path.join(root, path.lstrip("/")))
                assert kind(st.st_mode), path
                got = (oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid)
                assert got == (oct(mode), owner, group), "%s: %r, expected %r" % (path, got, (oct(mode), owner, group))

            check("/etc/sessiond", 0o750, 0, gid)  # ConfigurationDirectory=
            check(etc, 0o750, 0, gid)  # the same folder with --prefix=/usr
            check(etc + "/sessiond.conf", 0o640, 0, gid, stat.S_ISREG)
            check("/etc/sessiond/session.env", 0o640, 0, gid, stat.S_ISREG)
            check("/var/lib/sessiond", 0o700, uid, gid)
            check("/run/sessiond", 0o755, uid, gid)

            # The service user can read what ExecStartPre= reads, as laid
            # out: the file and the env file made by tmpfiles.d, which the
            # daemon parses without complaint.
            os.chmod(root, 0o755)
            conf = os.path.join(root, etc.lstrip("/"), "sessiond.conf")
            env_file = os.path.join(root, "etc/sessiond/session.env")
            cmd = [SESSIOND, "-c", conf, "--check-config"]
            as_service = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups"]
            p = run(as_service + cmd, check=False, env=clean_environ(SESSIOND_ENV_FILE=env_file))
            assert p.returncode == 0, "--check-config as the service user: exit %d\n%s%s" % (
                p.returncode, p.stdout, p.stderr)
            # ... and a user outside group sessiond cannot.
            p = run(["setpriv", "--reuid=%d" % (uid + 1000), "--regid=%d" % (gid + 1000),
                     "--clear-groups"] + cmd, check=False, env=clean_environ(SESSIOND_ENV_FILE=env_file))
            assert p.returncode != 0, "an outsider read the configuration:\n" + p.stderr

            # Applying it again keeps what is there (what every boot does).
            with open(env_file, "a") as f:
                f.write("SESSION_ENVIRONMENT=production\n")
            run(["systemd-tmpfiles", "--root=" + root, "--create", tmpfiles])
            with open(env_file) as f:
                assert "SESSION_ENVIRONMENT=production\n" in f.read()
        finally:
            shutil.rmtree(root, ignore_errors=True)


def test_exec_commands_against_a_daemon():
    """ExecStartPre= and ExecReload= exactly as the unit writes them, with
    the programs and the file of a test daemon put in."""
    with Install() as inst:
        svc = parse_unit(inst.unit("sessiond.service"))
        pre = exec_argv(unit_value(svc, "Service", "ExecStartPre"))
        reload = exec_argv(unit_value(svc, "Service", "ExecReload"))

    with Daemon() as d:
        def localize(argv):
            prog = {"sessiond": SESSIOND, "sessionctl": SESSIONCTL}[os.path.basename(argv[0])]
            args = [d.config if a.endswith("/sessiond.conf") else a for a in argv[1:]]
            # sessionctl finds the socket through the file, like the unit's.
            return [prog] + args

        env = d.environ()
        p = run(localize(pre), check=False, env=env)
        assert p.returncode == 0, "ExecStartPre=: exit %d\n%s" % (p.returncode, p.stderr)
        p = run(localize(reload), check=False, env=env)
        assert p.returncode == 0, "ExecReload=: exit %d\n%s%s" % (p.returncode, p.stdout, p.stderr)

        # A bad file: the check fails with the reason, and so does the
        # reload (synchronously: `systemctl reload` would report it), while
        # the daemon keeps serving with its old configuration.
        d.write_config({"timeout.idle_timeout": 7200, "timeout.session_lifetime": 3600})
        p = run(localize(pre), check=False, env=env)
        assert p.returncode == 1, "ExecStartPre= with a bad file: exit %d" % p.returncode
        assert "Idle timeout should be less than session lifetime" in p.stderr, p.stderr
        p = run(localize(reload), check=False, env=env)
        assert p.returncode == 1, "ExecReload= with a bad file: exit %d\n%s%s" % (p.returncode, p.stdout, p.stderr)
        assert "Idle timeout should be less than session lifetime" in p.stdout + p.stderr, p.stdout + p.stderr
        config = d.call("io.sessiond.Admin.GetConfig")["config"]
        assert config["timeout"]["session_lifetime"] != 3600, config["timeout"]
        d.stop()


def test_backup_and_restore_as_the_readme_says():
    """README "Backup and restore": an online backup, then the restore
    steps (stop, install the copy as the database 0600, drop -wal/-shm,
    start) bring back exactly the sessions of the snapshot."""
    with Daemon() as d:
        before = d.call("io.sessiond.Session.Create", {"user_id": "alice"})["token"]
        backup = os.path.join(d.tmp, "backup.db")
        d.sessionctl("backup", backup, check=0)
        assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600, oct(os.stat(backup).st_mode)
        # Refuses to replace a file without --force.
        assert d.sessionctl("backup", backup).returncode == 1
        after = d.call("io.sessiond.Session.Create", {"user_id": "bob"})["token"]
        d.stop()

        shutil.copyfile(backup, d.database)
        os.chmod(d.database, 0o600)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(d.database + suffix):
                os.unlink(d.database + suffix)
        d.start()
        r = d.call("io.sessiond.Session.Validate", {"token": before})
        assert r["session"]["user_id"] == "alice", r
        error, _ = d.connect().call_error("io.sessiond.Session.Validate", {"token": after})
        assert error == "io.sessiond.Session.NotFound", error
        d.stop()


# ---- the daemon under the unit's system call filter --------------------------
#
# Without systemd as PID 1 the unit's sandbox cannot be applied by systemd,
# but its system call filter can: the test re-executes this file as a small
# wrapper that builds the same seccomp filter with libseccomp (through
# ctypes: libseccomp2 is a dependency of systemd itself) from the
# SystemCallFilter=, RestrictAddressFamilies= and MemoryDenyWriteExecute=
# lines of the generated unit, and then execs sessiond. The groups are
# expanded by `systemd-analyze syscall-filter`, so the filter is exactly
# what systemd 252 would load. It is stricter than the unit in one way: a
# call outside the filter kills the daemon (the unit answers EPERM), so a
# forbidden call that the daemon would survive is caught too.

FILTER_WRAPPER_FLAG = "--exec-under-unit-filter"


def syscall_groups():
    out = run(["systemd-analyze", "syscall-filter", "--no-pager"]).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and current is not None:
            item = line.strip()
            if item and not item.startswith("#"):
                current.append(item)
        elif not line.strip():
            current = None
    return groups


def syscalls_of(items, groups):
    out = set()
    for item in items:
        if item.startswith("@"):
            assert item in groups, "unknown system call group " + item
            out |= syscalls_of(groups[item], groups)
        else:
            out.add(item)
    return out


def unit_syscall_filter(unit):
    """The set of system calls SystemCallFilter= lines allow, in systemd's
    semantics: allow lists add (with @default implied), ~ lists remove."""
    groups = syscall_groups()
    allowed = syscalls_of(["@default"], groups)
    for value in unit_values(unit, "Service", "SystemCallFilter"):
        deny = value.startswith("~")
        items = syscalls_of(value.lstrip("~").split(), groups)
        allowed = allowed - items if deny else allowed | items
    return allowed


def exec_under_unit_filter(unit_path, argv):
    import ctypes
    import errno
    import socket as socket_module

    unit = parse_unit(unit_path)
    allowed = unit_syscall_filter(unit)
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_void_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]

    class ArgCmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

    ACT_KILL_PROCESS, ACT_ALLOW = 0x80000000, 0x7fff0000
    CMP_NE, CMP_EQ, CMP_MASKED_EQ = 1, 4, 7
    PROT_WRITE, PROT_EXEC = 0x2, 0x4

    def act_errno(e):
        return 0x00050000 | (e & 0xffff)

    ctx = lib.seccomp_init(ACT_KILL_PROCESS)
    assert ctx, "seccomp_init failed"

    def rule(action, name, *conds):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return  # not a system call of this architecture
        arr = (ArgCmp * max(1, len(conds)))(*[ArgCmp(*c) for c in conds])
        r = lib.seccomp_rule_add_array(ctx, action, nr, len(conds), arr)
        assert r == 0, "seccomp_rule_add(%s): %d" % (name, r)

    families = unit_values(unit, "Service", "RestrictAddressFamilies")
    wx = unit_values(unit, "Service", "MemoryDenyWriteExecute") == ["yes"]
    special = set()
    if families:
        assert families == ["AF_UNIX"], families
        special.add("socket")
        if "socket" in allowed:
            # systemd answers EAFNOSUPPORT for the other families.
            rule(ACT_ALLOW, "socket", (0, CMP_EQ, socket_module.AF_UNIX, 0))
            rule(act_errno(errno.EAFNOSUPPORT), "socket", (0, CMP_NE, socket_module.AF_UNIX, 0))
    if wx:
        special |= {"mmap", "mmap2", "mprotect", "pkey_mprotect"}
        for name in ("mmap", "mmap2"):
            if name in allowed:
                rule(ACT_ALLOW, name, (2, CMP_MASKED_EQ, PROT_WRITE, 0))
                rule(ACT_ALLOW, name, (2, CMP_MASKED_EQ, PROT_EXEC, 0))
        for name in ("mprotect", "pkey_mprotect"):
            if name in allowed:
                rule(ACT_ALLOW, name, (2, CMP_MASKED_EQ, PROT_EXEC, 0))
    for name in sorted(allowed - special):
        rule(ACT_ALLOW, name)
    r = lib.seccomp_load(ctx)
    assert r == 0, "seccomp_load: %d" % r
    os.execv(argv[0], argv)


class FilteredDaemon(Daemon):
    """A test daemon started through the filter wrapper, as an unprivileged
    user like User=sessiond (as root, SQLite would fchown(2) its journal to
    the database's owner, a call of @privileged that it never makes as any
    other user)."""

    UID = GID = 65534  # nobody, nogroup

    def __init__(self, settings=None, wait=True):
        tmp = tempfile.mkdtemp(prefix="sessiond-filter-")
        os.chown(tmp, self.UID, self.GID)
        super().__init__(settings, tmpdir=tmp, wait=wait)
        self.owns_tmp = True

    @classmethod
    def filtered(cls, argv):
        """argv as the service user, under the unit's filter."""
        unit = os.path.join(BUILD, "systemd", "sessiond.service")
        return (["setpriv", "--reuid=%d" % cls.UID, "--regid=%d" % cls.GID, "--clear-groups",
                 sys.executable, os.path.abspath(__file__), FILTER_WRAPPER_FLAG, unit, "--"] + argv)

    def command(self):
        return self.filtered(super().command())

    def environ(self):
        env = super().environ()
        # LeakSanitizer stops the process with ptrace(2) at exit, which no
        # service filter allows; leaks are checked by every other test.
        # (Also when ASAN_OPTIONS is not set: a plain `meson test` in a
        # sanitizer build would otherwise spin at the first exit.)
        env["ASAN_OPTIONS"] = ":".join(x for x in (env.get("ASAN_OPTIONS"), "detect_leaks=0") if x)
        return env


def test_daemon_under_the_unit_filter():
    with open(os.path.join(BUILD, "systemd", "sessiond.service")) as f:
        assert "SystemCallFilter=" in f.read()
    # The service user is in the admin group (sysusers.d: m sessiond
    # sessiond-admin); here nobody's own group plays that part.
    with FilteredDaemon({"daemon.admin_group": "nogroup", "features.analytics": True}) as d:
        # ExecStartPre= and ExecReload= run under the same filter.
        p = run(d.filtered([SESSIOND, "-c", d.config, "--check-config"]), check=False, env=d.environ())
        assert p.returncode == 0, "--check-config under the filter: exit %d\n%s" % (p.returncode, p.stderr)
        p = run(d.filtered([SESSIONCTL, "-c", d.config, "reload"]), check=False, env=d.environ())
        assert p.returncode == 0, "sessionctl reload under the filter: exit %d\n%s%s" % (
            p.returncode, p.stdout, p.stderr)
        # Everything a day of service does: sessions, admin calls, reload,
        # every kind of cleanup, then a clean stop.
        client = {"user_agent": "Mozilla/5.0", "ip": "192.0.2.1"}
        r = d.call("io.sessiond.Session.Create", {"user_id": "alice", "client": client})
        token = r["token"]
        d.call("io.sessiond.Session.Validate", {"token": token, "client": client})
        d.call("io.sessiond.Session.Heartbeat", {"token": token})
        token = d.call("io.sessiond.Session.Rotate", {"token": token})["token"]
        d.call("io.sessiond.Session.SetSyncState", {"token": token, "data": "{}"})
        d.call("io.sessiond.Session.GetClientConfig")
        for method in ("Status", "Health", "Metrics", "Alerts", "Analytics"):
            d.call("io.sessiond.Admin." + method)
        for kind in ("regular", "batch", "deep"):
            d.call("io.sessiond.Admin.Cleanup", {"kind": kind})
        d.call("io.sessiond.Admin.Reload")
        d.signal(signal.SIGHUP)
        d.call("io.sessiond.Session.Validate", {"token": token, "client": client})
        d.stop()  # asserts exit status 0: SIGSYS would be -31
        # A second start opens the existing database and key.
        d.start()
        d.call("io.sessiond.Session.Validate", {"token": token, "client": client})
        d.stop()


class FilteredActivatedDaemon(FilteredDaemon):
    """FilteredDaemon given a listening TCP socket the way systemd passes
    sessiond-metrics.socket: fd 3, LISTEN_FDS=1, LISTEN_FDNAMES=metrics."""

    def __init__(self, sock, settings=None):
        self.metrics_sock = sock
        super().__init__(settings)

    def start(self, wait=True):
        fd = self.metrics_sock.fileno()
        env = self.environ()
        env.update({"LISTEN_FDS": "1", "LISTEN_FDNAMES": "metrics"})

        def to_fd3():
            os.dup2(fd, 3)
            os.set_inheritable(3, True)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"] + self.command(),
                                     stdout=self.log, stderr=self.log, env=env, preexec_fn=to_fd3, pass_fds=(3,))
        if wait:
            self.wait_ready()


def test_metrics_endpoint_under_the_unit_filter():
    # The sandbox may not open IP sockets (RestrictAddressFamilies=AF_UNIX,
    # emulated by the filter wrapper): daemon.metrics_listen alone fails the
    # start and says what to do instead ...
    import socket
    import urllib.request
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with FilteredDaemon({"daemon.metrics_listen": "127.0.0.1:%d" % port}, wait=False) as d:
        assert d.proc.wait(timeout=30) == 1, d.read_log()
        log = d.read_log()
        assert "Address family not supported" in log and "sessiond-metrics.socket" in log, log
    # ... while the socket systemd makes (sessiond-metrics.socket) is served
    # under the same filter, by the HTTP threads too.
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        port = lsock.getsockname()[1]
        with FilteredActivatedDaemon(lsock, {"monitoring.metrics_interval": 3600}) as d:
            d.call("org.varlink.service.GetInfo")
            d.call("io.sessiond.Session.Create", {"user_id": "alice"})
            for _ in range(3):
                with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
                    body = r.read().decode()
                assert r.status == 200 and "sessiond_sessions_created_total " in body, body[:300]
            d.signal(signal.SIGHUP)
            d.call("org.varlink.service.GetInfo")
            d.stop()  # 0: no SIGSYS in any thread


if sys.argv[1:2] == [FILTER_WRAPPER_FLAG]:
    assert sys.argv[3] == "--"
    exec_under_unit_filter(sys.argv[2], sys.argv[4:])

run_tests([
    test_units_verify,
    test_security_exposure,
    test_unit_contract,
    test_sysusers,
    test_tmpfiles,
    test_exec_commands_against_a_daemon,
    test_backup_and_restore_as_the_readme_says,
    test_daemon_under_the_unit_filter,
    test_metrics_endpoint_under_the_unit_filter,
])
