/* fuzz_rules.c - libFuzzer target: the key-map rules-file parser and the
 * key classifier on the names it derives. */
#include <stdint.h>
#include <string.h>

#include "stepq_private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static stepq__keymap km;
    char err[256];

    if (stepq__keymap_parse(&km, (const char *)data, size, err, sizeof(err)) != STEPQ_OK) {
        if (err[0] == '\0')
            __builtin_trap();
        return 0;
    }
    /* Every name a rule derives maps back to that rule and side. */
    for (size_t r = 0; r < km.n; r++) {
        if (km.rules[r].type == STEPQ_KT_CHANNEL)
            continue;
        for (int side = 0; side < 2; side++) {
            sds k = stepq__keymap_key(&km, r, (enum stepq__side)side, "x1");
            enum stepq__side got;
            char id[64];
            if (stepq__keymap_match(&km, k, sdslen(k), &got, id, sizeof(id)) != (int)r ||
                (int)got != side)
                __builtin_trap();
            sdsfree(k);
        }
    }
    return 0;
}
