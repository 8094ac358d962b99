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
    /* Every name a rule derives maps back to a rule of that side whose
     * twin of it is the rule's own twin (where templates nest, the more
     * specific one takes the name, and the parser made both rename alike). */
    for (size_t r = 0; r < km.n; r++) {
        if (km.rules[r].type == STEPQ_KT_CHANNEL)
            continue;
        for (int side = 0; side < 2; side++) {
            sds k = stepq__keymap_key(&km, r, (enum stepq__side)side, "x1:y");
            sds t = stepq__keymap_key(&km, r, (enum stepq__side) !side, "x1:y");
            enum stepq__side got;
            const char *id;
            size_t idlen;
            int m = stepq__keymap_match(&km, k, sdslen(k), &got, &id, &idlen);
            if (m < 0 || (int)got != side)
                __builtin_trap();
            sds t2 = stepq__keymap_key_n(&km, (size_t)m, (enum stepq__side) !side, id, idlen);
            if (sdscmp(t, t2) != 0)
                __builtin_trap();
            sdsfree(k);
            sdsfree(t);
            sdsfree(t2);
        }
    }
    return 0;
}
