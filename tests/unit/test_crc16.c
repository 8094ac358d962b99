/* test_crc16.c - the hash slot of a key and of a namespace, against the
 * values a Redis Cluster gives (CLUSTER KEYSLOT on redis-server 7.0). */
#include "test.h"
#include "stepq_private.h"

static void test_crc16_vector(void)
{
    /* The check value of CRC-16/XMODEM, also in Redis's crc16.c. */
    ASSERT_EQ(stepq__crc16("123456789", 9), 0x31C3);
    ASSERT_EQ(stepq__crc16("", 0), 0);
}

static void test_key_slot(void)
{
    static const struct {
        const char *key;
        int slot;
    } cases[] = {
        {"123456789", 12739}, {"foo", 12182},       {"{foo}:anything", 12182},
        {"{b}:x", 3300},      {"{c}:x", 7365},      {"{d}:x", 11298},
        {"{emails}:x", 3728}, {"a{b}c{d}", 3300},   {"{}foo", 9500}, /* empty tag: whole key */
        {"{q1}:job:1", 7450}, {"x{q1}y{q2}", 7450},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = stepq__key_slot(cases[i].key, strlen(cases[i].key));
        if (got != cases[i].slot)
            FAILF("slot of '%s': %d, expected %d", cases[i].key, got, cases[i].slot);
    }
    /* Binary-safe: a NUL inside the tag counts. */
    ASSERT_EQ(stepq__key_slot("{a\0b}", 5) == stepq__key_slot("{a}", 3), 0);
}

static void test_ns_slot(void)
{
    ASSERT_EQ(stepq__ns_slot("{b}:"), 3300);
    ASSERT_EQ(stepq__ns_slot("tenant{b}:"), 3300);
    ASSERT_EQ(stepq__ns_slot("{emails}:"), 3728);
    /* Refused: no tag, an empty tag, a tag the namespace does not close. */
    ASSERT_EQ(stepq__ns_slot(""), -1);
    ASSERT_EQ(stepq__ns_slot("plain:"), -1);
    ASSERT_EQ(stepq__ns_slot("{}:"), -1);
    ASSERT_EQ(stepq__ns_slot("{open:"), -1);
    ASSERT_EQ(stepq__ns_slot("close}:"), -1);
}

int main(void)
{
    RUN(test_crc16_vector);
    RUN(test_key_slot);
    RUN(test_ns_slot);
    TEST_END();
}
