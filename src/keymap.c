/*
 * keymap.c - the key map: a table of rename rules from the old key pattern
 * to the new one. The queue derives every key name from it and the migration
 * engine walks it; nothing else in stepq spells a key name.
 *
 * A rule is "name type old new", where old and new are templates that may
 * hold one {id}: an id is one segment without ':'. The built-in map below is
 * itself written in the rules-file format of docs/keymap.md.
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
} roles[STEPQ_ROLE_COUNT] = {
    [STEPQ_ROLE_STEP] = {"step", STEPQ_KT_HASH},
    [STEPQ_ROLE_PROGRESS] = {"progress", STEPQ_KT_HASH},
    [STEPQ_ROLE_PENDING] = {"pending", STEPQ_KT_ZSET},
    [STEPQ_ROLE_ACTIVE] = {"active", STEPQ_KT_SET},
    [STEPQ_ROLE_COMPLETED] = {"completed", STEPQ_KT_SET},
    [STEPQ_ROLE_FAILED] = {"failed", STEPQ_KT_SET},
    [STEPQ_ROLE_WORKER_STEPS] = {"worker_steps", STEPQ_KT_SET},
    [STEPQ_ROLE_EVENTS] = {"events", STEPQ_KT_CHANNEL},
};

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

/* Does `key` (without namespace) match template `tpl`? When it does and the
 * template holds {id}, the id is copied into id (if not NULL). */
static int tpl_match(const char *tpl, const char *key, size_t klen, char *id, size_t idlen,
                     size_t *ret_idlen)
{
    const char *mark = strstr(tpl, "{id}");
    size_t tlen = strlen(tpl);

    if (mark == NULL)
        return klen == tlen && memcmp(tpl, key, klen) == 0;
    size_t pre = (size_t)(mark - tpl), suf = tlen - pre - 4;
    if (klen <= pre + suf || memcmp(key, tpl, pre) != 0 ||
        memcmp(key + klen - suf, mark + 4, suf) != 0)
        return 0;
    size_t n = klen - pre - suf;
    if (memchr(key + pre, ':', n) != NULL)
        return 0;
    if (id != NULL) {
        if (n >= idlen)
            return 0;
        memcpy(id, key + pre, n);
        id[n] = '\0';
    }
    if (ret_idlen != NULL)
        *ret_idlen = n;
    return 1;
}

int stepq__keymap_match(const stepq__keymap *km, const char *key, size_t len,
                        enum stepq__side *ret_side, char *id, size_t idlen)
{
    return stepq__keymap_match_n(km, key, len, ret_side, id, idlen, NULL);
}

int stepq__keymap_match_n(const stepq__keymap *km, const char *key, size_t len,
                          enum stepq__side *ret_side, char *id, size_t idlen, size_t *ret_idlen)
{
    size_t nslen = strlen(km->ns);

    if (len < nslen || memcmp(key, km->ns, nslen) != 0)
        return -1;
    key += nslen;
    len -= nslen;
    for (size_t r = 0; r < km->n; r++) {
        if (km->rules[r].type == STEPQ_KT_CHANNEL)
            continue;
        for (int side = 0; side < 2; side++) {
            if (tpl_match(km->rules[r].tpl[side], key, len, id, idlen, ret_idlen)) {
                if (ret_side != NULL)
                    *ret_side = (enum stepq__side)side;
                return (int)r;
            }
        }
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
    km->n++;
    return STEPQ_OK;
}

/*
 * A template as a small automaton: P, then (with {id}) one or more
 * characters other than ':', then S. States 0..plen-1 expect P[i]; with
 * {id}, state plen expects the first id character, plen+1+k (k = 0..slen)
 * has read the id and k characters of S, and may still be reading the id
 * while k == 0.
 */
struct tpl_nfa {
    const char *p, *s;
    size_t plen, slen;
    int has_id;
};

static void nfa_init(struct tpl_nfa *a, const char *t)
{
    const char *m = strstr(t, "{id}");

    a->p = t;
    a->has_id = m != NULL;
    a->plen = m ? (size_t)(m - t) : strlen(t);
    a->s = m ? m + 4 : "";
    a->slen = strlen(a->s);
}

static size_t nfa_states(const struct tpl_nfa *a)
{
    return a->has_id ? a->plen + 2 + a->slen : a->plen + 1;
}

static int nfa_final(const struct tpl_nfa *a, size_t st)
{
    return st + 1 == nfa_states(a);
}

/* The states reached from `st` on `c` (at most 2), into out; returns how many. */
static int nfa_step(const struct tpl_nfa *a, size_t st, char c, size_t out[2])
{
    int n = 0;

    if (st < a->plen)
        return a->p[st] == c ? (out[0] = st + 1, 1) : 0;
    if (!a->has_id)
        return 0;
    if (st == a->plen)
        return c != ':' ? (out[0] = st + 1, 1) : 0;
    size_t k = st - a->plen - 1; /* characters of S read */
    if (k == 0 && c != ':')
        out[n++] = st; /* still the id */
    if (k < a->slen && a->s[k] == c)
        out[n++] = st + 1;
    return n;
}

/*
 * Can one key match both templates? Breadth-first search of the product of
 * the two automata over the characters the templates use plus one that
 * neither does. A sample id would not do: 'p{id}q' and 'pz{id}' share
 * 'pzaq', and 'job:{id}:progress' and 'job:x1:progre{id}' share
 * 'job:x1:progress' (found by fuzz_rules). Writes the shortest common key
 * into `witness` (an sds the caller frees) when there is one.
 */
static int tpl_overlap(const char *t1, const char *t2, sds *witness)
{
    struct tpl_nfa a, b;
    char alpha[256];
    size_t nalpha = 0;
    int ret = 0;

    *witness = NULL;
    nfa_init(&a, t1);
    nfa_init(&b, t2);
    /* Cheap refusal first: the fixed starts must agree as far as both go. */
    size_t pmin = a.plen < b.plen ? a.plen : b.plen;
    if (memcmp(a.p, b.p, pmin) != 0)
        return 0;
    unsigned char seen[256] = {0};
    for (const char *t = t1; *t; t++)
        seen[(unsigned char)*t] = 1;
    for (const char *t = t2; *t; t++)
        seen[(unsigned char)*t] = 1;
    seen['{'] = seen['}'] = 0; /* only in {id}, which the automata skip */
    for (int c = 1; c < 256; c++) {
        if (seen[c])
            alpha[nalpha++] = (char)c;
    }
    /* Any character but ':' can be in an id; one neither template uses
     * stands for all of those. */
    for (int c = 'a'; c <= 'z'; c++) {
        if (!seen[c]) {
            alpha[nalpha++] = (char)c;
            break;
        }
    }
    size_t na = nfa_states(&a), nb = nfa_states(&b), n = na * nb;
    size_t *from = stepq__malloc(n * sizeof(*from)), *queue = stepq__malloc(n * sizeof(*queue));
    char *via = stepq__malloc(n);
    if (from == NULL || queue == NULL || via == NULL)
        goto out;
    for (size_t i = 0; i < n; i++)
        from[i] = SIZE_MAX;
    size_t head = 0, tail = 0;
    from[0] = 0;
    queue[tail++] = 0;
    while (head < tail && !ret) {
        size_t cur = queue[head++], sa = cur / nb, sb = cur % nb;
        if (nfa_final(&a, sa) && nfa_final(&b, sb)) {
            sds k = sdsempty();
            char buf[2 * STEPQ_RULE_MAX + 8];
            size_t len = 0;
            for (size_t x = cur; x != 0 && len < sizeof(buf); x = from[x])
                buf[len++] = via[x];
            for (size_t i = 0; k != NULL && i < len; i++)
                k = sdscatlen(k, &buf[len - 1 - i], 1);
            *witness = k;
            ret = 1;
            break;
        }
        for (size_t ci = 0; ci < nalpha; ci++) {
            size_t na2[2], nb2[2];
            int ka = nfa_step(&a, sa, alpha[ci], na2), kb = nfa_step(&b, sb, alpha[ci], nb2);
            for (int i = 0; i < ka; i++) {
                for (int j = 0; j < kb; j++) {
                    size_t nx = na2[i] * nb + nb2[j];
                    if (from[nx] != SIZE_MAX)
                        continue;
                    from[nx] = cur;
                    via[nx] = alpha[ci];
                    queue[tail++] = nx;
                }
            }
        }
    }
out:
    stepq__free(from);
    stepq__free(queue);
    stepq__free(via);
    return ret;
}

/* No key may match two templates: the migration classifies every key it
 * scans by the one rule and side it belongs to. */
static int check_overlaps(const stepq__keymap *km, char *err, size_t errlen)
{
    for (size_t a = 0; a < km->n; a++) {
        for (int sa = 0; sa < 2; sa++) {
            if (km->rules[a].type == STEPQ_KT_CHANNEL)
                continue;
            for (size_t b = a; b < km->n; b++) {
                for (int sb = 0; sb < 2; sb++) {
                    sds k;
                    if ((a == b && sb <= sa) || km->rules[b].type == STEPQ_KT_CHANNEL ||
                        !tpl_overlap(km->rules[a].tpl[sa], km->rules[b].tpl[sb], &k))
                        continue;
                    snprintf(err, errlen,
                             "rules '%s' and '%s' both match key '%s'; make the templates "
                             "distinct",
                             km->rules[a].name, km->rules[b].name, k ? k : "?");
                    sdsfree(k);
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
