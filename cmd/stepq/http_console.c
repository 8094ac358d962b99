/*
 * http_console.c - the operator's console of `stepq serve` (docs/http.md,
 * "The console"): the embedded page (web/, gen/web_gen.c), its feed, and
 * the two actions it offers, a phase move and the throttle switch.
 *
 * The feed is the status document of /health/redis-migration (the same 2 s
 * cache, so a console left open costs Redis what a load balancer does)
 * plus what only an operator looks at: the next moves with the library's
 * own verdict on each (stepq_move_allowed, the rules `migrate phase`
 * applies), the queue's depth per state on both sides, and the workers.
 * The actions are mutating routes: the glue has checked the token and the
 * Content-Type before they run, and a refusal answers the library's text.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "http_console.h"
#include "status_doc.h"
#include "stepq_text.h"

/* ---------------------------------------------------------------------------
 * The page
 * ------------------------------------------------------------------------- */

static const char *asset_type(const char *name)
{
    const char *dot = strrchr(name, '.');

    if (dot == NULL)
        return "application/octet-stream";
    if (strcmp(dot, ".html") == 0)
        return "text/html; charset=utf-8";
    if (strcmp(dot, ".css") == 0)
        return "text/css; charset=utf-8";
    if (strcmp(dot, ".js") == 0)
        return "text/javascript; charset=utf-8";
    if (strcmp(dot, ".svg") == 0)
        return "image/svg+xml";
    return "application/octet-stream";
}

void http_console_asset(const struct http_req *req, struct http_answer *ans)
{
    for (const struct web_asset *a = web_assets; a->name != NULL; a++) {
        if (strcmp(a->name, req->route.asset) != 0)
            continue;
        ans->body = malloc(a->len + 1);
        if (ans->body == NULL) {
            http_answer_error(ans, 500, "out of memory; retry later");
            return;
        }
        memcpy(ans->body, a->body, a->len + 1);
        ans->status = 200;
        ans->content_type = asset_type(a->name);
        ans->page = 1;
        return;
    }
    http_answer_error(ans, 404, "no such file '%s' in this build's console", req->route.asset);
}

/* ---------------------------------------------------------------------------
 * The feed
 * ------------------------------------------------------------------------- */

/* ---------------------------------------------------------------------------
 * The preconditions of a move, one by one, read from the status document:
 * the rules of src/phase_rules.c (stepq_move_allowed) spelled out so that
 * an operator sees which hold. The library's verdict stays the one that
 * decides ("allowed"); a refusal for a rule not spelled out here (an
 * unfinished rollback, a pinned process) is added to the list in the
 * library's words, so the list never reads "all met" for a refused move;
 * tests/http/console_api.sh checks at every phase of a walk that "all met"
 * and "allowed" agree.
 * ------------------------------------------------------------------------- */

static long long rec_ll(const json_t *doc, const char *rec, const char *field)
{
    return status_num(json_object_get(rec ? json_object_get(doc, rec) : doc, field));
}

static int rec_true(const json_t *doc, const char *rec, const char *field)
{
    return json_is_true(json_object_get(json_object_get(doc, rec), field));
}

static void pre(json_t *a, const char *rule, int met)
{
    json_array_append_new(a, json_pack("{s:s, s:b}", "rule", rule, "met", met));
}

/* A clean verify in direction `reverse` that finished and started at or
 * after `since`. */
static int clean_verify(const json_t *doc, int reverse, long long since)
{
    const json_t *v = json_object_get(doc, "verify");

    return rec_true(doc, "verify", "clean") && rec_true(doc, "verify", "reverse") == reverse &&
           json_object_get(v, "finished_at") != NULL &&
           rec_ll(doc, "verify", "started_at") >= since;
}

static json_t *preconditions(const json_t *doc, stepq_phase from, stepq_phase to)
{
    json_t *a = json_array();
    long long since = rec_ll(doc, NULL, "phase_since");
    const char *bstate =
        json_string_value(json_object_get(json_object_get(doc, "backfill"), "state"));

    if (to == STEPQ_PHASE_DUAL_READ && from < to) {
        long long dws = rec_ll(doc, NULL, "dual_write_since");
        pre(a, "the new keys are trusted (no rollback to 'job' left unrepaired)",
            rec_ll(doc, NULL, "untrusted_since") <= 0);
        pre(a, "a backfill that started after dual writes began has finished",
            bstate != NULL && strcmp(bstate, "done") == 0 && dws > 0 &&
                rec_ll(doc, "backfill", "started_at") >= dws);
        pre(a, "a clean verify ran since the backfill finished",
            clean_verify(doc, 0, rec_ll(doc, "backfill", "finished_at")));
    } else if (to == STEPQ_PHASE_STEP_PRIMARY && from < to) {
        pre(a, "a clean verify ran since the move into dual-read", clean_verify(doc, 0, since));
    } else if (to == STEPQ_PHASE_STEP && from < to) {
        const char *side =
            json_string_value(json_object_get(json_object_get(doc, "backup"), "side"));
        pre(a, "a verified backup of the old keys finished since the move into step-primary",
            side != NULL && strcmp(side, "old") == 0 && rec_true(doc, "backup", "verified") &&
                rec_ll(doc, "backup", "finished_at") >= since);
    } else if (to == STEPQ_PHASE_DUAL_WRITE && from > to) {
        pre(a, "a clean 'verify --reverse' ran since the move into dual-read (rollback runs one)",
            clean_verify(doc, 1, since));
    }
    return a;
}

/* The moves one step back and forward from `from`, each with the verdict
 * of the rules `stepq migrate phase` applies. */
static json_t *next_moves(stepq *q, const json_t *doc)
{
    const char *from_name = json_string_value(json_object_get(doc, "phase"));
    json_t *a = json_array();
    stepq_phase from;

    if (a == NULL || from_name == NULL || stepq_phase_parse(from_name, &from, NULL, 0) != STEPQ_OK)
        return a;
    for (int d = -1; d <= 1; d += 2) {
        int to = (int)from + d;
        char why[1024];
        int ok = 0;
        if (to < 0 || to >= STEPQ_PHASE_COUNT)
            continue;
        if (stepq_move_allowed(q, (stepq_phase)to, &ok, why, sizeof(why)) != STEPQ_OK) {
            ok = 0;
            snprintf(why, sizeof(why), "%s", stepq_errstr(q));
        }
        json_t *pres = preconditions(doc, from, (stepq_phase)to), *p;
        size_t i;
        int all_met = 1;
        json_array_foreach(pres, i, p) all_met = all_met && json_is_true(json_object_get(p, "met"));
        if (!ok && all_met)
            pre(pres, why, 0);
        json_array_append_new(a, json_pack("{s:s, s:s, s:b, s:o, s:s, s:o}", "to",
                                           stepq_phase_name((stepq_phase)to), "direction",
                                           d > 0 ? "forward" : "back", "allowed", ok, "refusal",
                                           ok ? json_null() : json_string(why), "command",
                                           d > 0 ? "stepq migrate phase" : "stepq migrate rollback",
                                           "preconditions", pres));
    }
    return a;
}

/* The queue's depth per state, old and new side (the library's). */
static json_t *queue_depth(stepq *q)
{
    char *json = NULL;
    json_t *o = NULL;

    if (stepq_queue_depth(q, &json) == STEPQ_OK)
        o = json_loads(json, 0, NULL);
    stepq_str_free(json);
    return o ? o : json_object();
}

static json_t *workers(stepq *q)
{
    char *json = NULL;
    json_t *raw, *a, *w;
    size_t i;

    if (stepq_workers(q, &json) != STEPQ_OK)
        return json_array();
    raw = json_loads(json, 0, NULL);
    stepq_str_free(json);
    a = json_array();
    json_array_foreach(raw, i, w)
    {
        json_t *t = status_typed_record(w);
        json_object_del(t, "instance"); /* a registration's proof, not for the page */
        json_array_append_new(a, t);
    }
    json_decref(raw);
    return a;
}

void http_console_feed(struct http_server *s, stepq *q, struct http_answer *ans)
{
    json_t *doc = NULL;
    int st = http_health_migration(s, 0, q, &doc);

    if (doc == NULL) {
        http_answer_error(ans, 500, "out of memory; retry later");
        return;
    }
    /* Redis unreachable: the document says so; the rest would say it again. */
    if (st != 500 &&
        strcmp(json_string_value(json_object_get(doc, "status")), "unavailable") != 0) {
        json_object_set_new(doc, "moves", next_moves(q, doc));
        json_object_set_new(doc, "queue", queue_depth(q));
        json_object_set_new(doc, "workers", workers(q));
    }
    json_object_set_new(doc, "auth", json_boolean(s->token != NULL));
    http_answer_json(ans, 200, doc);
}

/* ---------------------------------------------------------------------------
 * The actions
 * ------------------------------------------------------------------------- */

/* The body as a JSON object of only the fields in `allowed` (NULL-ended);
 * NULL after answering 400. */
static json_t *body_object(const struct http_req *req, struct http_answer *ans,
                           const char *const *allowed)
{
    json_error_t e;
    json_t *o = json_loadb(req->body ? req->body : "", req->len, JSON_REJECT_DUPLICATES, &e);
    const char *k;
    json_t *v;

    if (!json_is_object(o)) {
        json_decref(o);
        http_answer_error(ans, 400, "the body must be one JSON object; see docs/http.md");
        return NULL;
    }
    json_object_foreach(o, k, v)
    {
        int known = 0;
        for (const char *const *a = allowed; *a != NULL; a++)
            known |= strcmp(k, *a) == 0;
        if (!known) {
            http_answer_error(ans, 400, "unknown field '%.64s'; see docs/http.md", k);
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* An optional string field of at most max bytes; 0, or -1 after answering. */
static int opt_string(const json_t *o, const char *k, size_t max, const char **ret,
                      struct http_answer *ans)
{
    const json_t *v = json_object_get(o, k);

    *ret = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) > max) {
        http_answer_error(ans, 400, "'%s' must be a string of at most %zu bytes", k, max);
        return -1;
    }
    *ret = json_string_value(v);
    return 0;
}

void http_console_phase(stepq *q, const struct http_req *req, struct http_answer *ans)
{
    static const char *const fields[] = {"to", "reason", "who", NULL};
    json_t *o = body_object(req, ans, fields);
    const char *to_name, *reason, *who;
    char err[256], by[96];
    stepq_phase to, from;

    if (o == NULL)
        return;
    if (opt_string(o, "to", 32, &to_name, ans) != 0 || opt_string(o, "reason", 256, &reason, ans) ||
        opt_string(o, "who", 64, &who, ans) != 0)
        goto out;
    if (to_name == NULL || stepq_phase_parse(to_name, &to, err, sizeof(err)) != STEPQ_OK) {
        http_answer_error(ans, 400, "%s", to_name ? err : "'to' is missing; name the phase");
        goto out;
    }
    /* The audit names the console, and who typed the token if they said. */
    snprintf(by, sizeof(by), "%s%s(http)", who ? who : "", who ? " " : "");
    if (stepq_phase_get(q, &from) != STEPQ_OK ||
        stepq_phase_move(q, to, by, reason ? reason : "from the console", 0) != STEPQ_OK) {
        http_answer_error(ans, http_status_of(stepq_err(q)), "%s", stepq_errstr(q));
        goto out;
    }
    http_answer_json(
        ans, 200,
        json_pack("{s:s, s:s}", "from", stepq_phase_name(from), "phase", stepq_phase_name(to)));
out:
    json_decref(o);
}

void http_console_throttle(stepq *q, const struct http_req *req, struct http_answer *ans)
{
    static const char *const fields[] = {"paused", "rate", NULL};
    json_t *o = body_object(req, ans, fields);
    const json_t *p, *r;
    double rate = -1;

    if (o == NULL)
        return;
    p = json_object_get(o, "paused");
    r = json_object_get(o, "rate");
    if ((p != NULL && !json_is_boolean(p)) ||
        (r != NULL && !json_is_null(r) && !json_is_number(r)) || (p == NULL && r == NULL)) {
        http_answer_error(ans, 400,
                          "send {\"paused\": true|false} and/or {\"rate\": keys per second, or "
                          "null to clear the override}");
        goto out;
    }
    if (r != NULL)
        rate = json_is_null(r) ? -2 : json_number_value(r);
    if (r != NULL && !json_is_null(r) && rate < 0) {
        http_answer_error(ans, 400, "'rate' must be 0 or more keys per second, or null");
        goto out;
    }
    if (stepq_throttle(q, p == NULL ? -1 : json_is_true(p), rate) != STEPQ_OK) {
        http_answer_error(ans, http_status_of(stepq_err(q)), "%s", stepq_errstr(q));
        goto out;
    }
    http_answer_json(
        ans, 200,
        json_pack("{s:O, s:O}", "paused", p ? p : json_null(), "rate", r ? r : json_null()));
out:
    json_decref(o);
}
