#!/usr/bin/env python3
"""Mutation testing of the rollout engine against its unit tests (lockstep_engine_tests).

Run through scripts/mutate.sh:

  scripts/mutate.sh                     baseline, then every mutation of scripts/mutations.txt
  scripts/mutate.sh --check             only check that every mutation applies exactly once
  scripts/mutate.sh --only ID[,ID...]   run these mutations only
  scripts/mutate.sh --keep              leave the last mutation applied in the copy

The tracked tree (`git ls-files`, with the working tree's contents of those files) is copied
to ${TMPDIR:-/tmp}/lockstep-mutate/src, built in .../build (configured once, like
scripts/build.sh configures build/; kept between runs so the build and ccache stay warm),
and only the target lockstep_engine_tests is built. The real working tree is only read.

Each mutation is one exact-substring replacement; its "old" text must occur exactly once in
its file. Outcomes:
  KILLED       the tests failed, crashed or timed out
  SURVIVED     the tests passed: they do not notice the change
  BUILD-ERROR  the mutated tree does not build (a mutation must compile; not a kill)
  STALE        the old text does not occur exactly once (the file changed: fix the list)

The score counts mutations that built and ran: killed / (killed + survived).
Exit status: 0 all killed; 3 some survived; 1 stale or build errors (these take precedence:
the list needs fixing before the score means anything), a failing baseline, or another run
holding the scratch directory; 2 usage errors and a malformed mutations file; 130 interrupted.

Logs of the last run: ${TMPDIR:-/tmp}/lockstep-mutate/logs/<id>.build.log and <id>.test.log.

Environment: TMPDIR (scratch parent), BUILD_TYPE (default RelWithDebInfo, as build.sh),
MUTATE_JOBS (default 2), MUTATE_TEST_TIMEOUT (s, default 300), MUTATE_BUILD_TIMEOUT (s, per
mutation, default 1800), MUTATE_BASELINE_BUILD_TIMEOUT (s, default 7200; the first build of
the copy builds every dependency of the target).
"""

import argparse
import fcntl
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

TARGET = "lockstep_engine_tests"
# Also run, when the unit tests pass: seeded random histories (a few seconds' worth).
CHAOS_TARGET = "lockstep_engine_chaos_tests"
CHAOS_SEEDS = os.environ.get("MUTATE_CHAOS_SEEDS", "60")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def env_int(name, default):
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        n = int(value)
    except ValueError:
        sys.exit(f"mutate: {name}={value!r} is not an integer")
    if n <= 0:
        sys.exit(f"mutate: {name} must be positive")
    return n


# ------------------------------------------------------------------ the mutations file


class Mutation:
    def __init__(self, mid, line):
        self.id = mid
        self.line = line  # line of its "## id:" in the mutations file
        self.file = ""
        self.what = ""
        self.old = None
        self.new = None


class ListError(Exception):
    pass


def parse_mutations(path):
    """Parses the hand-edited list. Raises ListError naming the line of the first problem."""
    try:
        with open(path, encoding="utf-8", newline=None) as f:
            lines = f.read().split("\n")
    except OSError as e:
        raise ListError(f"{path}: {e.strerror}")
    if lines and lines[-1] == "":
        lines.pop()
    out = []
    seen = {}
    cur = None
    mode = "outside"  # outside | header | old | new
    buf = []

    def fail(lineno, msg):
        raise ListError(f"{path}:{lineno}: {msg}")

    for lineno, line in enumerate(lines, 1):
        if mode in ("old", "new"):
            if line.rstrip() == "--- new" and mode == "old":
                cur.old = "\n".join(buf)
                buf = []
                mode = "new"
            elif line.rstrip() == "--- end" and mode == "new":
                cur.new = "\n".join(buf)
                buf = []
                if not cur.old:
                    fail(cur.line, f"mutation {cur.id}: the old text is empty")
                if cur.old == cur.new:
                    fail(cur.line, f"mutation {cur.id}: old and new are the same")
                out.append(cur)
                cur = None
                mode = "outside"
            elif line.rstrip() in ("--- old", "--- new", "--- end"):
                fail(lineno, f"unexpected {line.strip()!r} in mutation {cur.id}")
            else:
                buf.append(line)
            continue
        stripped = line.strip()
        m = re.match(r"^##\s*(id|file|what):\s?(.*)$", line)
        if m and m.group(1) == "id":
            if mode == "header":
                fail(lineno, f"mutation {cur.id} has no '--- old' block")
            mid = m.group(2).strip()
            if not ID_RE.match(mid):
                fail(lineno, f"bad id {mid!r} (letters, digits, '.', '_', '-')")
            if mid in seen:
                fail(lineno, f"id {mid} already used on line {seen[mid]}")
            seen[mid] = lineno
            cur = Mutation(mid, lineno)
            mode = "header"
        elif m:
            if mode != "header":
                fail(lineno, f"'## {m.group(1)}:' outside a mutation (start one with '## id:')")
            value = m.group(2).strip()
            if m.group(1) == "file":
                cur.file = value
            else:
                cur.what = (cur.what + " " + value).strip()
        elif stripped == "--- old":
            if mode != "header":
                fail(lineno, "'--- old' without a '## id:' before it")
            if not cur.file:
                fail(lineno, f"mutation {cur.id} has no '## file:'")
            f = cur.file
            if f.startswith("/") or ".." in f.split("/") or "\\" in f:
                fail(lineno, f"mutation {cur.id}: file {f!r} must be a path inside the repo")
            mode = "old"
            buf = []
        elif stripped in ("--- new", "--- end"):
            if mode == "header":
                fail(lineno, f"mutation {cur.id}: expected '--- old' before {stripped!r}")
            fail(lineno, f"{stripped!r} outside a mutation block")
        elif stripped == "" or stripped.startswith("#"):
            continue  # blank lines and comments
        else:
            fail(lineno, f"unexpected text outside a block: {line[:60]!r}")
    if mode == "header":
        fail(cur.line, f"mutation {cur.id} has no '--- old' block")
    if mode in ("old", "new"):
        fail(cur.line, f"mutation {cur.id} is not closed with '--- end'")
    return out


def occurrences(text, needle):
    """How many times needle occurs in text, overlaps included, counting no further than 2."""
    n = 0
    i = text.find(needle)
    while i != -1 and n < 2:
        n += 1
        i = text.find(needle, i + 1)
    return n


def read_text(path):
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        return f.read()


def write_text(path, text):
    # A fresh mtime on every write: the build must see the change (and the restore).
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
        f.write(text)


def stale_reason(root, m, tracked):
    """None if m applies exactly once to its file under root, else why not."""
    if tracked is not None and m.file not in tracked:
        return f"{m.file} is not tracked by git"
    path = os.path.join(root, m.file)
    try:
        text = read_text(path)
    except OSError as e:
        return f"{m.file}: {e.strerror}"
    n = occurrences(text, m.old)
    if n == 1:
        return None
    return f"old text {'not found' if n == 0 else 'occurs more than once'} in {m.file}"


# ------------------------------------------------------------------ processes


class Interrupted(Exception):
    pass


def on_signal(signum, frame):
    raise Interrupted()


def run_bounded(cmd, timeout, log_path, cwd=None, env=None):
    """Runs cmd in its own process group, output to log_path. Returns (rc, timed_out, secs).
    On timeout or interruption the whole group (only what this call started) is ended."""
    start = time.monotonic()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                end_group(proc)
                rc = proc.returncode
                log.write(f"\n[mutate] timed out after {timeout} s; process group ended\n")
        except BaseException:
            end_group(proc)
            raise
    return rc, timed_out, time.monotonic() - start


def end_group(proc):
    if proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


# ------------------------------------------------------------------ the copy


def tracked_files(root):
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, check=False, timeout=60)
    if out.returncode != 0:
        sys.exit("mutate: git ls-files failed: " + out.stderr.decode(errors="replace").strip())
    return [p for p in out.stdout.decode("utf-8", "surrogateescape").split("\0") if p]


def same_file(a, b):
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    if sa.st_size != sb.st_size or stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 16), fb.read(1 << 16)
            if ca != cb:
                return False
            if not ca:
                return True


def sync_copy(root, dst, files):
    """Makes dst hold exactly the tracked files, with the working tree's contents. Files
    whose contents did not change keep their mtime, so the build stays incremental."""
    os.makedirs(dst, exist_ok=True)
    wanted = set()
    copied = skipped = 0
    for rel in files:
        src = os.path.join(root, rel)
        out = os.path.join(dst, rel)
        if os.path.islink(src):
            target = os.readlink(src)
            wanted.add(rel)
            if os.path.islink(out) and os.readlink(out) == target:
                continue
            if os.path.lexists(out):
                remove_path(out)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            os.symlink(target, out)
            copied += 1
            continue
        if not os.path.isfile(src):
            skipped += 1  # deleted in the working tree, or a submodule
            continue
        wanted.add(rel)
        if not os.path.islink(out) and os.path.isfile(out) and same_file(src, out):
            continue
        if os.path.lexists(out):
            remove_path(out)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        shutil.copyfile(src, out)
        shutil.copymode(src, out)
        copied += 1
    removed = 0
    for dirpath, dirnames, filenames in os.walk(dst, topdown=False):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.relpath(full, dst) not in wanted:
                os.remove(full)
                removed += 1
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                if os.path.relpath(full, dst) not in wanted:
                    os.remove(full)
                    removed += 1
            elif not os.listdir(full):
                os.rmdir(full)
    return copied, removed, skipped


def remove_path(p):
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p)
    else:
        os.remove(p)


# ------------------------------------------------------------------ the run


def main():
    ap = argparse.ArgumentParser(
        prog="scripts/mutate.sh",
        description="Mutation testing of the rollout engine against lockstep_engine_tests.")
    ap.add_argument("--check", action="store_true",
                    help="only check that every mutation applies exactly once (no copy, no build)")
    ap.add_argument("--only", metavar="ID[,ID...]", action="append", default=[],
                    help="run only these mutations (may be repeated)")
    ap.add_argument("--keep", action="store_true",
                    help="leave the last mutation applied in the copy for inspection")
    ap.add_argument("--list", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    here = os.path.dirname(os.path.realpath(__file__))
    root = os.path.realpath(os.path.join(here, ".."))
    list_path = args.list or os.path.join(here, "mutations.txt")
    try:
        mutations = parse_mutations(list_path)
    except ListError as e:
        print(f"mutate: {e}", file=sys.stderr)
        return 2
    if not mutations:
        print(f"mutate: {list_path} lists no mutations", file=sys.stderr)
        return 2

    if args.only:
        wanted = [x.strip() for arg in args.only for x in arg.split(",") if x.strip()]
        known = {m.id for m in mutations}
        unknown = [x for x in wanted if x not in known]
        if unknown:
            print("mutate: unknown mutation id(s): " + ", ".join(unknown), file=sys.stderr)
            return 2
        keep_ids = set(wanted)
        mutations = [m for m in mutations if m.id in keep_ids]
    width = max(len(m.id) for m in mutations)

    if args.check:
        return check(root, mutations, width)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        return run(root, mutations, width, args.keep)
    except Interrupted:
        print("mutate: interrupted", file=sys.stderr)
        return 130


def check(root, mutations, width):
    tracked = set(tracked_files(root))
    stale = 0
    for m in mutations:
        why = stale_reason(root, m, tracked)
        if why:
            stale += 1
            print(f"{m.id:<{width}}  STALE  {why}")
    if stale:
        print(f"{stale} of {len(mutations)} mutation(s) stale: update scripts/mutations.txt")
        return 1
    print(f"{len(mutations)} mutation(s): each applies exactly once")
    return 0


def run(root, mutations, width, keep):
    # Checked before anything is created: the copy must never land in the working tree.
    scratch = os.path.realpath(
        os.path.join(os.environ.get("TMPDIR") or "/tmp", "lockstep-mutate"))
    if scratch == root or scratch.startswith(root + os.sep) or root.startswith(scratch + os.sep):
        print(f"mutate: scratch directory {scratch} overlaps the repository {root}; "
              "set TMPDIR elsewhere", file=sys.stderr)
        return 1
    os.makedirs(scratch, exist_ok=True)
    src = os.path.join(scratch, "src")
    build = os.path.join(scratch, "build")
    logs = os.path.join(scratch, "logs")
    os.makedirs(logs, exist_ok=True)

    lock = open(os.path.join(scratch, ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(f"mutate: another run is using {scratch}", file=sys.stderr)
        return 1

    for name in os.listdir(logs):  # this run's logs only
        if name.endswith(".log"):
            os.remove(os.path.join(logs, name))

    jobs = env_int("MUTATE_JOBS", 2)
    test_timeout = env_int("MUTATE_TEST_TIMEOUT", 300)
    build_timeout = env_int("MUTATE_BUILD_TIMEOUT", 1800)
    baseline_timeout = env_int("MUTATE_BASELINE_BUILD_TIMEOUT", 7200)

    files = tracked_files(root)
    copied, removed, skipped = sync_copy(root, src, files)
    note(f"copy: {src} ({len(files)} tracked files; {copied} updated, {removed} removed"
         + (f", {skipped} missing from the working tree" if skipped else "") + ")")

    # As scripts/build.sh: CMake's default generator (or CMAKE_GENERATOR), BUILD_TYPE,
    # ccache as the compiler launcher when there is one.
    env = dict(os.environ)
    launcher = []
    if shutil.which("ccache"):
        env["CCACHE_BASEDIR"] = scratch
        env["CCACHE_NOHASHDIR"] = "true"
        launcher = ["-DCMAKE_CXX_COMPILER_LAUNCHER=ccache", "-DCMAKE_C_COMPILER_LAUNCHER=ccache"]
    configured = os.path.isfile(os.path.join(build, "CMakeCache.txt")) and (
        os.path.isfile(os.path.join(build, "Makefile"))
        or os.path.isfile(os.path.join(build, "build.ninja")))
    if not configured:
        build_type = os.environ.get("BUILD_TYPE") or "RelWithDebInfo"
        log = os.path.join(logs, "configure.log")
        note(f"configuring {build} ({build_type})")
        rc, timed_out, _ = run_bounded(
            ["cmake", "-S", src, "-B", build, f"-DCMAKE_BUILD_TYPE={build_type}"] + launcher,
            600, log, env=env)
        if rc != 0 or timed_out:
            print(f"mutate: configuring the copy failed; see {log}", file=sys.stderr)
            return 1

    build_cmd = ["cmake", "--build", build, "-j", str(jobs), "--target", TARGET, CHAOS_TARGET]
    chaos_env = dict(os.environ, LOCKSTEP_CHAOS_SEEDS=CHAOS_SEEDS)

    # Baseline: the unmutated copy must build and pass.
    note("baseline: building " + TARGET)
    log = os.path.join(logs, "baseline.build.log")
    rc, timed_out, secs = run_bounded(build_cmd, baseline_timeout, log, env=env)
    if rc != 0 or timed_out:
        print(f"mutate: BASELINE BUILD FAILED ({'timed out' if timed_out else f'exit {rc}'}): "
              f"the unmutated tree does not build; see {log}\n"
              "  (only files tracked by git are copied: `git add` new files)", file=sys.stderr)
        return 1
    binary = find_binary(build)
    chaos = find_binary(build, CHAOS_TARGET)
    if not binary or not chaos:
        print(f"mutate: built {TARGET} but cannot find its binary under {build}", file=sys.stderr)
        return 1
    log = os.path.join(logs, "baseline.test.log")
    rc, timed_out, tsecs = run_bounded([binary, "--gtest_brief=1"], test_timeout, log, cwd=build)
    if rc == 0 and not timed_out:
        rc, timed_out, _ = run_bounded([chaos, "--gtest_brief=1"], test_timeout,
                                       os.path.join(logs, "baseline.chaos.log"), cwd=build,
                                       env=chaos_env)
    if rc != 0 or timed_out:
        print(f"mutate: BASELINE TESTS FAIL ({'timed out' if timed_out else f'exit {rc}'}): "
              f"mutation testing needs a passing suite; see {log}", file=sys.stderr)
        return 1
    note(f"baseline: built in {secs:.0f} s, tests pass in {tsecs:.1f} s")

    results = []  # (mutation, outcome)
    applied = None  # (path, original text, mutation) currently applied to the copy
    try:
        for i, m in enumerate(mutations, 1):
            if applied:
                write_text(applied[0], applied[1])
                applied = None
            path = os.path.join(src, m.file)
            why = stale_reason(src, m, None)
            if why:
                outcome = "STALE"
            else:
                original = read_text(path)
                write_text(path, original.replace(m.old, m.new, 1))
                applied = (path, original, m)
                note(f"[{i}/{len(mutations)}] {m.id}: building")
                blog = os.path.join(logs, m.id + ".build.log")
                rc, timed_out, _ = run_bounded(build_cmd, build_timeout, blog, env=env)
                if rc != 0 or timed_out:
                    outcome = "BUILD-ERROR"
                else:
                    note(f"[{i}/{len(mutations)}] {m.id}: testing")
                    tlog = os.path.join(logs, m.id + ".test.log")
                    rc, timed_out, _ = run_bounded([binary, "--gtest_brief=1"], test_timeout,
                                                   tlog, cwd=build)
                    if rc == 0 and not timed_out:
                        rc, timed_out, _ = run_bounded(
                            [chaos, "--gtest_brief=1"], test_timeout,
                            os.path.join(logs, m.id + ".chaos.log"), cwd=build, env=chaos_env)
                    outcome = "KILLED" if (rc != 0 or timed_out) else "SURVIVED"
            results.append((m, outcome))
            print(f"{m.id:<{width}}  {outcome:<11}  {m.what}", flush=True)
    finally:
        if applied and not keep:
            write_text(applied[0], applied[1])
            applied = None
        elif applied:
            # Interrupted or not, --keep leaves it for inspection; the next run's copy step
            # restores the file.
            pass

    killed = [m for m, o in results if o == "KILLED"]
    survived = [m for m, o in results if o == "SURVIVED"]
    broken = [m for m, o in results if o == "BUILD-ERROR"]
    stale = [m for m, o in results if o == "STALE"]
    n = len(killed) + len(survived)
    pct = f"{100.0 * len(killed) / n:.1f}%" if n else "n/a"
    print()
    print(f"mutation score: {len(killed)} killed / {n} applied ({pct})")
    if survived:
        print(f"survivors ({len(survived)}):")
        for m in survived:
            print(f"  {m.id:<{width}}  {m.what}")
    if broken:
        print(f"build errors ({len(broken)}; logs in {logs}/<id>.build.log):")
        for m in broken:
            print(f"  {m.id:<{width}}  {m.file}")
    if stale:
        print(f"stale ({len(stale)}; old text not found exactly once: update scripts/mutations.txt):")
        for m in stale:
            print(f"  {m.id:<{width}}  {m.file}")
    if keep and applied:
        print(f"left applied in the copy: {applied[2].id} in {applied[0]}")
    if stale or broken:
        return 1
    if survived:
        return 3
    return 0


def find_binary(build, target=TARGET):
    # CMAKE_RUNTIME_OUTPUT_DIRECTORY is ${CMAKE_BINARY_DIR}/bin (top-level CMakeLists.txt).
    direct = os.path.join(build, "bin", target)
    if os.path.isfile(direct) and os.access(direct, os.X_OK):
        return direct
    for dirpath, dirnames, filenames in os.walk(build):
        dirnames[:] = [d for d in dirnames if d != "CMakeFiles"]
        if target in filenames:
            full = os.path.join(dirpath, target)
            if os.access(full, os.X_OK):
                return full
    return None


def note(msg):
    print("mutate: " + msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
