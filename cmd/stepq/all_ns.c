/*
 * all_ns.c - `stepq migrate SUBCOMMAND --all-namespaces`: one command over
 * every namespace of the registry (docs/cluster.md, "Every namespace at
 * once").
 *
 * Each namespace runs in a child process forked from this one, which calls
 * the subcommand exactly as `stepq --namespace NS migrate SUBCOMMAND ARGS`
 * would: the same code, the same checks, and a failure that exits (a lost
 * Redis, a usage error) ends only that namespace's run. The child's stdout
 * and stderr come back through pipes: the driver keeps the last line of
 * each, draws one line per namespace (live on a terminal when one runs at a
 * time), prints a failed run's messages whole, and ends with a summary.
 * `--parallel N` runs N at once (each namespace's walk stays on its own
 * master, so on a cluster they do not compete for one core). The first
 * namespace that is refused or fails stops the start of new ones unless
 * `--keep-going`; exit 3 (nothing to do there, e.g. a rollback in 'job')
 * does not stop it. The exit code is the worst one met, in the order
 * 0 < 3 < 4 < 1 < 2.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <hiredis/sds.h>
#include <jansson.h>

#include "all_ns.h"

#define PARALLEL_MAX 16
#define TAIL_MAX     4096          /* the end of a child's stderr kept to show on failure */
#define OUT_MAX      (1024 * 1024) /* a child's stdout kept (its last line is its result) */
#define FILE_SUFFIX  ".stepqbak"

struct run {
    char *ns;
    pid_t pid;
    int out, err; /* -1 when closed */
    sds out_buf, err_buf;
    int status, done, started;
    char file[64]; /* the namespace as a file name (for %n) */
};

struct driver {
    const char *sub;
    struct run *runs;
    size_t n, next, running, finished;
    long parallel;
    int keep_going, json, live, stopped;
    int counts[5]; /* by exit code 0..4 */
    int worst;
    char *owned[16]; /* argument copies made by take_options */
    size_t nowned;
};

/* ---------------------------------------------------------------------------
 * The registry
 * ------------------------------------------------------------------------- */

/* A handle on the user's server or cluster for reading the registry: its
 * namespace is the registry's own tag, so on a cluster it connects straight
 * to the master that holds it. */
static stepq *registry_handle(const struct cli *cli)
{
    struct cli c = *cli;

    c.ns = STEPQ_REGISTRY_NS;
    c.nns = 0;
    return cli_connect(&c, "stepq-migrate");
}

int all_ns_list(const struct cli *cli, json_t **ret)
{
    stepq *q = registry_handle(cli);
    char *json = NULL;
    int rc = EXIT_DONE;

    if (stepq_namespaces(q, &json) != STEPQ_OK) {
        rc = cli_fail(q, "listing the namespaces");
    } else {
        *ret = json_loads(json, JSON_ALLOW_NUL, NULL);
        if (!json_is_array(*ret)) {
            fputs("stepq: cannot read the list of namespaces\n", stderr);
            json_decref(*ret);
            rc = EXIT_FAILED;
        }
    }
    stepq_str_free(json);
    stepq_free(q);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Arguments
 * ------------------------------------------------------------------------- */

/* The namespace as a file name: letters, digits, '.', '_' and '-' kept, the
 * braces of the tag dropped, anything else '_'; "default" when nothing is
 * left (the namespace without prefix). */
static void file_name(const char *ns, char *out, size_t len)
{
    size_t n = 0;

    for (const char *p = ns; *p != '\0' && n + 1 < len; p++) {
        char c = *p;
        if (c == '{' || c == '}')
            continue;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '-' || c == '_';
        out[n++] = ok ? c : '_';
    }
    while (n > 0 && out[n - 1] == '_')
        n--;
    if (n == 0)
        snprintf(out, len, "default");
    else
        out[n] = '\0';
}

/* The value of --out/--backup (a file per namespace) as a template: a
 * directory becomes DIR/%n.stepqbak. Returns a new sds. */
static sds file_template(const char *v)
{
    struct stat st;
    size_t len = strlen(v);

    if ((len > 0 && v[len - 1] == '/') || (stat(v, &st) == 0 && S_ISDIR(st.st_mode)))
        return sdscatfmt(sdsempty(), "%s%s%%n" FILE_SUFFIX, v,
                         len > 0 && v[len - 1] == '/' ? "" : "/");
    return sdsnew(v);
}

/* An argument with every %n replaced by the run's file name. */
static char *subst(const char *arg, const char *name)
{
    sds s = sdsempty();

    for (const char *p = arg; *p != '\0'; p++) {
        if (p[0] == '%' && p[1] == 'n') {
            s = sdscat(s, name);
            p++;
        } else {
            s = sdscatlen(s, p, 1);
        }
    }
    char *c = strdup(s);
    sdsfree(s);
    return c;
}

static int is_file_opt(const char *a)
{
    return strcmp(a, "--out") == 0 || strcmp(a, "--backup") == 0;
}

/*
 * Takes the driver's own options out of argv (in place; argv[0] is the
 * subcommand) and turns the file options into templates. Returns the new
 * argc, or -1 after a usage error. *ret_files says whether an argument
 * names a file per namespace (%n).
 */
static int take_options(struct driver *d, int argc, char **argv, const char *usage, int *ret_files)
{
    int n = 1;

    *ret_files = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            while (i < argc)
                argv[n++] = argv[i++];
            break;
        }
        if (strcmp(a, "--all-namespaces") == 0)
            continue;
        if (strcmp(a, "--keep-going") == 0) {
            d->keep_going = 1;
            continue;
        }
        if (strcmp(a, "--parallel") == 0 || strncmp(a, "--parallel=", 11) == 0) {
            const char *v = a[10] == '=' ? a + 11 : (i + 1 < argc ? argv[++i] : "");
            d->parallel = cli_long(usage, "parallel", v, 1, PARALLEL_MAX);
            continue;
        }
        if (strcmp(a, "--json") == 0 || strcmp(a, "-j") == 0)
            d->json = 1;
        if ((is_file_opt(a) && i + 1 < argc) ||
            (strncmp(a, "--out=", 6) == 0 || strncmp(a, "--backup=", 9) == 0)) {
            const char *eq = strchr(a, '=');
            sds t = file_template(eq ? eq + 1 : argv[i + 1]);
            sds whole = eq ? sdscatfmt(sdsnewlen(a, (size_t)(eq - a + 1)), "%S", t) : NULL;
            if (!eq)
                argv[n++] = argv[i++];
            char *copy = strdup(whole ? whole : t);
            if (copy == NULL || d->nowned == sizeof(d->owned) / sizeof(*d->owned)) {
                free(copy);
                cli_usage_error(usage, "too many file options");
                return -1;
            }
            argv[n++] = d->owned[d->nowned++] = copy;
            sdsfree(t);
            sdsfree(whole);
            *ret_files = 1;
            continue;
        }
        *ret_files |= strstr(a, "%n") != NULL;
        argv[n++] = argv[i];
    }
    argv[n] = NULL;
    return n;
}

/* backup, cleanup and restore name a file: one per namespace, or they
 * would overwrite or read each other's. */
static int check_files(const struct driver *d, int argc, char **argv, const char *usage)
{
    static const char *const needs[] = {"backup", "cleanup", "restore"};
    int files = 0;

    for (int i = 1; i < argc; i++)
        files |= strstr(argv[i], "%n") != NULL;
    for (size_t i = 0; i < sizeof(needs) / sizeof(*needs); i++) {
        if (strcmp(d->sub, needs[i]) == 0 && !files) {
            cli_usage_error(usage,
                            "with --all-namespaces, '%s' needs a file per namespace: name a "
                            "directory (--out DIR/, --backup DIR/: DIR/NAMESPACE" FILE_SUFFIX
                            ") or a template holding %%n (the namespace as a file name)",
                            d->sub);
            return -1;
        }
    }
    /* Two namespaces whose file names collide would share a file. */
    for (size_t i = 0; files && i < d->n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(d->runs[i].file, d->runs[j].file) == 0) {
                cli_usage_error(usage,
                                "namespaces '%s' and '%s' have the same file name '%s'; run "
                                "them one by one with --namespace",
                                d->runs[j].ns, d->runs[i].ns, d->runs[i].file);
                return -1;
            }
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * Children
 * ------------------------------------------------------------------------- */

static int rank(int code)
{
    static const int ranks[] = {0, 3, 4, 1, 2}; /* by exit code */

    return code >= 0 && code <= 4 ? ranks[code] : 5;
}

static int start(struct driver *d, struct run *r, struct cli *cli, int argc, char **argv,
                 migrate_fn fn)
{
    int po[2], pe[2];

    if (pipe(po) != 0)
        return -1;
    if (pipe(pe) != 0) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    r->pid = fork();
    if (r->pid < 0) {
        close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
        return -1;
    }
    if (r->pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
        /* Static: still reachable when the child exits (LeakSanitizer). */
        static char **args;
        args = calloc((size_t)argc + 1, sizeof(*args));
        for (int i = 0; args != NULL && i < argc; i++)
            args[i] = subst(argv[i], r->file);
        if (args == NULL)
            _exit(EXIT_FAILED);
        cli->ns = r->ns;
        cli->nss[0] = r->ns;
        cli->nns = 1;
        optind = 0;
        int rc = fn(cli, argc, args);
        fflush(stdout);
        fflush(stderr);
        exit(rc);
    }
    close(po[1]);
    close(pe[1]);
    r->out = po[0];
    r->err = pe[0];
    r->out_buf = sdsempty();
    r->err_buf = sdsempty();
    r->started = 1;
    d->running++;
    return 0;
}

/* The last complete line of buf (or what is there), without its newline. */
static sds last_line(const sds buf)
{
    size_t len = sdslen(buf);

    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    size_t from = len;
    while (from > 0 && buf[from - 1] != '\n' && buf[from - 1] != '\r')
        from--;
    return sdsnewlen(buf + from, len - from);
}

/* Why a run did not succeed, in one line: the last of its "stepq: ..."
 * messages, else the first line of what it printed (verify's verdict).
 * NULL when neither. */
static sds error_line(const struct run *r)
{
    const char *found = NULL;

    for (const char *p = r->err_buf; (p = strstr(p, "stepq")) != NULL; p++) {
        if (p == r->err_buf || p[-1] == '\n')
            found = p;
    }
    if (found == NULL && sdslen(r->out_buf) > 0)
        found = r->out_buf;
    if (found == NULL)
        return NULL;
    return sdsnewlen(found, strcspn(found, "\n"));
}

static const char *verdict(int code)
{
    switch (code) {
    case EXIT_DONE:
        return "done";
    case EXIT_NOTFOUND:
        return "nothing";
    case EXIT_REFUSED:
        return "REFUSED";
    case EXIT_USAGE:
        return "USAGE";
    default:
        return "FAILED";
    }
}

static int code_of(const struct run *r)
{
    if (WIFEXITED(r->status))
        return WEXITSTATUS(r->status);
    return EXIT_FAILED;
}

/* The namespace as shown: the one without prefix has a name of its own. */
static const char *show_ns(const char *ns)
{
    return *ns ? ns : "(default)";
}

static void draw_live(const struct driver *d, const struct run *r)
{
    sds line = last_line(sdslen(r->err_buf) ? r->err_buf : r->out_buf);

    fprintf(stderr, "\r\033[K%s: %.100s", show_ns(r->ns), line);
    fflush(stderr);
    sdsfree(line);
    (void)d;
}

/* One line (and on failure the child's messages) for a finished run. */
static void report(struct driver *d, struct run *r)
{
    int code = code_of(r);
    sds out = last_line(r->out_buf), err = last_line(r->err_buf);

    if (d->live)
        fputs("\r\033[K", stderr);
    if (d->json) {
        json_t *o = json_loadb(out, sdslen(out), 0, NULL);
        json_t *line = json_pack("{s:s, s:s, s:i, s:s, s:o?, s:s?}", "namespace", r->ns, "command",
                                 d->sub, "exit", code, "status", verdict(code), "output", o,
                                 "error", code != EXIT_DONE && sdslen(err) ? err : NULL);
        if (o == NULL && line != NULL && sdslen(out) > 0)
            json_object_set_new(line, "output", json_string(out));
        cli_print_value(line);
    } else {
        /* The result is the last line of stdout (or of stderr, where the
         * walks print theirs); a failure shows its message. */
        sds why = code == EXIT_DONE ? NULL : error_line(r);
        const char *shown = why ? why : code == EXIT_DONE && sdslen(out) > 0 ? out : err;
        printf("%-24s %-8s %s\n", show_ns(r->ns), verdict(code), shown);
        sdsfree(why);
        if (code != EXIT_DONE && code != EXIT_NOTFOUND && strchr(r->err_buf, '\n') != NULL &&
            strchr(r->err_buf, '\n')[1] != '\0') {
            size_t len = sdslen(r->err_buf);
            const char *from = len > TAIL_MAX ? r->err_buf + len - TAIL_MAX : r->err_buf;
            for (const char *p = from; *p != '\0';) {
                size_t k = strcspn(p, "\n");
                if (k > 0)
                    printf("    %.*s\n", (int)k, p);
                p += k + (p[k] == '\n');
            }
        }
    }
    fflush(stdout);
    sdsfree(out);
    sdsfree(err);
    d->counts[code >= 0 && code <= 4 ? code : EXIT_FAILED]++;
    if (rank(code) > rank(d->worst))
        d->worst = code;
    if (code != EXIT_DONE && code != EXIT_NOTFOUND && !d->keep_going)
        d->stopped = 1;
}

/* Reads what is there on fd into buf, keeping its last `cap` bytes or so;
 * closes fd at its end. */
static void drain(int *fd, sds *buf, size_t cap)
{
    char chunk[4096];
    ssize_t k = read(*fd, chunk, sizeof(chunk));

    if (k > 0) {
        *buf = sdscatlen(*buf, chunk, (size_t)k);
        if (sdslen(*buf) > 2 * cap)
            sdsrange(*buf, -(ssize_t)cap, -1);
        return;
    }
    if (k < 0 && errno == EINTR)
        return;
    close(*fd);
    *fd = -1;
}

/* Waits for output or an end; reports the runs that ended. */
static void step(struct driver *d)
{
    struct pollfd fds[2 * PARALLEL_MAX];
    struct run *who[2 * PARALLEL_MAX];
    nfds_t n = 0;

    for (size_t i = 0; i < d->n; i++) {
        struct run *r = &d->runs[i];
        if (!r->started || r->done)
            continue;
        if (r->out >= 0)
            fds[n] = (struct pollfd){.fd = r->out, .events = POLLIN}, who[n++] = r;
        if (r->err >= 0)
            fds[n] = (struct pollfd){.fd = r->err, .events = POLLIN}, who[n++] = r;
    }
    if (n > 0 && poll(fds, n, 1000) > 0) {
        for (nfds_t i = 0; i < n; i++) {
            if (fds[i].revents == 0)
                continue;
            struct run *r = who[i];
            if (fds[i].fd == r->out)
                drain(&r->out, &r->out_buf, OUT_MAX);
            else
                drain(&r->err, &r->err_buf, TAIL_MAX);
            if (d->live)
                draw_live(d, r);
        }
    }
    for (size_t i = 0; i < d->n; i++) {
        struct run *r = &d->runs[i];
        if (!r->started || r->done || r->out >= 0 || r->err >= 0)
            continue;
        if (waitpid(r->pid, &r->status, 0) == r->pid || errno != EINTR) {
            r->done = 1;
            d->running--;
            d->finished++;
            report(d, r);
        }
    }
}

static void summary(const struct driver *d)
{
    size_t not_run = d->n - d->finished;

    if (d->json) {
        cli_print_value(json_pack("{s:{s:s, s:I, s:i, s:i, s:i, s:i, s:i, s:I, s:i}}", "summary",
                                  "command", d->sub, "namespaces", (json_int_t)d->n, "done",
                                  d->counts[0], "nothing", d->counts[3], "refused", d->counts[4],
                                  "failed", d->counts[1], "usage", d->counts[2], "not_run",
                                  (json_int_t)not_run, "exit", d->worst));
        return;
    }
    printf("%s over %zu namespace(s): %d done, %d with nothing to do, %d refused, %d failed",
           d->sub, d->n, d->counts[0], d->counts[3], d->counts[4], d->counts[1] + d->counts[2]);
    if (not_run > 0)
        printf(", %zu not run (stopped at the first refusal or failure; --keep-going runs the "
               "rest)",
               not_run);
    printf("\n");
}

static void free_driver(struct driver *d)
{
    for (size_t i = 0; d->runs != NULL && i < d->n; i++) {
        sdsfree(d->runs[i].out_buf);
        sdsfree(d->runs[i].err_buf);
        free(d->runs[i].ns);
    }
    free(d->runs);
    for (size_t i = 0; i < d->nowned; i++)
        free(d->owned[i]);
}

int all_ns_run(struct cli *cli, const char *sub, int argc, char **argv, migrate_fn fn,
               const char *usage)
{
    struct driver d = {.sub = sub, .parallel = 1};
    json_t *list = NULL, *v;
    size_t i;
    int files;

    if (cli->nns > 0)
        return cli_usage_error(usage, "give either --namespace or --all-namespaces");
    argc = take_options(&d, argc, argv, usage, &files);
    if (argc < 0)
        return EXIT_USAGE;
    int rc = all_ns_list(cli, &list);
    if (rc != EXIT_DONE) {
        free_driver(&d);
        return rc;
    }
    d.n = json_array_size(list);
    if (d.n == 0) {
        fputs("stepq: no namespace is registered yet; a namespace registers at its first "
              "submit, worker or phase move (docs/cluster.md)\n",
              stderr);
        json_decref(list);
        free_driver(&d);
        return EXIT_NOTFOUND;
    }
    d.runs = calloc(d.n, sizeof(*d.runs));
    if (d.runs == NULL) {
        json_decref(list);
        free_driver(&d);
        return EXIT_FAILED;
    }
    json_array_foreach(list, i, v)
    {
        d.runs[i].ns = strdup(json_string_value(v)); /* lives until exit */
        d.runs[i].out = d.runs[i].err = -1;
        file_name(d.runs[i].ns, d.runs[i].file, sizeof(d.runs[i].file));
    }
    json_decref(list);
    if (check_files(&d, argc, argv, usage) != 0) {
        free_driver(&d);
        return EXIT_USAGE;
    }
    d.live = !d.json && d.parallel == 1 && isatty(2);
    while (d.finished < d.n) {
        while (!d.stopped && d.next < d.n && d.running < (size_t)d.parallel) {
            if (start(&d, &d.runs[d.next], cli, argc, argv, fn) != 0) {
                fprintf(stderr, "stepq: cannot start a process for '%s': %s\n", d.runs[d.next].ns,
                        strerror(errno));
                d.stopped = 1;
                d.worst = EXIT_FAILED;
                break;
            }
            d.next++;
        }
        if (d.running == 0)
            break;
        step(&d);
    }
    summary(&d);
    free_driver(&d);
    return d.worst;
}

int all_ns_wanted(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--all-namespaces") == 0)
            return 1;
    }
    return 0;
}
