/*
 * stepq.pml - the migration protocol of stepq, model-checked with spin.
 *
 * A small world: two steps submitted through stepq (ids 0 and 1) and one
 * written by the old application (id 2, the legacy writer), both
 * keyspaces' records and collections, the stored phase and the engine's
 * records. Every Lua script is one atomic transition; the engine's walks
 * (backfill, repair, cleanup, the reconcile of a rollback) are one atomic
 * transition per key or per collection, as their scripts are, and other
 * processes run between them. docs/model.md maps each transition to its
 * script or C function and says what is abstracted.
 *
 * The default is the intended (fixed) protocol of issue 10, plus the fixes
 * this model proposes (docs/model.md, "Found"). Compile-time switches:
 *   LEGACY=0|1|2   the legacy writer: none; stopped by the operator before
 *                  the verify that gates step-primary; never stopped
 *   GAP_*          a finding of the model left open (shows its trail)
 *   M_*            a seeded bug (model/mutants/): each must be caught
 *   NO_P6IDX       leave out the index half of inv2 (for mutants that need
 *                  an open gap as their source of stale entries)
 *   LITE           no client B and no worker D (the legacy runs)
 *   PH_LO, PH_HI   the stretch of the walk explored (below)
 *
 * Properties (asserts on named booleans, checked after every transition):
 *   inv1_no_partial_record       no record lost a field (invariant 1)
 *   inv2_no_resurrection         an ended step never comes back; the side
 *                                read holds no index entry its record
 *                                contradicts (invariants 2, 7)
 *   inv4_reads_verified          reads move only to a keyspace equal to
 *                                the one they leave (invariant 4)
 *   inv5_no_reader_left          no live process reads a side nobody
 *                                writes, or writes none that is read (5)
 *   inv6_no_step_lost            every submitted step is, on the side the
 *                                phase reads, in one state someone acts on
 *   inv6_no_step_run_twice       an ended step is never claimed; two live
 *                                holders never at once (invariant 6)
 *   rollback_old_complete        a rollback out of 'step' ends with every
 *                                new key's old twin equal to it
 *   legacy_kept                  a legacy step is never dropped silently
 *                                (LEGACY=2: stepq keeps and reports it)
 */

#ifndef LEGACY
#define LEGACY 0
#endif
/* The stretch of the walk one run explores (the whole walk at once is
 * too big for minutes): phases PH_LO .. PH_HI, starting in PH0 with an
 * empty keyspace (in dual-read: as a finished backfill and clean verify
 * leave it). make model runs the stretches job..dual-read and
 * dual-read..step. */
#ifndef PH_LO
#define PH_LO 0
#endif
#ifndef PH_HI
#define PH_HI 2
#endif
#ifndef PH0
#define PH0 PH_LO
#endif
/* ONE_ROLLBACK=1: at most one rollback out of step per run (a second one
 * explores the same transitions from more states) */
#ifndef ONE_ROLLBACK
#define ONE_ROLLBACK 0
#endif

#ifndef NS
#define NS  1            /* steps submitted through stepq: ids 0 .. NS-1 */
#endif
#define LID NS           /* the legacy writer's step */
#define NK  (NS + 1)     /* ids */
#define MAXA 2           /* max_attempts */

/* sides */
#define O 0
#define N 1

/* record status; 0 is "no key" */
#define NONE 0
#define PEND 1
#define ACT  2
#define DONE 3
#define FAIL 4
#define CANC 5

/* workers: A and B are live clients, D is the worker that dies */
#define WA 1
#define WB 2
#define WD 3

/* phases; NOPIN = follows the stored phase */
#define JOB  0
#define DW   1
#define DR   2
#define SP   3
#define STEP 4
#define NOPIN 7

/* A record is one byte: status, worker, attempts (= the claim's token),
 * and whether it holds a field stepq does not know (the legacy writer's). */
#define ST(x)    ((x) & 7)
#define WK(x)    (((x) >> 3) & 3)
#define ATT(x)   (((x) >> 5) & 3)
#define EXTRA(x) (((x) >> 7) & 1)
#define MK(s, w, a, e) ((s) | ((w) << 3) | ((a) << 5) | ((e) << 7))

#define R(s, i)    r[(s) * NK + (i)]
#define BIT(i)     (1 << (i))
#define IN(m, i)   ((((m) >> (i)) & 1) == 1)

/* what a phase writes and reads (lua/lib/00_prelude.lua) */
#define WOLD(p)  ((p) != STEP)
#define WNEW(p)  ((p) != JOB)
#define RSOF(p)  (((p) <= DW) -> O : N)
#define FB(p)    ((p) == DR || (p) == SP)
#define LAZY(p)  ((p) == DR)
#define ENDED(s) ((s) == DONE || (s) == FAIL || (s) == CANC)

/* ------------------------------------------------------------------ */
/* The keyspaces                                                        */
/* ------------------------------------------------------------------ */
byte r[2 * NK];          /* job:{id} / step:{id} */
/* collections, members as bits: cl[PC + side] jobs:pending / steps:pending,
 * cl[AC + side] jobs:active / steps:active. The completed and failed sets
 * and the workers' sets are indexes that nothing in the model reads (the
 * reaper finds a step's worker in its record): left out (docs/model.md). */
#define PC 0
#define AC 2
byte cl[4];

/* stepq:phase and the engine's records */
byte ph = JOB;           /* stored phase */
bit untr;                /* new side untrusted (rollback to job) */
bit rcing;               /* a rollback out of step has not finished its reconcile */
byte bf;                 /* backfill run: 0 idle, 1 running */
bit bfrep;               /* the run is a repair (--repair) */
bit bfcur;               /* the run started after the latest move into dual-write */
byte bfpos;              /* its checkpoint */
bit bfok;                /* a copy run finished in this dual-write epoch */
byte vres;               /* the last verify, when clean and still current (no
                          * phase move and no backfill or repair finished
                          * since it started): 1 forward, 2 reverse; else 0 */
/*
                          * latest move, since the latest backfill/repair finished */
byte bk;                 /* a verified old-side backup taken in the current
                          * phase (since the latest move): phase+1; else 0 */
byte sr[NK];             /* its content, when taken in step (for cleanup and restore) */
byte spend, sact;
bit cleaned;             /* a cleanup ran to its end */
byte clpos;              /* cleanup checkpoint; 0 idle */
byte rcpos;              /* rollback out of step: 0 idle, else unit+1 */
bit rcpass2;             /* ... in its second pass (after the move) */
bit rbonce;              /* ONE_ROLLBACK: a rollback out of step was started */
bit legstop;             /* LEGACY=1: the operator stopped the old application */

/* processes */
byte pinB = NOPIN;       /* client B's pin (ENABLE_DUAL_WRITE_STEPS/PRIMARY_KEY_PATTERN) */
bit aliveD = 1;
byte hold[4];            /* per worker: the step it runs (id+1), 0 none */
byte htok[4];            /* and the claim's token */

/* ghosts */
bit sub[NK];             /* submitted */
bit ended[NK];           /* completed, failed for good or cancelled */
bit lgw;                 /* the legacy writer wrote its step */

/* property flags and scratch (not part of the state) */
hidden byte inv1_no_partial_record, inv2_no_resurrection, inv4_reads_verified,
    inv5_no_reader_left, inv6_no_step_lost, inv6_no_step_run_twice,
    rollback_old_complete, legacy_kept;
hidden byte ci, cj, vw, vrs, ctmp;
/* the scripts' locals: every script is atomic and never blocks once
 * started, so they can be shared and left out of the state */
hidden byte p, rs, side, src, m, rec, i;

/* ------------------------------------------------------------------ */
/* Properties                                                           */
/* ------------------------------------------------------------------ */

/* vw := the record of step i as the stored phase reads it; vrs its side */
inline view(i)
{
    vrs = RSOF(ph);
    if
    :: ST(R(vrs, i)) != NONE -> vw = R(vrs, i)
    :: else ->
        if
        :: FB(ph) -> vw = R(O, i)
        :: else -> vw = 0
        fi
    fi
}

/* Is step i, as read, in a state that someone will act on? */
inline not_lost(i)
{
    view(i);
    if
    :: ST(vw) == NONE -> inv6_no_step_lost = 0
    :: ST(vw) == PEND ->
        inv6_no_step_lost = IN(cl[PC + vrs], i) || (FB(ph) && IN(cl[PC + O], i))
    :: ST(vw) == ACT ->
        /* its holder runs it with this token, or the holder died and
         * the reaper will find it in the active set it reads */
        inv6_no_step_lost = (hold[WK(vw)] == i + 1 && htok[WK(vw)] == ATT(vw) &&
                             (WK(vw) != WD || aliveD)) ||
                            (WK(vw) == WD && !aliveD && IN(cl[AC + vrs], i))
    :: else -> inv6_no_step_lost = 1   /* ended */
    fi;
    assert(inv6_no_step_lost)
}

/* a process pinned to 'job' reads and writes only old keys; one pinned
 * to 'dual-write' reads old and writes both: which stored phases they can
 * live with (the others read what they do not write, or the reverse) */
#define PINOK(pin, s) ((pin) == NOPIN || ((pin) == JOB && (s) <= DW) || ((pin) == DW && (s) <= SP))

inline check()
{
    /* inv1: no record lost a field (stepq's records have none extra,
     * the legacy writer's have one) */
    for (ci : 0 .. 2 * NK - 1) {
        inv1_no_partial_record = (r[ci] == 0) || (EXTRA(r[ci]) == ((ci % NK) == LID));
        assert(inv1_no_partial_record)
    }
    for (ci : 0 .. NK - 1) {
        /* inv6: no step lost */
        if
        :: sub[ci] -> not_lost(ci)
        :: else -> skip
        fi;
        /* inv2: an ended step never comes back */
        view(ci);
        inv2_no_resurrection = !ended[ci] || (ST(vw) != PEND && ST(vw) != ACT);
        assert(inv2_no_resurrection);
#ifndef NO_P6IDX
        /* inv2 + inv7 on the side read: no index entry its record
         * contradicts (nothing deleted comes back into the queues); an
         * entry without a record (an orphan, dropped by claim) is not one */
        inv2_no_resurrection = (!IN(cl[PC + vrs], ci) || ST(vw) == PEND || ST(vw) == NONE) &&
                               (!IN(cl[AC + vrs], ci) || ST(vw) == ACT || ST(vw) == NONE);
        assert(inv2_no_resurrection)
#endif
    }
    /* inv5: no live process reads a side that the phase stopped writing */
    inv5_no_reader_left = PINOK(pinB, ph);
    assert(inv5_no_reader_left);
#if LEGACY == 2
    /* a legacy step is adopted by the new side, or stays whole on the old
     * one: its record, and its queue entry while pending */
    if
    :: lgw ->
        legacy_kept = ST(R(N, LID)) != NONE ||
                      (ST(R(O, LID)) != NONE && (ST(R(O, LID)) != PEND || IN(cl[PC + O], LID)));
        assert(legacy_kept)
    :: else -> skip
    fi
#endif
}

/* ------------------------------------------------------------------ */
/* The prelude (lua/lib/00_prelude.lua)                                 */
/* ------------------------------------------------------------------ */

/* collection writes go to every side the phase p writes (coll, flush) */
inline cadd(c, i)
{
    if :: WOLD(p) -> cl[(c) + O] = cl[(c) + O] | BIT(i) :: else -> skip fi;
    if :: WNEW(p) -> cl[(c) + N] = cl[(c) + N] | BIT(i) :: else -> skip fi
}
inline cdel(c, i)
{
    if :: WOLD(p) -> cl[(c) + O] = cl[(c) + O] & ~BIT(i) :: else -> skip fi;
    if :: WNEW(p) -> cl[(c) + N] = cl[(c) + N] & ~BIT(i) :: else -> skip fi
}

/* locate(): side := where step i is read in phase p, 2 when nowhere; in
 * dual-read an old-only record is copied over (lazy migration) */
inline locate(i)
{
    if
    :: ST(R(rs, i)) != NONE -> side = rs
    :: else ->
        if
        :: !FB(p) || ST(R(O, i)) == NONE -> side = 2
        :: else ->
            if
            :: LAZY(p) ->
#ifdef M_LAZY
                /* seeded bug: HGETALL of the known fields, then HSET */
                R(N, i) = R(O, i) & 127;
#else
                R(N, i) = R(O, i);     /* COPY: all fields, the TTL */
#endif
                side = N
            :: else -> side = O        /* step-primary: a miss, no copy */
            fi
        fi
    fi
}

/* hset_at(): write the record where it was read, then COPY ... REPLACE
 * it to the other side the phase writes */
inline hset_at(s, i, v)
{
    R(s, i) = v;
    if
    :: s == O && WNEW(p) -> R(N, i) = R(O, i)
    :: s == N && WOLD(p) -> R(O, i) = R(N, i)
    :: else -> skip
    fi
}

/* retry_or_fail(): back to pending while attempts are left, else failed */
inline retry_or_fail(i, s, w)
{
    rec = R(s, i);
    cdel(AC, i);
    if
    :: ATT(rec) < MAXA ->
        hset_at(s, i, MK(PEND, WK(rec), ATT(rec), EXTRA(rec)));
        cadd(PC, i)
    :: else ->
        hset_at(s, i, MK(FAIL, WK(rec), ATT(rec), EXTRA(rec)));
        ended[i] = 1
    fi
}

#define EFF(pin) ((pin) == NOPIN -> ph : (pin))

/* The readable trail: every transition says what it did, in lines that
 * start with '@@' (printed when spin replays a trail, not while pan
 * searches). */
inline pph(x)
{
    if
    :: x == JOB -> printf("job")
    :: x == DW -> printf("dual-write")
    :: x == DR -> printf("dual-read")
    :: x == SP -> printf("step-primary")
    :: x == STEP -> printf("step")
    :: else -> printf("?")
    fi
}
inline pwho(w)
{
    if
    :: w == WA -> printf("@@ client A")
    :: w == WB -> printf("@@ client B")
    :: else -> printf("@@ worker D")
    fi;
    printf(" (phase ");
    pph(p);
    printf("): ")
}
inline pside(s)
{
    if :: s == O -> printf("old") :: s == N -> printf("new") :: else -> printf("none") fi
}

/* ------------------------------------------------------------------ */
/* Queue scripts                                                        */
/* ------------------------------------------------------------------ */

/* lua/submit.lua */
inline submit(pin, i)
{
    atomic {
        p = EFF(pin);
        if :: WOLD(p) -> R(O, i) = MK(PEND, 0, 0, 0) :: else -> skip fi;
        if :: WNEW(p) -> R(N, i) = MK(PEND, 0, 0, 0) :: else -> skip fi;
        cadd(PC, i);
        sub[i] = 1;
        printf("@@ submit step %d (phase ", i); pph(p); printf(")\n");
        check()
    }
}

/* lua/claim.lua: one member of the pending zset the phase reads (the old
 * one in the fallback phases when that is empty); a member whose record is
 * gone or not pending is dropped (claimed steps, ended steps, orphans) */
inline claim(pin, w)
{
    atomic {
        p = EFF(pin);
        rs = RSOF(p);
        if
        :: cl[PC + rs] != 0 -> src = rs
        :: cl[PC + rs] == 0 && FB(p) && cl[PC + O] != 0 -> src = O
        :: else -> src = 2
        fi;
        if
        :: src != 2 ->
            if
            :: IN(cl[PC + src], 0) -> m = 0
            :: IN(cl[PC + src], 1) -> m = 1
#if NS > 1
            :: IN(cl[PC + src], 2) -> m = 2
#endif
            fi;
            locate(m);
            if
#ifdef M_CLAIM
            :: side == 2 -> cdel(PC, m)
#else
            :: side == 2 || ST(R(side, m)) != PEND -> cdel(PC, m)
#endif
                ; pwho(w); printf("claim drops pending member %d (record on ", m); pside(side);
                printf(", status %d)\n", (side == 2 -> 0 : ST(R(side % 2, m))))
            :: else ->
                rec = R(side, m);
                pwho(w); printf("claims step %d from ", m); pside(src);
                printf(" pending, record read on "); pside(side); printf(", token %d\n", ATT(rec) + 1);
                inv6_no_step_run_twice = !ended[m] &&
                    (w == WA || hold[WA] != m + 1) && (w == WB || hold[WB] != m + 1) &&
                    (w == WD || hold[WD] != m + 1 || !aliveD);
                assert(inv6_no_step_run_twice);
                hset_at(side, m, MK(ACT, w, ATT(rec) + 1, EXTRA(rec)));
                cdel(PC, m);
                cadd(AC, m);
                hold[w] = m + 1;
                htok[w] = ATT(rec) + 1
            fi
        :: else -> skip
        fi;
        check()
    }
}

/* held_step() of the prelude: side := where the held step i is, 2 when it
 * is not held with token t any more */
inline held_step(i, t)
{
    side = rs;
    if
    :: ST(R(rs, i)) == NONE -> locate(i)
    :: else -> skip
    fi;
    if
    :: side != 2 && !(ST(R(side, i)) == ACT && ATT(R(side, i)) == t) -> side = 2
    :: else -> skip
    fi
}

/* lua/complete.lua */
inline complete(pin, w)
{
    atomic {
        p = EFF(pin);
        rs = RSOF(p);
        m = hold[w] - 1;
        held_step(m, htok[w]);
        if
        :: side != 2 ->
            rec = R(side, m);
            hset_at(side, m, MK(DONE, WK(rec), ATT(rec), EXTRA(rec)));
            cdel(AC, m);
            ended[m] = 1;
            pwho(w); printf("completes step %d\n", m)
        :: else ->   /* CONFLICT: reclaimed, cancelled or finished */
            pwho(w); printf("complete of step %d refused: not held with token %d\n", m, htok[w])
        fi;
        hold[w] = 0;
        check()
    }
}

/* lua/fail.lua */
inline fail(pin, w)
{
    atomic {
        p = EFF(pin);
        rs = RSOF(p);
        m = hold[w] - 1;
        held_step(m, htok[w]);
        if
        :: side != 2 -> pwho(w); printf("fails step %d (retry or failed)\n", m); retry_or_fail(m, side, w)
        :: else -> skip
        fi;
        hold[w] = 0;
        check()
    }
}

/* lua/cancel.lua */
inline cancel(pin, i)
{
    atomic {
        p = EFF(pin);
        rs = RSOF(p);
        locate(i);
        if
        :: side != 2 && (ST(R(side, i)) == PEND || ST(R(side, i)) == ACT) ->
            rec = R(side, i);
            hset_at(side, i, MK(CANC, WK(rec), ATT(rec), EXTRA(rec)));
            cdel(PC, i);
            cdel(AC, i);
            ended[i] = 1;
            pwho(WB); printf("cancels step %d\n", i)
        :: else -> skip   /* NOTFOUND, or CONFLICT: already ended */
        fi;
        check()
    }
}

/* ------------------------------------------------------------------ */
/* Processes                                                            */
/* ------------------------------------------------------------------ */

/* Client A: follows the stored phase; submits step 0, then works. */
proctype ClientA()
{
    submit(NOPIN, 0);
end:
    do
    :: hold[WA] == 0 -> claim(NOPIN, WA)
    :: hold[WA] != 0 -> complete(NOPIN, WA)
    :: hold[WA] != 0 -> fail(NOPIN, WA)
    od
}

/* Client B: may be pinned (init); submits step 1, works, cancels once. */
proctype ClientB()
{
    bit cancelled;
#if NS > 1
    submit(pinB, 1);
#endif
end:
    do
    :: hold[WB] == 0 -> claim(pinB, WB)
    :: hold[WB] != 0 -> complete(pinB, WB)
    :: !cancelled -> cancelled = 1; cancel(pinB, 0)
    od
}

/* Worker D claims once, then dies: its heartbeat goes, its step stays
 * active until the reaper finds it. */
proctype Dier()
{
    claim(NOPIN, WD);
    atomic { aliveD = 0; hold[WD] = 0; printf("@@ worker D dies (heartbeat gone)\n"); check() }
}

/* lua/reap.lua, intended form: a member of the active set read is
 * requeued only when its record says active, held by the dead worker; any
 * other member (not active, no record) is a stale entry, dropped. Live
 * workers A and B keep their heartbeats. */
proctype Reaper()
{
end:
    do
    :: atomic {
        p = ph;
        rs = RSOF(p);
        for (m : 0 .. NK - 1) {
            if
            :: IN(cl[AC + rs], m) ->
                locate(m);
                if
                :: side != 2 ->
                    rec = R(side, m);
#ifdef M_REAP
                    /* seeded bug (today's reap.lua): the worker field only */
                    if
                    :: WK(rec) == WD && !aliveD ->
                        printf("@@ reaper requeues step %d (status %d) of dead D\n", m, ST(rec));
                        retry_or_fail(m, side, WD)
                    :: else -> skip
                    fi
#else
                    if
                    :: ST(rec) == ACT && WK(rec) == WD && !aliveD ->
                        printf("@@ reaper requeues step %d of dead D\n", m);
                        retry_or_fail(m, side, WD)
                    :: ST(rec) != ACT ->
                        printf("@@ reaper drops stale active entry %d\n", m);
                        cdel(AC, m)
                    :: else -> skip
                    fi
#endif
                :: else -> cdel(AC, m)
                fi
            :: else -> skip
            fi
        }
        check()
       }
    od
}

/* The old application: HSET job:L (with a field stepq does not know) and
 * ZADD jobs:pending L, knowing nothing of phases. */
proctype Legacy()
{
    atomic {
        (LEGACY == 2 || !legstop) ->
        R(O, LID) = MK(PEND, 0, 0, 1);
        cl[PC + O] = cl[PC + O] | BIT(LID);
        lgw = 1;
        printf("@@ legacy app: HSET job:L, ZADD jobs:pending L (phase "); pph(ph); printf(")\n");
#if LEGACY == 1
        sub[LID] = 1;
#endif
        check()
    }
}

/* The backfill process (src/backfill.c, lua/backfill_batch.lua,
 * backfill_members.lua): units 0 and 1 the collections (pending, active),
 * merged member by member re-checking the source; units 2.. the records, copied only when the new twin is
 * absent. With --repair (dual-write only): a new twin that differs is
 * replaced, a new-only key deleted, collections made equal member by
 * member. Each unit is one script; a kill -9 is the process not running,
 * the run resumes from its checkpoint. */
#define NU (2 + NK)
#ifdef GAP_BF_WINDOW
#define RCING 0
#else
#define RCING rcing
#endif
#ifdef M_BFSTEP
#define BF_PHASE_OK (ph >= DW)
#else
#define BF_PHASE_OK (ph >= DW && ph != STEP)
#endif
#define BF_OK (bfrep -> (ph == DW && !RCING) : (BF_PHASE_OK && !RCING))

inline merge(c)
{
    if
    :: bfrep -> cl[(c) + N] = cl[(c) + O]
    :: else -> cl[(c) + N] = cl[(c) + N] | cl[(c) + O]
    fi
}

proctype Backfill()
{
end:
    do
    :: atomic {
        bf == 1 ->
#ifndef GAP_BF_INFLIGHT
        /* each batch re-reads the phase (proposed fix F1/F2) */
        if
        :: !(BF_OK) -> bf = 0; printf("@@ backfill batch refused: phase moved\n"); goto stopped
        :: else -> skip
        fi;
#endif
        if
        :: bfpos == 0 -> merge(PC)
        :: bfpos == 1 -> merge(AC)
        :: bfpos >= 2 ->
            i = bfpos - 2;
            if
            :: ST(R(O, i)) != NONE && (ST(R(N, i)) == NONE || bfrep) -> R(N, i) = R(O, i)
#ifdef M_BFOVER
            :: ST(R(O, i)) != NONE && ST(R(N, i)) != NONE && !bfrep -> R(N, i) = R(O, i)
#endif
            :: ST(R(O, i)) == NONE && bfrep -> R(N, i) = 0
            :: else -> skip
            fi
        fi;
        if
        :: bfrep -> printf("@@ repair unit %d (phase ", bfpos)
        :: else -> printf("@@ backfill unit %d (phase ", bfpos)
        fi;
        pph(ph); printf(")\n");
        bfpos++;
        if
        :: bfpos == NU ->
            printf("@@ backfill/repair run finished\n");
            bf = 0;
            if
            :: bfcur && bfrep -> untr = 0
            :: bfcur && !bfrep -> bfok = 1
            :: else -> skip
            fi;
            vres = 0
        :: else -> skip
        fi;
stopped:
        check()
       }
    od
}

/* ------------------------------------------------------------------ */
/* The operator (stepq migrate ...)                                     */
/* ------------------------------------------------------------------ */

/* verify (src/verify.c, verify_batch.lua): forward compares every old key
 * with its new twin, --reverse every new key with its old twin */
inline verify(rev)
{
    atomic {
        ctmp = 1;
        for (ci : 0 .. NK - 1) {
            if
            :: !rev && ST(R(O, ci)) != NONE && R(N, ci) != R(O, ci) -> ctmp = 0
            :: rev && ST(R(N, ci)) != NONE && R(N, ci) != R(O, ci) -> ctmp = 0
            :: else -> skip
            fi
        }
        if
#ifdef GAP_VERIFY_ABSENT
        /* verify.c today: a pair is compared only when the key it starts
         * from exists */
        :: !rev && ((cl[PC + O] != 0 && cl[PC + N] != cl[PC + O]) ||
                    (cl[AC + O] != 0 && cl[AC + N] != cl[AC + O])) -> ctmp = 0
        :: rev && ((cl[PC + N] != 0 && cl[PC + N] != cl[PC + O]) ||
                   (cl[AC + N] != 0 && cl[AC + N] != cl[AC + O])) -> ctmp = 0
#else
        /* proposed fix F3: the fixed collections are compared both ways,
         * an absent one as empty */
        :: cl[PC + N] != cl[PC + O] || cl[AC + N] != cl[AC + O] -> ctmp = 0
#endif
        :: else -> skip
        fi;
        if
        :: rev -> printf("@@ operator: verify --reverse (phase ")
        :: else -> printf("@@ operator: verify (phase ")
        fi;
        pph(ph);
        printf("): clean %d\n", ctmp);
        vres = (ctmp -> rev + 1 : 0);
        check()
    }
}

/* inv4 at a move that changes the side read: every record on the new
 * side equals its old twin (where new has none, reads fall back) */
inline reads_verified()
{
    for (ci : 0 .. NK - 1) {
        inv4_reads_verified = ST(R(N, ci)) == NONE || R(N, ci) == R(O, ci);
        assert(inv4_reads_verified)
    }
}

#ifdef M_NOPIN
#define MOVEOK(to) 1
#else
#define MOVEOK(to) PINOK(pinB, to)
#endif

/* a backup's content matters to cleanup and restore in the phase it was
 * taken in only (both refuse a backup from before the latest move) */
inline forget_backup()
{
    cleaned = 0;
    for (ci : 0 .. NK - 1) { sr[ci] = 0 }
    spend = 0;
    sact = 0
}

/* stepq_phase_move (src/phase.c) with its guards (src/phase_rules.c): a
 * compare-and-set of the phase after the preconditions */
inline move(to)
{
    printf("@@ operator: phase "); pph(ph); printf(" -> "); pph(to); printf("\n");
    if
    :: ph == JOB && to == DW -> bfcur = 0; bfok = 0
    :: ph == DW && to == JOB -> bfcur = 0; bfok = 0; untr = 1
    :: ph == DW && to == DR -> reads_verified()
    :: ph == DR && to == DW -> reads_verified()
    :: else -> skip
    fi;
    ph = to;
    vres = 0;
    bk = 0;
    forget_backup();
    check()
}

#ifdef M_NOVERIFY
#define DR_VERIFY 1
#else
#define DR_VERIFY (vres == 1)
#endif

/* a cleanup unit: 0..NK-1 the records, then pending, active, completed,
 * the worker sets; a collection goes when every member is known to the
 * new side (its record there shows where the step is), else it is kept
 * and reported */
/* the members of collection value x whose record the new side lacks */
inline unknown(x)
{
    ctmp = 0;
    for (cj : 0 .. NK - 1) {
        if
        :: IN(x, cj) && ST(R(N, cj)) == NONE -> ctmp = ctmp | BIT(cj)
        :: else -> skip
        fi
    }
}

/* cleanup of collection c: ctmp := 1 when it may go */
inline safe(c)
{
#ifdef M_CLEAN
    /* seeded bug (today's cleanup_batch.lua): the collection's twin exists */
    ctmp = (cl[(c) + N] != 0)
#else
    unknown(cl[(c) + O]);
    ctmp = (ctmp == 0)
#endif
}

/* reconcile_batch.lua: old := new; an old-only record is not deleted
 * (written by someone else than stepq): reported, and in the first pass the
 * rollback is refused; members the new side does not know are kept */
/* the reconcile of collection c: old := new, plus the members unknown to
 * new (kept, reported) */
inline reconcile_coll(c)
{
#ifdef M_RBDEL
    cl[(c) + O] = cl[(c) + N]
#else
    unknown(cl[(c) + O]);
    cl[(c) + O] = cl[(c) + N] | ctmp
#endif
}

inline rollback_complete()
{
    rollback_old_complete = 1;
    for (ci : 0 .. NK - 1) {
        if
        :: ST(R(N, ci)) != NONE && R(O, ci) != R(N, ci) -> rollback_old_complete = 0
        :: else -> skip
        fi
    }
    rollback_old_complete = rollback_old_complete && (cl[PC + O] & cl[PC + N]) == cl[PC + N] &&
                            (cl[AC + O] & cl[AC + N]) == cl[AC + N];
    assert(rollback_old_complete)
}

proctype Operator()
{
end:
    do
    /* ---- forward moves (within PH_LO .. PH_HI) ---- */
    :: atomic { clpos == 0 && rcpos == 0 && ph == JOB && PH_HI >= DW && MOVEOK(DW) -> move(DW) }
    :: atomic { clpos == 0 && rcpos == 0 && ph == DW && PH_HI >= DR && bfok && !untr && DR_VERIFY &&
                MOVEOK(DR) -> move(DR) }
    :: atomic { clpos == 0 && rcpos == 0 && ph == DR && PH_HI >= SP && vres == 1 &&
                (LEGACY != 1 || legstop) && MOVEOK(SP) -> move(SP) }
    :: atomic { clpos == 0 && rcpos == 0 && ph == SP && PH_HI >= STEP && !rcing && bk == SP + 1 &&
                MOVEOK(STEP) -> move(STEP) }
    /* ---- rollbacks ---- */
    :: atomic { clpos == 0 && rcpos == 0 && ph == DW && PH_LO <= JOB && MOVEOK(JOB) -> move(JOB) }
    :: atomic { clpos == 0 && rcpos == 0 && ph == DR && PH_LO <= DW && vres == 2 && MOVEOK(DW) -> move(DW) }
    :: atomic { clpos == 0 && rcpos == 0 && ph == SP && PH_LO <= DR && !rcing && MOVEOK(DR) -> move(DR) }
    :: atomic { clpos == 0 && rcpos == 0 && ph == STEP && MOVEOK(SP) && !rbonce ->
                rcing = 1; rcpos = 1; rcpass2 = 0; rbonce = ONE_ROLLBACK;
                printf("@@ operator: rollback out of step starts (reconcile pass 1)\n") }
    /* one unit of the rollback's reconcile; after the first pass, the
     * move; after the second, the end */
    :: atomic {
        rcpos != 0 ->
        i = rcpos - 1;
        if
        :: i < NK ->
            if
            :: ST(R(N, i)) != NONE -> R(O, i) = R(N, i)
            :: ST(R(N, i)) == NONE && ST(R(O, i)) != NONE ->
#ifdef M_RBDEL
                R(O, i) = 0
#else
                /* refused in the first pass (nothing moved yet), kept and
                 * reported in the second */
                if
                :: !rcpass2 -> rcpos = 0; rcing = 0;
                    printf("@@ rollback refused: old-only key of step %d\n", i); goto rcdone
                :: else -> skip
                fi
#endif
            :: else -> skip
            fi
        :: i == NK -> reconcile_coll(PC)
        :: i == NK + 1 -> reconcile_coll(AC)
        :: else -> skip
        fi;
        printf("@@ reconcile unit %d, pass %d\n", i, rcpass2 + 1);
        rcpos++;
        if
        :: rcpos == NK + 3 && !rcpass2 ->
            printf("@@ operator: phase step -> step-primary (rollback)\n");
            ph = SP; vres = 0; bk = 0; forget_backup();
#ifdef M_NORC2
            rcpos = 0; rcing = 0; rollback_complete()
#else
            rcpass2 = 1; rcpos = 1
#endif
        :: rcpos == NK + 3 && rcpass2 -> rcpos = 0; rcing = 0;
            printf("@@ rollback out of step done\n"); rollback_complete()
        :: else -> skip
        fi;
rcdone:
        check()
       }
    /* ---- backfill, repair, verify ---- */
    :: atomic { bf == 0 && BF_PHASE_OK && !RCING && (pinB != JOB) ->
                bf = 1; bfrep = 0; bfpos = 0; bfcur = 1;
                printf("@@ operator: backfill starts (phase "); pph(ph); printf(")\n") }
    :: atomic { bf == 0 && ph == DW && !RCING -> bf = 1; bfrep = 1; bfpos = 0; bfcur = 1;
                printf("@@ operator: backfill --repair starts\n") }
    :: verify(0)
    :: verify(1)
    /* ---- backup, cleanup, restore ---- */
    :: atomic {
        /* backups of the old side matter in step-primary and step only */
        clpos == 0 && ph >= SP -> bk = ph + 1;
        printf("@@ operator: backup of the old side (phase "); pph(ph); printf(")\n");
        if
        :: ph == STEP ->
            for (ci : 0 .. NK - 1) { sr[ci] = R(O, ci) }
            spend = cl[PC + O]; sact = cl[AC + O]
        :: else -> skip
        fi
       }
    :: atomic {
        /* the checks of src/cleanup.c: phase step, a backup of the old
         * side taken in step holding every old key, no pinned reader */
        clpos == 0 && rcpos == 0 && ph == STEP && bk == STEP + 1 && pinB == NOPIN ->
        ctmp = (cl[PC + O] == 0 || spend != 0) && (cl[AC + O] == 0 || sact != 0);
        for (ci : 0 .. NK - 1) {
            if
            :: ST(R(O, ci)) != NONE && ST(sr[ci]) == NONE -> ctmp = 0
            :: else -> skip
            fi
        }
        if
        :: ctmp -> clpos = 1; printf("@@ operator: cleanup starts\n")
        :: else -> skip   /* refused: an old key is not in the backup */
        fi
       }
    :: atomic {
        clpos != 0 ->
        i = clpos - 1;
        if
        :: i == NK -> safe(PC)
        :: i == NK + 1 -> safe(AC)
        :: else -> skip
        fi;
        if
        :: i < NK && ST(R(O, i)) != NONE && ST(sr[i]) != NONE && ST(R(N, i)) != NONE -> R(O, i) = 0
        :: i == NK && cl[PC + O] != 0 && spend != 0 && ctmp -> cl[PC + O] = 0
        :: i == NK + 1 && cl[AC + O] != 0 && sact != 0 && ctmp -> cl[AC + O] = 0
        :: else -> skip   /* kept: no twin, or not in the backup */
        fi;
        printf("@@ cleanup unit %d: old pending %d, old active %d, old record %d\n", i,
               cl[PC + O], cl[AC + O], (i < NK -> ST(R(O, i)) : 9));
        clpos++;
        if
        :: clpos == NK + 3 -> clpos = 0; cleaned = 1; printf("@@ cleanup done\n")
        :: else -> skip
        fi;
        check()
       }
    :: atomic {
        /* stepq migrate restore FILE, without --replace: refused when any
         * key of the backup exists */
        cleaned && ph == STEP && clpos == 0 ->
        ctmp = (spend == 0 || cl[PC + O] == 0) && (sact == 0 || cl[AC + O] == 0);
        for (ci : 0 .. NK - 1) {
            if
            :: ST(sr[ci]) != NONE && ST(R(O, ci)) != NONE -> ctmp = 0
            :: else -> skip
            fi
        }
        if
        :: ctmp ->
            for (ci : 0 .. NK - 1) {
                if :: ST(sr[ci]) != NONE -> R(O, ci) = sr[ci] :: else -> skip fi
            }
            if :: spend != 0 -> cl[PC + O] = spend :: else -> skip fi;
            if :: sact != 0 -> cl[AC + O] = sact :: else -> skip fi;
            cleaned = 0;
            printf("@@ operator: restore of the backup\n")
        :: else -> skip   /* refused: a key of the backup exists */
        fi;
        check()
       }
    /* ---- the processes ---- */
    :: atomic { pinB != NOPIN -> pinB = NOPIN; printf("@@ operator: client B restarted without its pin\n"); check() }
    :: atomic { LEGACY == 1 && !legstop -> legstop = 1; vres = 0;
                printf("@@ operator: old application stopped\n") }
    od
}

init
{
    atomic {
        ph = PH0;
        bfok = (PH0 >= DR);
        bfcur = (PH0 >= DR);
        if
        :: pinB = NOPIN
        :: PINOK(JOB, PH0) -> pinB = JOB
        :: PINOK(DW, PH0) -> pinB = DW
        fi;
        printf("@@ start: phase "); pph(ph); printf(", client B pinned to ");
        if :: pinB == NOPIN -> printf("nothing") :: else -> pph(pinB) fi;
        printf("\n");
        run ClientA();
#ifndef LITE
        /* LITE (the legacy configurations): client A and the legacy
         * writer only, against the operator, backfill and reaper */
        run ClientB();
        run Dier();
#endif
        run Reaper();
        run Backfill();
        run Operator();
#if LEGACY > 0
        run Legacy();
#endif
    }
}
