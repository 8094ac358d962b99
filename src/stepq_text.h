/*
 * stepq_text.h - text helpers the library shares with the CLI (cmd/): pure
 * functions of their arguments, no library state, so the CLI needs nothing
 * of the private header (stepq_private.h) to use them.
 */
#ifndef STEPQ_TEXT_H
#define STEPQ_TEXT_H

#include <stddef.h>

/* The value of one hex digit, or -1 (percent-decoding in URLs and paths). */
int stepq__hexval(char c);
/* Checked decimal parse of the whole string into [min, max]. */
int stepq__parse_long(const char *s, long min, long max, long *ret);
/* A worker id or capability: 1..63 bytes of [A-Za-z0-9_.-] (no ':'). */
int stepq__valid_id(const char *s);
/* The length (1..4) of the valid UTF-8 sequence at s[0..len), or 0 when the
 * bytes there are not one (bad lead or continuation byte, cut short,
 * overlong, a surrogate, past U+10FFFF). */
size_t stepq__utf8_seq(const char *s, size_t len);
/* Replaces, in place, each byte of the NUL-terminated s that is not part
 * of a valid sequence with '?' (for error messages that quote input). */
void stepq__utf8_scrub(char *s);

#endif
