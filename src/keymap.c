/*
 * keymap.c - the key map: a table of rename rules from the old key pattern
 * to the new one. The queue derives every key name from it and the migration
 * engine walks it; nothing else in stepq spells a key name.
 *
 * A rule is "name type old new", where old and new are templates that may
 * hold one {id}: an id is one byte or more, any bytes (':' and NUL too: a
 * legacy id is whatever the old system wrote). Where two templates match one
 * name, the more specific wins (job:X:progress is X's progress, not the step
 * 'X:progress'); the parser allows that only where both rename it alike
 * (docs/keymap.md). The built-in map below is itself written in the
 * rules-file format of docs/keymap.md.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "stepq_private.h"

static const char default_rules[] =
    "# name        type     old                 new\n"
    "step          hash     job:{id}            step:{id}\n"
    "progress      hash     job:{id}:progress   step:{id}:progress\n"
    "pending       zset     jobs:pending        steps:pending\n"
    "active        set      jobs:active         steps:active\n"
    "completed     set      jobs:completed      steps:completed\n"
    "failed        set      jobs:failed         steps:failed\n"
    "worker_steps  set      worker:{id}:jobs    worker:{id}:steps\n"
    "events        channel  job_events          step_events\n";

static const struct {
    const char *name;
    enum stepq__keytype type;
} roles[STEPQ_ROLE_COUNT] = {STEPQ_ROLE_ROWS}; /* lua/contract.txt */

static const char *const type_names[] = {
    [STEPQ_KT_HASH] = "hash", [STEPQ_KT_ZSET] = "zset",     [STEPQ_KT_SET] = "set",
    [STEPQ_KT_LIST] = "list", [STEPQ_KT_STRING] = "string", [STEPQ_KT_CHANNEL] = "channel",
};

const char *stepq__keytype_name(enum stepq__keytype t)
{
    return type_names[t];
}

void stepq__keymap_default(stepq__keymap *km)
{
    char err[STEPQ_ERRSTR_MAX];

    /* The built-in text is covered by the unit tests; it cannot fail. */
    if (stepq__keymap_parse(km, default_rules, sizeof(default_rules) - 1, err, sizeof(err)) !=
        STEPQ_OK)
        abort();
}

int stepq__keymap_set_ns(stepq__keymap *km, const char *ns, char *err, size_t errlen)
{
    size_t n = ns ? strlen(ns) : 0;

    if (n >= sizeof(km->ns)) {
        snprintf(err, errlen, "namespace is longer than %zu bytes; use a shorter one",
                 sizeof(km->ns) - 1);
        return STEPQ_ERR;
    }
    for (size_t i = 0; i < n; i++) {
        if (isspace((unsigned char)ns[i]) || ns[i] == '*' || ns[i] == '?' || ns[i] == '[') {
            snprintf(
                err, errlen,
                "namespace '%s' holds a space or a glob character; use one without spaces, * ? or [",
                ns);
            return STEPQ_ERR;
        }
    }
    memcpy(km->ns, ns ? ns : "", n + 1);
    return STEPQ_OK;
}

/* The parts of a template around its {id}: pre, and suf (NULL: no {id}). */
struct tpl_parts {
    const char *pre, *suf;
    size_t plen, slen;
};

static struct tpl_parts tpl_split(const char *t)
{
    const char *m = strstr(t, "{id}");
    struct tpl_parts p = {t, m ? m + 4 : NULL, m ? (size_t)(m - t) : strlen(t), 0};

    p.slen = m ? strlen(m + 4) : 0;
    return p;
}

/* The parts of template `side` of rule r, as add_rule recorded them. */
static struct tpl_parts rule_parts(const stepq__rule *r, int side)
{
    const char *t = r->tpl[side];
    struct tpl_parts p = {t, r->per_id ? t + r->plen[side] + 4 : NULL, r->plen[side],
                          r->slen[side]};
    return p;
}

/* Does `key` match the template of parts p? As tpl_match. */
static int parts_match(const struct tpl_parts *p, const char *key, size_t klen, const char **ret_id,
                       size_t *ret_idlen)
{
    if (p->suf == NULL) {
        if (klen != p->plen || memcmp(p->pre, key, klen) != 0)
            return 0;
    } else if (klen <= p->plen + p->slen || memcmp(key, p->pre, p->plen) != 0 ||
               memcmp(key + klen - p->slen, p->suf, p->slen) != 0) {
        return 0;
    }
    if (ret_id != NULL)
        *ret_id = key + p->plen;
    if (ret_idlen != NULL)
        *ret_idlen = p->suf ? klen - p->plen - p->slen : 0;
    return 1;
}

/* How specific a template is: a fixed name beats any template with {id},
 * and a template with {id} beats one with fewer fixed bytes. Two templates
 * that both match a key nest (the parser checks it), and the inner one has
 * more fixed bytes: the most specific match is the only one. */
static size_t tpl_rank(const struct tpl_parts *p)
{
    return p->suf == NULL ? SIZE_MAX : p->plen + p->slen;
}

/* Does `key` (without namespace) match template `tpl`? An {id} stands for
 * one byte or more, any bytes (':' and NUL too); when it matches, *ret_id
 * points at the id inside key and *ret_idlen is its length (both may be
 * NULL; a fixed name gives an empty id). */
static int tpl_match(const char *tpl, const char *key, size_t klen, const char **ret_id,
                     size_t *ret_idlen)
{
    struct tpl_parts p = tpl_split(tpl);

    return parts_match(&p, key, klen, ret_id, ret_idlen);
}

int stepq__keymap_match(const stepq__keymap *km, const char *key, size_t len,
                        enum stepq__side *ret_side, const char **ret_id, size_t *ret_idlen)
{
    size_t nslen = strlen(km->ns), best_rank = 0;
    int best = -1;

    if (len < nslen || memcmp(key, km->ns, nslen) != 0)
        return -1;
    key += nslen;
    len -= nslen;
    for (size_t r = 0; r < km->n; r++) {
        if (km->rules[r].type == STEPQ_KT_CHANNEL)
            continue;
        for (int side = 0; side < 2; side++) {
            struct tpl_parts p = rule_parts(&km->rules[r], side);
            const char *id;
            size_t idlen;
            if ((best >= 0 && tpl_rank(&p) <= best_rank) || !parts_match(&p, key, len, &id, &idlen))
                continue;
            best = (int)r;
            best_rank = tpl_rank(&p);
            if (ret_side != NULL)
                *ret_side = (enum stepq__side)side;
            if (ret_id != NULL)
                *ret_id = id;
            if (ret_idlen != NULL)
                *ret_idlen = idlen;
        }
    }
    return best;
}

int stepq__keymap_stray(const stepq__keymap *km, const char *key, size_t len)
{
    size_t nslen = strlen(km->ns);

    if (len < nslen || memcmp(key, km->ns, nslen) != 0 ||
        stepq__keymap_match(km, key, len, NULL, NULL, NULL) >= 0)
        return -1;
    key += nslen;
    len -= nslen;
    for (size_t r = 0; r < km->n; r++) {
        struct tpl_parts p = rule_parts(&km->rules[r], STEPQ_OLD);
        if (km->rules[r].type == STEPQ_KT_CHANNEL || p.suf == NULL)
            continue;
        if (len >= p.plen && len >= p.slen && memcmp(key, p.pre, p.plen) == 0 &&
            memcmp(key + len - p.slen, p.suf, p.slen) == 0)
            return (int)r;
    }
    return -1;
}

static sds expand(const char *ns, const char *tpl, const char *id, size_t idlen)
{
    const char *mark = strstr(tpl, "{id}");
    sds s = sdsnew(ns);

    if (s == NULL)
        return NULL;
    if (mark == NULL || id == NULL)
        return sdscat(s, tpl);
    s = sdscatlen(s, tpl, (size_t)(mark - tpl));
    s = s ? sdscatlen(s, id, idlen) : NULL;
    return s ? sdscat(s, mark + 4) : NULL;
}

sds stepq__keymap_key(const stepq__keymap *km, size_t r, enum stepq__side side, const char *id)
{
    return expand(km->ns, km->rules[r].tpl[side], id, id ? strlen(id) : 0);
}

sds stepq__keymap_key_n(const stepq__keymap *km, size_t r, enum stepq__side side, const char *id,
                        size_t idlen)
{
    return expand(km->ns, km->rules[r].tpl[side], id, idlen);
}

sds stepq__keymap_glob(const stepq__keymap *km, size_t r, enum stepq__side side)
{
    return expand(km->ns, km->rules[r].tpl[side], "*", 1);
}

int stepq__keymap_lua(const stepq__keymap *km, sds out[2 * STEPQ_ROLE_COUNT])
{
    for (int role = 0; role < STEPQ_ROLE_COUNT; role++) {
        for (int side = 0; side < 2; side++) {
            int r = km->role[role];
            /* Channels are not keys, so they take no namespace. */
            const char *ns = r >= 0 && km->rules[r].type != STEPQ_KT_CHANNEL ? km->ns : "";
            out[2 * role + side] =
                sdscatfmt(sdsempty(), "%s%s", ns, r >= 0 ? km->rules[r].tpl[side] : "");
            if (out[2 * role + side] == NULL)
                return STEPQ_ERR;
        }
    }
    return STEPQ_OK;
}

/* ---------------------------------------------------------------------------
 * The rules-file parser
 * ------------------------------------------------------------------------- */

static int check_template(const char *t, int lineno, char *err, size_t errlen)
{
    const char *mark = strstr(t, "{id}");

    if (mark != NULL && strstr(mark + 4, "{id}") != NULL) {
        snprintf(err, errlen, "line %d: template '%s' holds {id} twice; use it once", lineno, t);
        return STEPQ_ERR;
    }
    for (const char *p = t; *p; p++) {
        if (*p == '*' || *p == '?' || *p == '[' || *p == ']' || *p == '\\') {
            snprintf(err, errlen,
                     "line %d: template '%s' holds the glob character '%c'; templates are "
                     "literal but for {id}",
                     lineno, t, *p);
            return STEPQ_ERR;
        }
        if ((*p == '{' || *p == '}') && !(mark && p >= mark && p < mark + 4)) {
            snprintf(err, errlen, "line %d: template '%s' holds a brace outside {id}", lineno, t);
            return STEPQ_ERR;
        }
    }
    return STEPQ_OK;
}

static int parse_type(const char *s, enum stepq__keytype *ret)
{
    for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++) {
        if (strcmp(s, type_names[i]) == 0) {
            *ret = (enum stepq__keytype)i;
            return STEPQ_OK;
        }
    }
    return STEPQ_ERR;
}

static int check_name(const stepq__keymap *km, const char *name, int lineno, char *err,
                      size_t errlen)
{
    for (const char *p = name; *p; p++) {
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_')) {
            snprintf(err, errlen, "line %d: rule name '%s' may hold only a-z, 0-9 and '_'", lineno,
                     name);
            return STEPQ_ERR;
        }
    }
    for (size_t r = 0; r < km->n; r++) {
        if (strcmp(km->rules[r].name, name) == 0) {
            snprintf(err, errlen, "line %d: rule '%s' is defined twice", lineno, name);
            return STEPQ_ERR;
        }
    }
    return STEPQ_OK;
}

/* Splits one line into at most 5 whitespace-separated fields (a fifth field
 * is an error the caller reports). */
static int split(char *line, char **f)
{
    int n = 0;
    char *p = line;

    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r')
            p++;
        if (*p == '\0' || *p == '#' || n == 5)
            break;
        f[n++] = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\r')
            p++;
        if (*p == '\0')
            break;
        *p++ = '\0';
    }
    return n;
}

static int add_rule(stepq__keymap *km, char **f, int lineno, char *err, size_t errlen)
{
    stepq__rule *r = &km->rules[km->n];

    if (km->n == STEPQ_RULES_MAX) {
        snprintf(err, errlen, "line %d: more than %d rules", lineno, STEPQ_RULES_MAX);
        return STEPQ_ERR;
    }
    if (strlen(f[0]) >= sizeof(r->name) || strlen(f[2]) >= STEPQ_RULE_MAX ||
        strlen(f[3]) >= STEPQ_RULE_MAX) {
        snprintf(err, errlen, "line %d: a name over 47 or a template over %d bytes", lineno,
                 STEPQ_RULE_MAX - 1);
        return STEPQ_ERR;
    }
    if (check_name(km, f[0], lineno, err, errlen) != STEPQ_OK)
        return STEPQ_ERR;
    if (parse_type(f[1], &r->type) != STEPQ_OK) {
        snprintf(err, errlen,
                 "line %d: unknown type '%s'; expected one of: hash, zset, set, list, string, "
                 "channel",
                 lineno, f[1]);
        return STEPQ_ERR;
    }
    if (check_template(f[2], lineno, err, errlen) != STEPQ_OK ||
        check_template(f[3], lineno, err, errlen) != STEPQ_OK)
        return STEPQ_ERR;
    int id_old = strstr(f[2], "{id}") != NULL, id_new = strstr(f[3], "{id}") != NULL;
    if (id_old != id_new) {
        snprintf(err, errlen, "line %d: {id} must be in both templates or in neither", lineno);
        return STEPQ_ERR;
    }
    if (strcmp(f[2], f[3]) == 0) {
        snprintf(err, errlen, "line %d: old and new are the same ('%s'); a rule must rename",
                 lineno, f[2]);
        return STEPQ_ERR;
    }
    snprintf(r->name, sizeof(r->name), "%s", f[0]);
    snprintf(r->tpl[0], STEPQ_RULE_MAX, "%s", f[2]);
    snprintf(r->tpl[1], STEPQ_RULE_MAX, "%s", f[3]);
    r->per_id = id_old;
    for (int side = 0; side < 2; side++) {
        struct tpl_parts p = tpl_split(r->tpl[side]);
        r->plen[side] = p.plen;
        r->slen[side] = p.slen;
    }
    km->n++;
    return STEPQ_OK;
}

/*
 * Overlaps. An {id} stands for any non-empty bytes, so a template P{id}S is
 * every name that starts with P, ends with S and is longer than both: two
 * such templates share a name exactly when one P starts the other and one S
 * ends the other (P1 x S1 with the longer of each is one), and one holds
 * all the names of the other when its P starts the other's P and its S
 * ends the other's S. A fixed name is one name.
 */

/* Is a a prefix of b (as bytes, a of alen, b of blen)? */
static int starts(const char *b, size_t blen, const char *a, size_t alen)
{
    return alen <= blen && memcmp(a, b, alen) == 0;
}

static int ends(const char *b, size_t blen, const char *a, size_t alen)
{
    return alen <= blen && memcmp(a, b + blen - alen, alen) == 0;
}

/* Do t1 and t2 share a name? Writes one (an sds the caller frees). */
static int tpl_overlap(const char *t1, const char *t2, sds *witness)
{
    struct tpl_parts a = tpl_split(t1), b = tpl_split(t2);

    *witness = NULL;
    if (a.suf == NULL || b.suf == NULL) {
        const char *fixed = a.suf == NULL ? t1 : t2, *other = a.suf == NULL ? t2 : t1;
        if (!tpl_match(other, fixed, strlen(fixed), NULL, NULL))
            return 0;
        *witness = sdsnew(fixed);
        return 1;
    }
    const struct tpl_parts *lp = a.plen >= b.plen ? &a : &b, *sp = lp == &a ? &b : &a;
    const struct tpl_parts *ls = a.slen >= b.slen ? &a : &b, *ss = ls == &a ? &b : &a;
    if (!starts(lp->pre, lp->plen, sp->pre, sp->plen) ||
        !ends(ls->suf, ls->slen, ss->suf, ss->slen))
        return 0;
    sds w = sdsnewlen(lp->pre, lp->plen);
    w = w ? sdscat(w, "x") : NULL;
    *witness = w ? sdscatlen(w, ls->suf, ls->slen) : NULL;
    return 1;
}

/* Does template `outer` hold every name of `inner`? */
static int tpl_inside(const char *inner, const char *outer)
{
    struct tpl_parts i = tpl_split(inner), o = tpl_split(outer);

    if (i.suf == NULL)
        return tpl_match(outer, inner, i.plen, NULL, NULL);
    return o.suf != NULL && starts(i.pre, i.plen, o.pre, o.plen) &&
           ends(i.suf, i.slen, o.suf, o.slen);
}

/*
 * Rule `in`'s template on `side` is inside rule `out`'s: a name of `in`
 * that is also a name of `out` (its id then ends like `in`'s suffix, e.g.
 * job:X:progress is step 'X:progress' too) goes to `in`, the more specific.
 * That is harmless only when both rules give it the same twin, i.e. the
 * other side's templates nest the same way: returns 1 when they do.
 */
static int twins_agree(const stepq__rule *in, const stepq__rule *out, int side)
{
    struct tpl_parts i = tpl_split(in->tpl[side]), o = tpl_split(out->tpl[side]);
    struct tpl_parts ti = tpl_split(in->tpl[!side]), to = tpl_split(out->tpl[!side]);

    if (to.suf == NULL)
        return 0; /* out has no {id}, so in is the same fixed name: refused before */
    if (i.suf == NULL) {
        /* A fixed name: its twin under out is to's parts around the id. */
        size_t idlen = i.plen - o.plen - o.slen;
        return ti.suf == NULL && ti.plen == to.plen + idlen + to.slen &&
               memcmp(ti.pre, to.pre, to.plen) == 0 &&
               memcmp(ti.pre + to.plen, i.pre + o.plen, idlen) == 0 &&
               memcmp(ti.pre + to.plen + idlen, to.suf, to.slen) == 0;
    }
    /* in = o.pre p {id} s o.suf must rename to to.pre p {id} s to.suf. */
    size_t pl = i.plen - o.plen, sl = i.slen - o.slen;
    return ti.suf != NULL && ti.plen == to.plen + pl && ti.slen == sl + to.slen &&
           memcmp(ti.pre, to.pre, to.plen) == 0 &&
           memcmp(ti.pre + to.plen, i.pre + o.plen, pl) == 0 && memcmp(ti.suf, i.suf, sl) == 0 &&
           memcmp(ti.suf + sl, to.suf, to.slen) == 0;
}

/*
 * The migration classifies every key it scans by one rule and side. Two
 * templates that share a name are allowed only on the same side, one
 * strictly inside the other (the inner, more specific one takes the name),
 * and with their twins agreeing (twins_agree). Anything else is refused,
 * with a name both match.
 */
static int check_pair(const stepq__keymap *km, size_t a, int sa, size_t b, int sb, char *err,
                      size_t errlen)
{
    const stepq__rule *ra = &km->rules[a], *rb = &km->rules[b];
    sds k;

    if (!tpl_overlap(ra->tpl[sa], rb->tpl[sb], &k))
        return STEPQ_OK;
    int a_in = tpl_inside(ra->tpl[sa], rb->tpl[sb]), b_in = tpl_inside(rb->tpl[sb], ra->tpl[sa]);
    const char *fix = NULL;
    if (sa != sb)
        fix = "an old name may not look like a new one; make the templates distinct";
    else if (a_in && b_in)
        fix = "they match the same names; make the templates distinct";
    else if (!a_in && !b_in)
        fix = "make the templates distinct, or one strictly inside the other";
    else if (!twins_agree(a_in ? ra : rb, a_in ? rb : ra, sa))
        fix = "the more specific rule takes it, so both must rename it alike; make the other "
              "side's templates nest the same way";
    if (fix != NULL)
        snprintf(err, errlen, "rules '%s' and '%s' both match key '%s'; %s", ra->name, rb->name,
                 k ? k : "?", fix);
    sdsfree(k);
    return fix ? STEPQ_ERR : STEPQ_OK;
}

static int check_overlaps(const stepq__keymap *km, char *err, size_t errlen)
{
    for (size_t a = 0; a < km->n; a++) {
        for (int sa = 0; sa < 2; sa++) {
            if (km->rules[a].type == STEPQ_KT_CHANNEL)
                continue;
            for (size_t b = a; b < km->n; b++) {
                for (int sb = 0; sb < 2; sb++) {
                    if ((a == b && sb <= sa) || km->rules[b].type == STEPQ_KT_CHANNEL)
                        continue;
                    if (check_pair(km, a, sa, b, sb, err, errlen) != STEPQ_OK)
                        return STEPQ_ERR;
                }
            }
        }
    }
    return STEPQ_OK;
}

static int bind_roles(stepq__keymap *km, char *err, size_t errlen)
{
    for (int role = 0; role < STEPQ_ROLE_COUNT; role++) {
        km->role[role] = -1;
        for (size_t r = 0; r < km->n; r++) {
            if (strcmp(km->rules[r].name, roles[role].name) != 0)
                continue;
            if (km->rules[r].type != roles[role].type) {
                snprintf(err, errlen, "rule '%s' must have type '%s', not '%s'", roles[role].name,
                         type_names[roles[role].type], type_names[km->rules[r].type]);
                return STEPQ_ERR;
            }
            km->role[role] = (int)r;
        }
    }
    return STEPQ_OK;
}

int stepq__keymap_parse(stepq__keymap *km, const char *text, size_t len, char *err, size_t errlen)
{
    char line[1024];
    int lineno = 0;
    size_t pos = 0;

    memset(km, 0, sizeof(*km));
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - text - pos) : len - pos;
        char *f[5];
        lineno++;
        if (n >= sizeof(line) || memchr(text + pos, '\0', n) != NULL) {
            snprintf(err, errlen, "line %d: longer than %zu bytes or holds a NUL byte", lineno,
                     sizeof(line) - 1);
            return STEPQ_ERR;
        }
        memcpy(line, text + pos, n);
        line[n] = '\0';
        pos += n + 1;
        int nf = split(line, f);
        if (nf == 0)
            continue;
        if (nf != 4) {
            snprintf(err, errlen, "line %d: expected 4 fields 'name type old new', found %d",
                     lineno, nf);
            return STEPQ_ERR;
        }
        if (add_rule(km, f, lineno, err, errlen) != STEPQ_OK)
            return STEPQ_ERR;
    }
    if (km->n == 0) {
        snprintf(err, errlen, "no rules found; write one rule a line: name type old new");
        return STEPQ_ERR;
    }
    if (check_overlaps(km, err, errlen) != STEPQ_OK)
        return STEPQ_ERR;
    return bind_roles(km, err, errlen);
}

int stepq__keymap_load(stepq__keymap *km, const char *path, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    char buf[65536];
    size_t n;
    char sub[STEPQ_ERRSTR_MAX];

    if (fp == NULL) {
        snprintf(err, errlen,
                 "cannot open rules file '%s': %s; check the path given to --rules or STEPQ_RULES",
                 path, strerror(errno));
        return STEPQ_ERR;
    }
    n = fread(buf, 1, sizeof(buf), fp);
    int too_big = n == sizeof(buf);
    fclose(fp);
    if (too_big) {
        snprintf(err, errlen, "rules file '%s' is larger than 64 KiB", path);
        return STEPQ_ERR;
    }
    if (stepq__keymap_parse(km, buf, n, sub, sizeof(sub)) != STEPQ_OK) {
        snprintf(err, errlen, "rules file '%s': %s", path, sub);
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}
