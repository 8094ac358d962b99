/* fuzz_step_json.c - libFuzzer target: the POST /steps body decoder
 * (cmd/stepq/step_decode.c). */
#include <stdint.h>
#include <string.h>
#include <jansson.h>

#include "step_decode.h"

/* Every error goes into a JSON body {"error": ...}: it must be valid UTF-8,
 * or the server would answer 500 without a body. */
static void check_error_text(const char *err)
{
    json_t *o;

    if (err[0] < 'a' || err[0] > 'z')
        __builtin_trap();
    o = json_pack("{s:s}", "error", err);
    if (o == NULL)
        __builtin_trap();
    json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct step_decoded d;
    char err[512];

    if (size > 65536)
        return 0;
    if (stepq__step_decode((const char *)data, size, &d, err, sizeof(err)) != STEPQ_OK) {
        if (d.type != NULL || d.requires != NULL || d.payload != NULL)
            __builtin_trap(); /* *ret is zeroed on failure */
        check_error_text(err);
        return 0;
    }
    /* Decoded fields are within the documented bounds. */
    if (d.opts.priority < 0 || d.opts.priority > 1000000)
        __builtin_trap();
    if (d.opts.max_attempts != 0 && (d.opts.max_attempts < 1 || d.opts.max_attempts > 1000))
        __builtin_trap();
    if (d.opts.type != d.type || d.opts.requires != d.requires || d.opts.payload != d.payload)
        __builtin_trap();
    if (d.payload != NULL) {
        /* The payload is one JSON value again, nested no deeper than the cap. */
        json_t *p = json_loads(d.payload, JSON_DECODE_ANY, NULL);
        if (p == NULL)
            __builtin_trap();
        json_decref(p);
    }
    stepq__step_decoded_release(&d);
    return 0;
}
