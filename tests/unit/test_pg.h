/*
 * The real PostgreSQL of the unit tests that need one: CHATD_TEST_PG holds
 * its conninfo. `make unit` runs without it and those cases skip;
 * scripts/test-integration.sh sets it with CHATD_TEST_REQUIRE_PG=1, under
 * which a missing server fails the test instead of skipping it.
 */
#ifndef CHAT_TEST_PG_H
#define CHAT_TEST_PG_H

#include <stdio.h>
#include <stdlib.h>

/** The conninfo, or NULL when the case should skip; exits when one is required. */
static inline const char *test_pg_conninfo(void)
{
    const char *c = getenv("CHATD_TEST_PG");
    if (c && *c)
        return c;
    const char *req = getenv("CHATD_TEST_REQUIRE_PG");
    if (req && *req && *req != '0') {
        fprintf(stderr, "CHATD_TEST_REQUIRE_PG is set but CHATD_TEST_PG is empty\n");
        exit(1);
    }
    return NULL;
}

#endif
