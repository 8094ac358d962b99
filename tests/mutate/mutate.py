#!/usr/bin/env python3
"""tests/mutate/mutate.py - `make mutate`: does the suite notice when the
phase-critical code breaks?

Each entry of tests/mutate/mutations.txt is a deliberate bug: an exact
snippet of one file and its replacement, and the ctest tests expected to
catch it. For each entry, the snippet is replaced in a scratch copy of the
tree (never in the tree itself), the scratch build is brought up to date
(incrementally: one build directory serves every mutation, and the file is
restored after each), the entry's tests run, and the first test that fails
is the one that caught it. A mutation that no test notices SURVIVED: the
suite has a hole there.

  tests/mutate/mutate.py           run the mutations (all, or a subset)
  tests/mutate/mutate.py --check   only check that every snippet still
                                   matches the code it names (no build)
  tests/mutate/mutate.py --list    list the entries

Environment:
  MUTATE_ONLY=a,b      run only these entries (by name)
  MUTATE_SUBSET=ci     run only the entries tagged `ci`
  MUTATE_DIR=dir       the scratch tree and its build (default build-mutate)
  MUTATE_JOBS=n        ctest and build parallelism (default 2)
  MUTATE_BASELINE=0    skip the unmutated run of the selected tests

Exit status: 0 when every mutation run was caught; 1 when one survived,
when an entry is broken (its snippet no longer matches, occurs more than
once, does not build, or names a test that does not exist); 2 when the
unmutated suite already fails or the harness itself could not run.
An entry with `pending:` is expected to apply only after a change not yet
made: while its snippet does not match, it is reported as "not applicable
yet" and does not fail the run.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LIST = os.path.join(HERE, 'mutations.txt')
RUN_TIMEOUT = int(os.environ.get('MUTATE_TIMEOUT', '900'))


class Entry:
    def __init__(self, name, line):
        self.name, self.line = name, line
        self.file = None
        self.tests = []
        self.tags = []
        self.about = ''
        self.pending = ''
        self.before = None
        self.after = None

    def where(self):
        return '%s:%d' % (os.path.relpath(LIST, ROOT), self.line)


def die(msg, code=2):
    print('mutate: ' + msg, file=sys.stderr)
    sys.exit(code)


# ---------------------------------------------------------------------------
# The list
# ---------------------------------------------------------------------------

def parse(path):
    """Reads the entries: `== name`, `key: value` lines (a value may go on
    on indented lines), then `@@ from`, the exact original lines, `@@ to`,
    the replacement, `@@ end`. Lines starting with # outside a snippet are
    comments."""
    entries, cur, block, buf = [], None, None, []
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    key = None
    for n, line in enumerate(lines, 1):
        if block is not None:
            if line in ('@@ to', '@@ end'):
                text = '\n'.join(buf)
                if block == 'from':
                    cur.before = text
                else:
                    cur.after = text
                if line == '@@ to' and block != 'from':
                    die('%s:%d: "@@ to" without "@@ from"' % (path, n))
                block = 'to' if line == '@@ to' else None
                buf = []
            else:
                buf.append(line)
            continue
        if line.startswith('#') or not line.strip():
            key = None if not line.strip() else key
            continue
        if line.startswith('== '):
            cur = Entry(line[3:].strip(), n)
            if not re.fullmatch(r'[a-z0-9_]+', cur.name):
                die('%s:%d: entry name %r: use a-z, 0-9 and _' % (path, n, cur.name))
            if any(e.name == cur.name for e in entries):
                die('%s:%d: entry %r is listed twice' % (path, n, cur.name))
            entries.append(cur)
            key = None
            continue
        if cur is None:
            die('%s:%d: text before the first "== name"' % (path, n))
        if line == '@@ from':
            block, buf = 'from', []
            continue
        if line[0] in ' \t' and key:
            setattr(cur, key, getattr(cur, key) + ' ' + line.strip())
            continue
        m = re.fullmatch(r'(file|tests|tags|about|pending):\s*(.*)', line)
        if not m:
            die('%s:%d: expected "key: value", "@@ from" or "== name": %r' % (path, n, line))
        key, val = m.group(1), m.group(2).strip()
        if key in ('tests', 'tags'):
            setattr(cur, key, val.split())
            key = None
        else:
            setattr(cur, key, val)
    if block is not None:
        die('%s: the last snippet has no "@@ end"' % path)
    for e in entries:
        for what, val in (('file', e.file), ('tests', e.tests), ('@@ from', e.before),
                          ('@@ to', e.after)):
            if not val and val != '':
                die('%s: entry %r has no %s' % (e.where(), e.name, what))
        if e.before == e.after:
            die('%s: entry %r replaces its snippet with itself' % (e.where(), e.name))
    return entries


def locate(e, text):
    """'ok', 'gone' (the snippet is not in the file) or 'twice'."""
    n = text.count(e.before)
    return 'ok' if n == 1 else ('gone' if n == 0 else 'twice')


def check_entries(entries):
    """Returns {name: problem} for the entries whose snippet does not apply;
    a pending entry that does not apply yet is marked 'pending'."""
    bad = {}
    for e in entries:
        path = os.path.join(ROOT, e.file)
        if not os.path.isfile(path):
            bad[e.name] = 'its file %s does not exist (%s)' % (e.file, e.where())
            continue
        with open(path, encoding='utf-8') as f:
            state = locate(e, f.read())
        if state == 'gone' and e.pending:
            bad[e.name] = 'pending'
        elif state == 'gone':
            bad[e.name] = ('its snippet no longer matches %s: the code changed; update the '
                           'entry (%s) to the code as it is now' % (e.file, e.where()))
        elif state == 'twice':
            bad[e.name] = ('its snippet occurs more than once in %s; make it longer so that '
                           'it names one place (%s)' % (e.file, e.where()))
    return bad


# ---------------------------------------------------------------------------
# The scratch tree
# ---------------------------------------------------------------------------

def tree_files():
    out = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                         cwd=ROOT, capture_output=True, check=True).stdout
    return sorted({p for p in out.decode('utf-8', 'surrogateescape').split('\0')
                   if p and os.path.isfile(os.path.join(ROOT, p))})


def sync(src):
    """Makes src a copy of the working tree (tracked and untracked files that
    are not ignored). Only files whose content differs are written, so the
    scratch build stays incremental from one run to the next."""
    files = tree_files()
    keep = set(files)
    for p in files:
        a, b = os.path.join(ROOT, p), os.path.join(src, p)
        with open(a, 'rb') as f:
            data = f.read()
        try:
            with open(b, 'rb') as f:
                same = f.read() == data
        except OSError:
            same = False
        if not same:
            os.makedirs(os.path.dirname(b), exist_ok=True)
            shutil.copy2(a, b)
    for d, _, names in os.walk(src):
        for n in names:
            p = os.path.relpath(os.path.join(d, n), src)
            if p not in keep:
                os.unlink(os.path.join(d, n))


def write(path, text):
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)


# ---------------------------------------------------------------------------
# Build and test
# ---------------------------------------------------------------------------

class Scratch:
    def __init__(self, base, jobs):
        self.base = os.path.abspath(base)
        self.src = os.path.join(self.base, 'src')
        self.build = os.path.join(self.base, 'build')
        self.jobs = jobs
        self.redis_dir = os.path.join(self.build, 'test-redis')
        self.targets = None

    def configure(self):
        os.makedirs(self.src, exist_ok=True)
        sync(self.src)
        # Configured on every run: the tests and targets listed next must
        # be those of the tree as it is now (a test added since, say).
        r = subprocess.run(['cmake', '-S', self.src, '-B', self.build,
                            '-DCMAKE_BUILD_TYPE=RelWithDebInfo'], capture_output=True, text=True)
        if r.returncode != 0:
            die('cmake failed in %s:\n%s' % (self.build, r.stdout + r.stderr))

    def make(self, targets=None):
        """Builds (the given targets, else all); returns (ok, log tail)."""
        cmd = ['cmake', '--build', self.build, '-j%d' % self.jobs]
        if targets:
            cmd += ['--target'] + targets
        r = subprocess.run(cmd, capture_output=True, text=True)
        log = (r.stdout + r.stderr).strip().split('\n')
        errs = [ln for ln in log if 'error' in ln.lower()]
        return r.returncode == 0, '\n'.join((errs or log)[-8:])

    def tests(self):
        r = subprocess.run(['ctest', '--test-dir', self.build, '-N'], capture_output=True,
                           text=True)
        return re.findall(r'Test\s+#\d+: (\S+)', r.stdout)

    def targets_for(self, names):
        """The build targets a set of tests needs: their own binary where
        they have one, the stepq program (the CLI, HTTP, worker and
        migration tests run it), and for the cluster tests their C tools."""
        if self.targets is None:
            r = subprocess.run(['cmake', '--build', self.build, '--target', 'help'],
                               capture_output=True, text=True)
            self.targets = set(re.findall(r'^\.\.\. (\S+)', r.stdout, re.M))
        # The cluster tests' C programs (tests/cluster/*.c) are targets of
        # their own, named cluster_*.
        tools = {t for t in self.targets if t.startswith('cluster_')
                 } if any(n.startswith('cluster_') for n in names) else set()
        return sorted({n for n in names if n in self.targets} | {'stepq_cli'} | tools)

    # The private redis-server of the tests (the ctest fixture `redis`) is
    # started once for the whole run; each test owns a database and empties
    # it first, so the runs do not see each other.
    def redis(self, what):
        subprocess.run(['ctest', '--test-dir', self.build, '-R', '^redis_%s$' % what],
                       capture_output=True)

    # The Redis Cluster of the cluster tests (the ctest fixture `cluster`,
    # on ports from STEPQ_CLUSTER_PORT) is started once too, when an entry
    # names one of them.
    def cluster(self, what):
        subprocess.run(['ctest', '--test-dir', self.build, '-R', '^cluster_%s$' % what],
                       capture_output=True)

    def redis_alive(self):
        sock = os.path.join(self.redis_dir, 'redis.sock')
        r = subprocess.run(['redis-cli', '-s', sock, 'ping'], capture_output=True, text=True)
        return r.stdout.strip() == 'PONG'

    def run_tests(self, names, one_by_one=True):
        """Runs the tests; returns (failed, detail, seconds): the first test
        that failed ('' when all passed) and the first failing case its
        output names. One by one, in the order given, up to the first that
        fails: the entry's first test is the one meant to catch it, and
        usually the quickest; or all at once (the baseline)."""
        if not self.redis_alive():
            self.redis('stop')
            self.redis('start')
        t0 = time.time()
        for group in ([[n] for n in names] if one_by_one else [names]):
            failed, case = self.ctest(group)
            if failed:
                break
        return failed, case, time.time() - t0

    def ctest(self, names):
        regex = '^(%s)$' % '|'.join(re.escape(n) for n in names)
        cmd = ['ctest', '--test-dir', self.build, '-R', regex, '-FA', '.*', '--output-on-failure',
               '-j%d' % self.jobs]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             errors='replace', start_new_session=True)
        try:
            out, _ = p.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            return 'hang', 'no result after %d s' % RUN_TIMEOUT
        return first_failure(out)


STATUS = re.compile(r'^\s*\d+/\d+ Test\s+#\d+: (\S+) \.*\s*(\*+)?\s*([A-Za-z][^\d]*?)\s+[\d.]+ sec')
START = re.compile(r'^\s*Start\s+\d+: ')


def first_failure(out):
    lines = out.split('\n')
    for i, ln in enumerate(lines):
        m = STATUS.match(ln)
        if not m or m.group(3).strip() == 'Passed':
            continue
        how = m.group(3).strip()
        if how == 'Not Run':
            return 'not run: ' + m.group(1), ''
        case = ''
        for ln2 in lines[i + 1:]:
            if STATUS.match(ln2) or START.match(ln2):
                break
            c = re.match(r'^(?:FAIL|not ok)\s+(.*)', ln2)
            if c:
                case = re.sub(r'\s*\(\d+ checks?\)$', '', c.group(1).strip())
                break
        if how != 'Failed':
            case = (case + ' ' if case else '') + '[' + how.lower() + ']'
        return m.group(1), case if len(case) <= 72 else case[:69] + '...'
    if 'No tests were found' in out:
        return 'none', 'no test matched'
    return '', ''


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

def select(entries):
    only = [s for s in os.environ.get('MUTATE_ONLY', '').replace(' ', ',').split(',') if s]
    subset = os.environ.get('MUTATE_SUBSET', '')
    unknown = [n for n in only if n not in {e.name for e in entries}]
    if unknown:
        die('MUTATE_ONLY names no entry %s; see tests/mutate/mutate.py --list' %
            ', '.join(unknown))
    if only:
        return [e for e in entries if e.name in only]
    if subset:
        picked = [e for e in entries if subset in e.tags]
        if not picked:
            die('no entry is tagged %r' % subset)
        return picked
    return entries


def short(why):
    """The table's text for a broken entry: its reason up to the colon."""
    return why.split(':')[0].split(' (')[0].replace('its ', '')


def table(rows):
    heads = ('mutation', 'file', 'caught by')
    w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads[:2])]
    print('%-*s | %-*s | %s' % (w[0], heads[0], w[1], heads[1], heads[2]))
    print('%s-+-%s-+-%s' % ('-' * w[0], '-' * w[1], '-' * 40))
    for r in rows:
        print('%-*s | %-*s | %s' % (w[0], r[0], w[1], r[1], r[2]))


def main(argv):
    entries = parse(LIST)
    if '--list' in argv:
        for e in entries:
            print('%-32s %-28s %-8s %s' % (e.name, e.file, ','.join(e.tags) or '-',
                                          ' '.join(e.tests)))
        return 0
    bad = check_entries(entries)
    stale = {n: why for n, why in bad.items() if why != 'pending'}
    for e in entries:
        if e.name in stale:
            print('mutate: entry %s: %s' % (e.name, stale[e.name]), file=sys.stderr)
    if '--check' in argv:
        waiting = [n for n, why in bad.items() if why == 'pending']
        print('%d entries, %d match the code, %d not applicable yet, %d broken' %
              (len(entries), len(entries) - len(bad), len(waiting), len(stale)))
        return 1 if stale else 0

    chosen = select(entries)
    sc = Scratch(os.environ.get('MUTATE_DIR', os.path.join(ROOT, 'build-mutate')),
                 int(os.environ.get('MUTATE_JOBS', '2')))
    t_start = time.time()
    print('mutate: %d of %d entries; scratch tree %s' % (len(chosen), len(entries), sc.base))
    sc.configure()
    known = set(sc.tests())
    ok, log = sc.make(sc.targets_for(sorted({t for e in chosen for t in e.tests})))
    if not ok:
        die('the unmutated tree does not build:\n' + log)
    for e in chosen:
        missing = [t for t in e.tests if t not in known]
        if missing and e.name not in bad:
            bad[e.name] = stale[e.name] = ('it names test(s) %s, which do not exist (%s)' %
                                           (', '.join(missing), e.where()))
            print('mutate: entry %s: %s' % (e.name, stale[e.name]), file=sys.stderr)

    rows, survived, broken, waiting = [], [], [], []
    sc.redis('start')
    runnable = [e for e in chosen if e.name not in bad]
    on_cluster = any(t.startswith('cluster_') for e in runnable for t in e.tests)
    if on_cluster:
        sc.cluster('start')
    try:
        if runnable and os.environ.get('MUTATE_BASELINE', '1') != '0':
            names = sorted({t for e in runnable for t in e.tests})
            failed, case, secs = sc.run_tests(names, one_by_one=False)
            if failed:
                die('the unmutated suite fails (%s%s) in %s: a mutation cannot be judged; '
                    'fix the suite first' % (failed, ': ' + case if case else '', sc.build))
            print('mutate: baseline: %d tests pass unmutated (%.0f s)' % (len(names), secs))
        for i, e in enumerate(chosen, 1):
            tag = '[%d/%d] %s' % (i, len(chosen), e.name)
            if bad.get(e.name) == 'pending':
                waiting.append(e.name)
                rows.append((e.name, e.file, 'not applicable yet (%s)' % e.pending))
                print('%s: not applicable yet: %s' % (tag, e.pending))
                continue
            if e.name in bad:
                broken.append(e.name)
                rows.append((e.name, e.file, 'BROKEN ENTRY: ' + short(bad[e.name])))
                continue
            res = mutate_one(sc, e)
            rows.append((e.name, e.file, res[0]))
            (survived if res[1] == 'survived' else broken if res[1] == 'broken' else []).append(
                e.name)
            print('%s: %s (%.0f s)' % (tag, res[0], res[2]))
            sys.stdout.flush()
    finally:
        sc.redis('stop')
        if on_cluster:
            sc.cluster('stop')
    # An entry left out of this run whose snippet no longer matches fails
    # it too: the list must stay true whatever subset runs.
    for n in sorted(stale):
        if n not in {e.name for e in chosen}:
            broken.append(n)
            e = next(x for x in entries if x.name == n)
            rows.append((n, e.file, 'BROKEN ENTRY (not run): ' + short(stale[n])))
    print()
    table(rows)
    print()
    caught = len(rows) - len(survived) - len(broken) - len(waiting)
    print('%d caught, %d survived, %d broken entries, %d not applicable yet (%.0f s)' %
          (caught, len(survived), len(broken), len(waiting), time.time() - t_start))
    if survived:
        print('survived: %s: no test noticed; write the test that fails with it (tests/README.md)'
              % ', '.join(survived))
    return 1 if survived or broken else 0


def mutate_one(sc, e):
    """Applies one entry in the scratch tree, builds, runs its tests and
    restores the file. Returns (text for the table, outcome, seconds)."""
    path = os.path.join(sc.src, e.file)
    with open(path, encoding='utf-8') as f:
        orig = f.read()
    t0 = time.time()
    if locate(e, orig) != 'ok':
        return 'BROKEN ENTRY: the scratch copy of %s differs' % e.file, 'broken', 0
    write(path, orig.replace(e.before, e.after, 1))
    try:
        ok, log = sc.make(sc.targets_for(e.tests))
        if not ok:
            print('mutate: entry %s does not build:\n%s' % (e.name, log), file=sys.stderr)
            return 'BROKEN ENTRY: does not build', 'broken', time.time() - t0
        failed, case, _ = sc.run_tests(e.tests)
    finally:
        write(path, orig)
    secs = time.time() - t0
    if failed in ('none',) or failed.startswith('not run'):
        return 'BROKEN ENTRY: %s' % (failed if failed != 'none' else 'no test ran'), 'broken', secs
    if not failed:
        return 'SURVIVED', 'survived', secs
    return failed + (': ' + case if case else ''), 'caught', secs


if __name__ == '__main__':
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        die('interrupted; the scratch tree is restored by the next run', 2)
