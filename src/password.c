/*
 * password.c - the Redis password from the environment instead of the URL:
 * STEPQ_REDIS_PASSWORD, or the first line of the file named by
 * STEPQ_REDIS_PASSWORD_FILE (a systemd credential, a mounted secret). A
 * password on a command line is visible to every user in ps(1); one in the
 * environment or a file of mode 0600 is not. A password in the URL wins.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stepq_private.h"

#define PASSWORD_MAX 512

int stepq__url_password_env(stepq__url *u, char *err, size_t errlen)
{
    const char *pw = getenv("STEPQ_REDIS_PASSWORD");
    const char *file = getenv("STEPQ_REDIS_PASSWORD_FILE");
    char buf[PASSWORD_MAX + 2];

    if (u->pass != NULL || ((pw == NULL || *pw == '\0') && (file == NULL || *file == '\0')))
        return STEPQ_OK;
    if (pw == NULL || *pw == '\0') {
        FILE *fp = fopen(file, "r");
        if (fp == NULL) {
            snprintf(err, errlen,
                     "cannot read the Redis password from STEPQ_REDIS_PASSWORD_FILE: %s; check "
                     "the file and its mode",
                     strerror(errno));
            return STEPQ_ERR;
        }
        size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
        fclose(fp);
        buf[n] = '\0';
        buf[strcspn(buf, "\r\n")] = '\0';
        if (n > PASSWORD_MAX || buf[0] == '\0') {
            snprintf(err, errlen,
                     "the file of STEPQ_REDIS_PASSWORD_FILE holds %s; put the password alone "
                     "on its first line",
                     buf[0] == '\0' ? "no password" : "more than 512 bytes");
            return STEPQ_ERR;
        }
        pw = buf;
    }
    size_t len = strlen(pw);
    u->pass = stepq__malloc(len + 1);
    if (u->pass == NULL) {
        snprintf(err, errlen, "out of memory");
        return STEPQ_ERR;
    }
    memcpy(u->pass, pw, len + 1);
    return STEPQ_OK;
}
