/*
 * test_concurrency.c - 8 claimer processes, each with its own connection,
 * race over 10,000 steps: every step is claimed exactly once.
 */
#include <sys/wait.h>
#include <unistd.h>
#include "test.h"
#include "testlib.h"

#define STEPS    10000
#define CLAIMERS 8

/* A child claims until the queue is empty, completing each step, and writes
 * the ids it claimed to its pipe. */
static void claimer(int n, int fd)
{
    stepq_options o = {.ignore_env_pin = 1};
    stepq *q = stepq_connect(t_url(), &o);
    char worker[32];
    FILE *out = fdopen(fd, "w");

    snprintf(worker, sizeof(worker), "c%d", n);
    for (;;) {
        char *json;
        if (stepq_claim(q, worker, NULL, 0, 1, &json) != STEPQ_OK) {
            if (stepq_err(q) == STEPQ_E_NOTFOUND)
                break;
            fprintf(stderr, "claimer %d: %s\n", n, stepq_errstr(q));
            _exit(2);
        }
        char id[64], tok[64];
        snprintf(id, sizeof(id), "%s", t_field(json + 1, "id"));
        /* t_field wants an object: strip the array brackets. */
        json[strlen(json) - 1] = '\0';
        snprintf(id, sizeof(id), "%s", t_field(json + 1, "id"));
        snprintf(tok, sizeof(tok), "%s", t_field(json + 1, "token"));
        stepq_str_free(json);
        if (stepq_complete(q, id, tok, "") != STEPQ_OK) {
            fprintf(stderr, "claimer %d: complete %s: %s\n", n, id, stepq_errstr(q));
            _exit(3);
        }
        fprintf(out, "%s\n", id);
    }
    fclose(out);
    stepq_free(q);
    _exit(0);
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run(const char *phase)
{
    static char *ids[STEPS * 2];
    size_t nids = 0;
    int fds[CLAIMERS];
    pid_t pids[CLAIMERS];

    t_flush();
    t_phase(phase);
    for (int i = 0; i < STEPS; i++) {
        char id[STEPQ_ID_MAX];
        stepq_submit_opts o = {.priority = i % 4};
        REQUIRE(stepq_submit(Q, &o, id) == STEPQ_OK);
    }
    for (int i = 0; i < CLAIMERS; i++) {
        int p[2];
        REQUIRE(pipe(p) == 0);
        pids[i] = fork();
        if (pids[i] == 0) {
            close(p[0]);
            claimer(i, p[1]);
        }
        close(p[1]);
        fds[i] = p[0];
    }
    int per[CLAIMERS] = {0};
    for (int i = 0; i < CLAIMERS; i++) {
        FILE *in = fdopen(fds[i], "r");
        char line[128];
        while (fgets(line, sizeof(line), in) != NULL && nids < STEPS * 2) {
            line[strcspn(line, "\n")] = '\0';
            ids[nids++] = strdup(line);
            per[i]++;
        }
        fclose(in);
    }
    for (int i = 0; i < CLAIMERS; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            FAILF("claimer %d exited with %d", i, st);
    }
    ASSERT_EQ(nids, STEPS);
    qsort(ids, nids, sizeof(*ids), cmp);
    size_t dups = 0;
    for (size_t i = 1; i < nids; i++)
        dups += strcmp(ids[i - 1], ids[i]) == 0;
    ASSERT_EQ(dups, 0);
    int busy = 0;
    for (int i = 0; i < CLAIMERS; i++)
        busy += per[i] > 0;
    CHECK(busy >= 2); /* they really raced */
    const char *done = strcmp(phase, "step") == 0 ? "steps:completed" : "jobs:completed";
    ASSERT_EQ(t_int("SCARD %s", done), STEPS);
    for (size_t i = 0; i < nids; i++)
        free(ids[i]);
    printf("     phase %s: %zu claims, 0 duplicates, per claimer:", phase, nids);
    for (int i = 0; i < CLAIMERS; i++)
        printf(" %d", per[i]);
    printf("\n");
}

static void test_claim_exactly_once_job(void)
{
    run("job");
}

static void test_claim_exactly_once_dual_write(void)
{
    run("dual-write");
}

int main(void)
{
    t_setup();
    RUN(test_claim_exactly_once_job);
    RUN(test_claim_exactly_once_dual_write);
    t_teardown();
    TEST_END();
}
