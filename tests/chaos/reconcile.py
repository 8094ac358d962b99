#!/usr/bin/env python3
"""tests/chaos/reconcile.py - the chaos run's independent reconciliation.

It reads Redis directly (a small RESP client over the unix socket; nothing
of stepq's code or counters is used) and the files the chaos run wrote.

  reconcile.py twins SOCK [records]   every old key (job:*, jobs:*, worker:W:jobs)
                                      against its new twin where both exist: type,
                                      content, absolute expiry (2 s tolerance);
                                      with "records", only the steps' records and
                                      progress (job:{id}, job:{id}:progress)
  reconcile.py steps SOCK DIR SIDE    every acknowledged id (DIR/submitted) read
                                      on SIDE (old, new, or phase: the side the
                                      stored phase reads, new else old in dual-read
                                      and step-primary): completed, failed by
                                      policy or cancelled by us; none lost, none
                                      run twice at once (DIR/overlaps), none
                                      resurrected (a cancelled step started again,
                                      an ended step back in a queue); with worker
                                      logs whose lines carry a time stamp (the
                                      randomized walk's), none run again after a
                                      worker reported its end, none completed twice
  reconcile.py snapshot SOCK DIR TAG  the randomized walk's look after each of its
                                      operations: reads the stored phase and every
                                      acknowledged id on the side that phase reads
                                      (only that side: in 'step' no old key is read,
                                      or cleanup would see a reader), in one
                                      MULTI/EXEC; an id seen ended
                                      (completed, failed, cancelled) earlier and
                                      now pending or active is resurrected (appended
                                      to DIR/resurrected with TAG). Prints "phase P",
                                      "unfinished N" (pending or active now) and
                                      "resurrected N" (new ones). In 'step', an old
                                      record listed in DIR/deleted that exists again
                                      is resurrected too
  reconcile.py deleted SOCK DIR       writes DIR/deleted: the acknowledged ids whose
                                      old record does not exist (after a cleanup)

Each prints its figures as "name value" lines and exits 1 on a violation.

  reconcile.py serve SOCK             one process for many looks (Python takes
                                      longer to start than a look takes): reads
                                      commands from stdin, one a line, as above
                                      without SOCK ("snapshot DIR TAG"), and answers
                                      each with its output and a line "--end-- RC"
"""
import contextlib
import io
import os
import socket
import sys
import traceback

TTL_TOLERANCE_MS = 2000
# A run claimed just before a cancel may log its start a little after the
# cancel returned; a start later than this after the cancel is a resurrection.
CANCEL_GRACE_US = 2000000


class Redis:
    """Just enough RESP2 for pipelined commands."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.f = self.sock.makefile("rb")

    @staticmethod
    def _encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _read(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode("utf-8", "surrogateescape")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ValueError("bad reply %r" % line)

    def pipeline(self, cmds, chunk=500):
        replies = []
        for i in range(0, len(cmds), chunk):
            part = cmds[i:i + chunk]
            self.sock.sendall(b"".join(self._encode(c) for c in part))
            replies.extend(self._read() for _ in part)
        return replies

    def call(self, *args):
        r = self.pipeline([args])[0]
        if isinstance(r, RuntimeError):
            raise r
        return r

    def scan(self):
        cursor, keys = "0", []
        while True:
            cursor, page = self.call("SCAN", cursor, "COUNT", 1000)
            keys.extend(page)
            if cursor == "0":
                return sorted(set(keys))


FIXED = {"jobs:" + q: "steps:" + q for q in ("pending", "active", "completed", "failed")}


def new_twin(key):
    """The new name of an old key of the map, or None for any other key."""
    if key in FIXED:
        return FIXED[key]
    parts = key.split(":")
    if parts[0] == "job" and len(parts) == 2:
        return "step:" + parts[1]
    if parts[0] == "job" and len(parts) == 3 and parts[2] == "progress":
        return "step:%s:progress" % parts[1]
    if parts[0] == "worker" and len(parts) == 3 and parts[2] == "jobs":
        return "worker:%s:steps" % parts[1]
    return None


def old_twin(key):
    if key in FIXED.values():
        return "jobs:" + key[len("steps:"):]
    parts = key.split(":")
    if parts[0] == "step" and len(parts) == 2:
        return "job:" + parts[1]
    if parts[0] == "step" and len(parts) == 3 and parts[2] == "progress":
        return "job:%s:progress" % parts[1]
    if parts[0] == "worker" and len(parts) == 3 and parts[2] == "steps":
        return "worker:%s:jobs" % parts[1]
    return None


def snapshot(r, keys):
    """(type, canonical content, pexpiretime) of each key, pipelined."""
    types = r.pipeline([("TYPE", k) for k in keys])
    reads = {"hash": "HGETALL", "set": "SMEMBERS", "string": "GET", "list": "LRANGE"}
    cmds = []
    for k, t in zip(keys, types):
        if t == "zset":
            cmds.append(("ZRANGE", k, 0, -1, "WITHSCORES"))
        elif t == "list":
            cmds.append(("LRANGE", k, 0, -1))
        else:
            cmds.append((reads.get(t, "TYPE"), k))
    contents = r.pipeline(cmds)
    expiries = r.pipeline([("PEXPIRETIME", k) for k in keys])
    out = {}
    for k, t, c, e in zip(keys, types, contents, expiries):
        if t in ("hash", "zset"):
            c = sorted(zip(c[0::2], c[1::2]))
        elif t == "set":
            c = sorted(c)
        out[k] = (t, c, e)
    return out


def twins(r, records_only=False):
    keys = r.scan()
    olds = [k for k in keys if new_twin(k)]
    print("old_keys %d" % len(olds))
    if records_only:
        # Before a backfill has merged them, the new collections hold only
        # what the dual writes put there; the records are whole on both sides.
        olds = [k for k in olds if k.startswith("job:")]
    news = set(k for k in keys if old_twin(k))
    pairs = [(o, new_twin(o)) for o in olds if new_twin(o) in news]
    snap = snapshot(r, [k for p in pairs for k in p])
    unequal = []
    for o, n in pairs:
        to, co, eo = snap[o]
        tn, cn, en = snap[n]
        if to == "none" or tn == "none":
            continue  # expired between the scan and the read
        ttl_ok = (eo < 0 and en < 0) or (eo >= 0 and en >= 0 and abs(eo - en) <= TTL_TOLERANCE_MS)
        if to != tn or co != cn or not ttl_ok:
            unequal.append((o, n, "type" if to != tn else "content" if co != cn else "expiry"))
    old_only = [o for o in olds if new_twin(o) not in news]
    new_only = [n for n in news if old_twin(n) not in set(olds)]
    print("keys_compared %d" % len(pairs))
    print("keys_unequal %d" % len(unequal))
    print("old_only %d" % len(old_only))
    print("new_only %d" % len(new_only))
    for o, n, why in unequal[:10]:
        print("unequal %s %s (%s): %r / %r" % (o, n, why, snap[o][:2], snap[n][:2]))
    return 1 if unequal else 0


def read_lines(path):
    try:
        with open(path) as f:
            return [ln.split() for ln in f if ln.strip()]
    except FileNotFoundError:
        return []


PREFIX = {"old": "job:", "new": "step:"}
# The sides each phase reads, the first one first (docs/migration.md).
READS = {"job": ("old",), "dual-write": ("old",), "dual-read": ("new", "old"),
         "step-primary": ("new", "old"), "step": ("new",)}
ENDED = ("completed", "failed", "cancelled")


def stored_phase(r):
    return r.call("HGET", "stepq:phase", "phase") or "job"


def side_queues(r, side):
    qpfx = "jobs:" if side == "old" else "steps:"
    queues = {"pending": set(r.call("ZRANGE", qpfx + "pending", 0, -1))}
    for q in ("active", "completed", "failed"):
        queues[q] = set(r.call("SMEMBERS", qpfx + q))
    return queues


def worker_ends(d):
    """{id: [(time, 'completed'|'failed')]} from time-stamped worker logs.

    The randomized walk stamps each line of a worker's stderr with the time
    it was read ("TIME stepq worker W: step ID completed"), just after the
    worker's report was acknowledged by Redis. Other logs yield nothing."""
    ends = {}
    for name in sorted(os.listdir(d)):
        if not (name.startswith("worker") and name.endswith(".log")):
            continue
        for w in read_lines(os.path.join(d, name)):
            if len(w) < 6 or not w[0].isdigit() or w[1:3] != ["stepq", "worker"] or w[4] != "step":
                continue
            if w[6:7] == ["completed"]:
                ends.setdefault(w[5], []).append((int(w[0]), "completed"))
            elif w[6:9] == ["failed", "(no", "attempts"]:
                ends.setdefault(w[5], []).append((int(w[0]), "failed"))
    return ends


def ran_again(d, runs, fig, bad):
    """A step ends once: no run of it starts after a worker's report of its
    end was acknowledged (completed, or failed with no attempts left), and it
    is completed at most once. A run whose worker died before its report is
    not an end: running it again is the at-least-once promise."""
    ends = worker_ends(d)
    fig["ran_again"] = fig["completed_twice"] = 0
    for i, e in sorted(ends.items()):
        first = min(t for t, _ in e)
        later = [w for w in runs if w[0] == "start" and w[1] == i and int(w[3]) > first]
        if later:
            fig["ran_again"] += 1
            bad.append("ran again %s: %d run(s) started after a worker reported it %s" % (
                i, len(later), min(e)[1]))
        if sum(1 for _, k in e if k == "completed") > 1:
            fig["completed_twice"] += 1
            bad.append("completed twice %s: %d completions acknowledged" % (
                i, sum(1 for _, k in e if k == "completed")))


def snapshot_read(r, ids):
    """(phase, {id: {side: status}}, {id: old record exists}) in one MULTI/EXEC.

    Only the sides the phase reads are read: in 'step' a read of an old key
    is what cleanup's reader check looks for (OBJECT IDLETIME), so there the
    old records are only tested with EXISTS, which does not touch a key. The
    phase is read first; only the walk moves it, and never during a look."""
    for _ in range(3):
        phase = stored_phase(r)
        sides = READS[phase]
        cmds = [("MULTI",), ("HGET", "stepq:phase", "phase")]
        for i in ids:
            cmds += [("HGET", PREFIX[x] + i, "status") for x in sides]
            if phase == "step":
                cmds.append(("EXISTS", "job:" + i))
        cmds.append(("EXEC",))
        rep = r.pipeline(cmds)[-1]
        if not isinstance(rep, list):
            raise RuntimeError("snapshot: EXEC failed: %r" % (rep,))
        if (rep[0] or "job") != phase:
            continue
        per = len(sides) + (phase == "step")
        status, old_there = {}, {}
        for n, i in enumerate(ids):
            row = rep[1 + per * n:1 + per * (n + 1)]
            status[i] = {x: (v if isinstance(v, str) else None) for x, v in zip(sides, row)}
            old_there[i] = row[-1] == 1 if phase == "step" else None
        return phase, status, old_there
    raise RuntimeError("snapshot: the phase kept changing")


def snapshot_look(r, d, tag):
    """See the module's doc: one look of the randomized walk."""
    ids = sorted(set(w[0] for w in read_lines(os.path.join(d, "submitted"))))
    phase, status, old_there = snapshot_read(r, ids)
    path = os.path.join(d, "ended")
    ended = {w[0]: w[1:] for w in read_lines(path)}
    seen = set(w[0] for w in read_lines(os.path.join(d, "resurrected")))
    unfinished = fresh = 0
    new_ends = []
    for i in ids:
        st = status[i]
        now = next((st[x] for x in READS[phase] if st[x]), None)
        if now in ("pending", "active"):
            unfinished += 1
            if i in ended and i not in seen:  # each one is told once
                fresh += 1
                with open(os.path.join(d, "resurrected"), "a") as f:
                    f.write("%s %s at %s, now %s at %s (phase %s; %s)\n" % (
                        i, ended[i][0], ended[i][1], now, tag, phase,
                        ", ".join("%s %s" % (x, st[x]) for x in READS[phase])))
        elif now in ENDED and i not in ended:
            new_ends.append("%s %s %s\n" % (i, now, tag))
    with open(path, "a") as f:
        f.writelines(new_ends)
    # Old records a cleanup deleted in 'step' stay deleted while the phase
    # stays there and nothing is restored (the walk drops DIR/deleted then).
    deleted = set(w[0] for w in read_lines(os.path.join(d, "deleted")))
    if phase == "step" and deleted:
        for i in ids:
            if i in deleted and i not in seen and old_there[i]:
                fresh += 1
                with open(os.path.join(d, "resurrected"), "a") as f:
                    f.write("%s old record deleted by a cleanup is back at %s\n" % (i, tag))
    print("phase %s" % phase)
    print("unfinished %d" % unfinished)
    print("resurrected %d" % fresh)
    return 0


def mark_deleted(r, d):
    """Writes DIR/deleted: the acknowledged ids whose old record is gone."""
    ids = sorted(set(w[0] for w in read_lines(os.path.join(d, "submitted"))))
    there = r.pipeline([("EXISTS", "job:" + i) for i in ids])
    with open(os.path.join(d, "deleted"), "w") as f:
        f.writelines("%s\n" % i for i, e in zip(ids, there) if e == 0)
    print("deleted %d" % sum(1 for e in there if e == 0))
    return 0


def steps(r, d, side):
    ids = sorted(set(w[0] for w in read_lines(os.path.join(d, "submitted"))))
    cancelled = {w[0]: int(w[1]) for w in read_lines(os.path.join(d, "cancelled"))}
    runs = read_lines(os.path.join(d, "runs.log"))
    overlaps = read_lines(os.path.join(d, "overlaps"))
    phase = stored_phase(r)
    sides = READS[phase] if side == "phase" else (side,)
    old_h = r.pipeline([("HGETALL", "job:" + i) for i in ids]) if "old" in sides else [None] * len(ids)
    new_h = r.pipeline([("HGETALL", "step:" + i) for i in ids]) if "new" in sides else [None] * len(ids)
    queues_of = {s: side_queues(r, s) for s in sides}
    ended_ok = set(w[1] for w in runs if w[0] == "end" and w[4] == "ok")
    fig = dict(submitted=len(ids), completed=0, failed=0, cancelled=0, lost=0, stuck=0,
               failed_early=0, wrong_set=0, completed_without_run=0, resurrected=0)
    bad = []
    for i, ho, hn in zip(ids, old_h, new_h):
        # The first side the phase reads that holds the record (new, else old).
        h, s = (hn, "new") if hn else (ho, "old")
        queues = queues_of.get(s, {})
        f = dict(zip(h[0::2], h[1::2])) if h else {}
        st = f.get("status")
        if not f:
            fig["lost"] += 1
            bad.append("lost %s: no %s (phase %s)" % (i, " nor ".join(PREFIX[x] + i for x in sides), phase))
            continue
        if st in ("pending", "active"):
            fig["stuck"] += 1
            bad.append("stuck %s: still %s" % (i, st))
            continue
        in_sets = [q for q in queues if i in queues[q]]
        if st == "cancelled":
            fig["cancelled"] += 1
            if i not in cancelled:
                bad.append("cancelled %s without a cancel of ours" % i)
            if in_sets:
                fig["wrong_set"] += 1
                bad.append("cancelled %s is in %s" % (i, in_sets))
            continue
        if i in cancelled:
            fig["resurrected"] += 1
            bad.append("resurrected %s: cancelled, now %s" % (i, st))
            continue
        fig[st] = fig.get(st, 0) + 1
        if in_sets != [st]:
            fig["wrong_set"] += 1
            bad.append("%s %s is in %s" % (st, i, in_sets))
        if st == "failed" and f.get("attempts") != f.get("max_attempts"):
            fig["failed_early"] += 1
            bad.append("failed %s after %s of %s attempts: %s" % (
                i, f.get("attempts"), f.get("max_attempts"), f.get("error")))
        if st == "completed" and i not in ended_ok:
            fig["completed_without_run"] += 1
            bad.append("completed %s but no run of it ended" % i)
    # A cancel that was acknowledged at time T: no run of that step may start after T.
    for w in runs:
        if w[0] == "start" and w[1] in cancelled and int(w[3]) > cancelled[w[1]] + CANCEL_GRACE_US:
            fig["resurrected"] += 1
            bad.append("resurrected %s: started after its cancel" % w[1])
    ran_again(d, runs, fig, bad)
    known = set(ids)
    all_ids = set().union(*(set().union(*q.values()) for q in queues_of.values()))
    fig["unacknowledged_present"] = len(all_ids - known)
    fig["runs_started"] = sum(1 for w in runs if w[0] == "start")
    fig["runs_killed_or_stopped"] = fig["runs_started"] - sum(1 for w in runs if w[0] == "end")
    fig["duplicated"] = len(set(w[1] for w in overlaps))
    for w in overlaps[:10]:
        bad.append("overlap: %s ran twice at once (pid %s)" % (w[1], w[2]))
    for k, v in fig.items():
        print("%s %d" % (k, v))
    for b in bad[:20]:
        print("problem " + b)
    # What Redis holds for each step in trouble, on both sides.
    # Not the old side in 'step': cleanup would take the read for a reader.
    for i in sorted(set(b.split()[1].rstrip(":") for b in bad if b.split()[0] in ("lost", "stuck")))[:5]:
        for p in ("job:", "step:") if phase != "step" else ("step:",):
            print("problem   %s%s = %r" % (p, i, r.call("HGETALL", p + i)))
        sets = [q for q in ("jobs:pending", "steps:pending")
                if (phase != "step" or q[0] == "s") and r.call("ZSCORE", q, i) is not None]
        sets += [q for q in ("jobs:active", "steps:active", "jobs:completed", "steps:completed",
                             "jobs:failed", "steps:failed")
                 if (phase != "step" or q[0] == "s") and r.call("SISMEMBER", q, i) == 1]
        print("problem   %s is in %s" % (i, sets))
    violations = (fig["lost"] + fig["stuck"] + fig["duplicated"] + fig["resurrected"] +
                  fig["failed_early"] + fig["wrong_set"] + fig["completed_without_run"] +
                  fig["ran_again"] + fig["completed_twice"])
    return 1 if violations or not ids else 0


COMMANDS = {"twins": (0, 1), "steps": (2,), "snapshot": (2,), "deleted": (1,)}


def usage_ok(words):
    if (not words or words[0] not in COMMANDS or len(words) - 1 not in COMMANDS[words[0]]
            or (words[0] == "steps" and words[2] not in ("old", "new", "phase"))
            or (words[0] == "twins" and words[1:] not in ([], ["records"]))):
        print("usage: reconcile.py twins SOCK [records] | steps SOCK DIR old|new|phase"
              " | snapshot SOCK DIR TAG | deleted SOCK DIR | serve SOCK", file=sys.stderr)
        return False
    return True


def run(r, words):
    """Runs one command (its words without SOCK); returns its exit code."""
    if not usage_ok(words):
        return 2
    if words[0] == "twins":
        return twins(r, words[1:] == ["records"])
    if words[0] == "snapshot":
        return snapshot_look(r, words[1], words[2])
    if words[0] == "deleted":
        return mark_deleted(r, words[1])
    return steps(r, words[1], words[2])


def serve(r):
    for line in sys.stdin:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                rc = run(r, line.split())
            except Exception:  # a broken look is reported, and the next one runs
                traceback.print_exc(file=out)
                rc = 3
        sys.stdout.write(out.getvalue())
        sys.stdout.write("--end-- %d\n" % rc)
        sys.stdout.flush()
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "serve":
        return serve(Redis(argv[2]))
    words = argv[1:2] + argv[3:]
    if len(argv) < 3 or not usage_ok(words):
        return 2
    return run(Redis(argv[2]), words)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
