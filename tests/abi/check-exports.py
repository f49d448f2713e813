#!/usr/bin/env python3
"""libsessiond's ABI: the library exports exactly the documented API.

The documented list is the version script lib/libsessiond.sym. This test
checks, and fails on the first difference of each kind (printing all of
them):

1. the list against the installed headers (lib/include/sessiond/*.h): every
   function a header declares is listed, and nothing else is (the static
   inline *_freep helpers are not symbols);
2. the built library (BUILD/lib/libsessiond.so): `nm -D --defined-only`
   shows every listed symbol, as a function with the default version of the
   script's node, and nothing else but that node; the soname's number is
   the node's (libsessiond.so.2 <-> LIBSESSIOND_2);
3. the installed library: `meson install --destdir` into a temporary
   folder, then the same checks on what was installed, and that no internal
   header or internal library (lib/common, lib/config's private headers,
   libsessiond-internal, libsessiond-common) was installed with it.

Sanitizer builds (-Db_sanitize=...): instrumented code may define symbols of
the sanitizer runtime in the library (__asan_*, __ubsan_*, ...). Those are
the compiler's, not the library's, and are left out of the comparison; only
there, and only with those prefixes.

Usage: check-exports.py SOURCE_ROOT BUILD_ROOT B_SANITIZE
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

SANITIZER_PREFIXES = ("__asan", "___asan", "__ubsan", "__lsan", "__sanitizer", "__odr_asan", "__tsan")
PUBLIC_HEADERS = {"client.h", "config.h", "envfile.h", "varlink.h"}
INTERNAL_NAMES = {"macro.h", "sidefiles.h", "store-schema.h", "settings.h", "envfile-private.h",
                  "internal.h", "scan.h", "writer.h"}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, file=sys.stderr)


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise SystemExit("%s: exit %d\n%s%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p.stdout


def strip_comments(text):
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def version_script(path):
    """The nodes of the script, in order, each with its global names."""
    text = strip_comments(open(path).read())
    nodes = []
    for m in re.finditer(r"(\w+)\s*\{(.*?)\}\s*(\w*)\s*;", text, re.S):
        body = m.group(2)
        glob_part = body.split("local:")[0]
        glob_part = glob_part.split("global:", 1)[-1]
        names = [n.strip() for n in glob_part.split(";") if n.strip()]
        nodes.append((m.group(1), names))
    if not nodes:
        raise SystemExit("no version node in " + path)
    return nodes


def header_functions(folder):
    """Functions declared (not static inline) in the headers of folder."""
    names = set()
    for h in sorted(glob.glob(os.path.join(folder, "*.h"))):
        text = strip_comments(open(h).read())
        for m in re.finditer(r"^(?!static)(?![ \t#])[^;{}()]*?\b((?:sessiond|varlink)_\w+)\s*\(", text, re.M):
            names.add(m.group(1))
    return names


def compare(what, got, want):
    for n in sorted(got - want):
        fail("%s: %s is exported but not in lib/libsessiond.sym" % (what, n))
    for n in sorted(want - got):
        fail("%s: %s is in lib/libsessiond.sym but not exported" % (what, n))


def check_library(what, path, documented, nodes, sanitize):
    """nm -D --defined-only of the library against the script."""
    node_names = {n for n, _ in nodes}
    out = run(["nm", "-D", "--defined-only", path])
    exported = set()
    seen_nodes = set()
    skipped = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        kind, name = parts[1], parts[2]
        base, _, version = name.partition("@")
        version = version.lstrip("@")
        if kind == "A" and base in node_names:
            seen_nodes.add(base)
            continue
        if sanitize != "none" and base.startswith(SANITIZER_PREFIXES):
            skipped.append(base)
            continue
        exported.add(base)
        if base in documented:
            if kind not in ("T", "i"):
                fail("%s: %s is exported as %r, not as a function" % (what, base, kind))
            want = documented[base]
            if version != want or "@@" not in name:
                fail("%s: %s has version %r, expected the default version %s" % (what, base, name, want))
    compare(what, exported, set(documented))
    for n in sorted(node_names - seen_nodes):
        fail("%s: version node %s missing" % (what, n))
    if skipped:
        print("%s: left out %d sanitizer runtime symbols (b_sanitize=%s): %s"
              % (what, len(skipped), sanitize, " ".join(sorted(skipped)[:8])))

    dyn = run(["readelf", "-d", path])
    m = re.search(r"Library soname: \[libsessiond\.so\.(\d+)\]", dyn)
    if not m:
        fail("%s: no soname libsessiond.so.N" % what)
    elif nodes[0][0] != "LIBSESSIOND_" + m.group(1):
        fail("%s: soname libsessiond.so.%s but the script's first node is %s (bump both together)"
             % (what, m.group(1), nodes[0][0]))
    print("%s: %d symbols exported, as documented" % (what, len(exported & set(documented))))


def main():
    source, build, sanitize = sys.argv[1], sys.argv[2], sys.argv[3]
    nodes = version_script(os.path.join(source, "lib", "libsessiond.sym"))
    documented = {}
    for node, names in nodes:
        for n in names:
            if n in documented:
                fail("lib/libsessiond.sym: %s listed twice" % n)
            if "*" in n or "?" in n:
                fail("lib/libsessiond.sym: %s: list names, not patterns" % n)
            documented[n] = node

    # 1. The list is the headers' promise.
    declared = header_functions(os.path.join(source, "lib", "include", "sessiond"))
    for n in sorted(declared - set(documented)):
        fail("headers: %s is declared in lib/include/sessiond but not in lib/libsessiond.sym" % n)
    for n in sorted(set(documented) - declared):
        fail("headers: %s is in lib/libsessiond.sym but no installed header declares it" % n)

    # 2. The built library.
    check_library("build", os.path.join(build, "lib", "libsessiond.so"), documented, nodes, sanitize)

    # 3. The installed library.
    meson = shutil.which("meson") or "meson"
    destdir = tempfile.mkdtemp(prefix="sessiond-abi-")
    try:
        run([meson, "install", "-C", build, "--no-rebuild", "--quiet", "--destdir", destdir])
        installed = [os.path.join(d, f) for d, _, fs in os.walk(destdir) for f in fs]
        libs = [f for f in installed if re.search(r"/libsessiond\.so\.\d+\.\d+\.\d+$", f)]
        if len(libs) != 1:
            fail("install: expected one libsessiond.so.N.M.K, found %s" % libs)
        for lib in libs:
            check_library("installed", lib, documented, nodes, sanitize)
        headers = [f for f in installed if f.endswith(".h")]
        got = {os.path.basename(f) for f in headers}
        if got != PUBLIC_HEADERS:
            fail("install: headers %s, expected exactly %s" % (sorted(got), sorted(PUBLIC_HEADERS)))
        for f in installed:
            base = os.path.basename(f)
            if base in INTERNAL_NAMES or "internal" in base or "common" in base:
                fail("install: internal file installed: " + os.path.relpath(f, destdir))
        folders = {os.path.dirname(f) for f in headers}
        if len(folders) == 1:
            inst = header_functions(folders.pop())
            if inst != declared:
                fail("install: the installed headers declare %s, the source headers %s"
                     % (sorted(inst ^ declared), "differently"))
    finally:
        if not os.environ.get("KEEP_TMP"):
            shutil.rmtree(destdir, ignore_errors=True)

    if failures:
        print("%d problem(s) with libsessiond's exported symbols" % len(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
