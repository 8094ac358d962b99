/* fuzz_url.c - libFuzzer target: Redis URL parsing. */
#include <stdint.h>
#include <string.h>

#include "stepq_private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char buf[8192], err[256];
    stepq__url u;

    if (size >= sizeof(buf))
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    if (stepq__url_parse(&u, buf, err, sizeof(err)) == STEPQ_OK) {
        /* A parsed URL is whole: a host, a port in range or a socket path. */
        if (u.host == NULL || (!u.is_unix && (u.port < 1 || u.port > 65535)) || u.db < 0)
            __builtin_trap();
        stepq__url_release(&u);
    } else if (err[0] == '\0') {
        __builtin_trap(); /* every refusal says why */
    }
    return 0;
}
