/*
 * Schema migrations (see migrate.h). Blocking libpq on purpose: this runs from
 * `chatd migrate`, before any loop exists. Every step of a migration happens
 * inside its own transaction, so it works through PgBouncer's transaction
 * mode too: the advisory lock, the check, the SQL and the row commit together.
 */
#include "db/migrate.h"

#include "core/error.h"
#include "core/log.h"

#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Key of the transaction-scoped advisory lock that serialises migrators ("chatdmig"). */
#define MIGRATE_LOCK_KEY "6368617464696d67"

static const char create_table_sql[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                       " version text PRIMARY KEY,"
                                       " applied_at timestamptz NOT NULL DEFAULT now())";

static const char lock_sql[] = "SELECT pg_advisory_xact_lock(x'" MIGRATE_LOCK_KEY "'::bigint)";

static void set_err(char *err, unsigned long errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, unsigned long errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    /* One line: libpq messages end in newlines. */
    for (char *p = err; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '"')
            *p = *p == '"' ? '\'' : ' ';
    size_t n = strlen(err);
    while (n > 0 && err[n - 1] == ' ')
        err[--n] = '\0';
}

static void notice_cb(void *arg, const char *message)
{
    chat_log_debug("event=db_migrate_notice message=\"%.*s\"", (int)strcspn(message, "\n"),
                   message);
}

/*
 * Runs sql (maybe several statements: PQexec stops at the first error and
 * returns it). 0 on success, else -1 with a message in err.
 */
static int run(PGconn *pg, const char *sql, const char *what, char *err, unsigned long errlen)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
    if (!ok) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        set_err(err, errlen, "%s: %s%s%s", what, state ? state : "", state ? " " : "",
                r ? PQresultErrorMessage(r) : PQerrorMessage(pg));
    }
    PQclear(r);
    return ok ? 0 : -1;
}

/* 1 if version is recorded, 0 if not, -1 on error. */
static int is_applied(PGconn *pg, const char *version, char *err, unsigned long errlen)
{
    const char *params[1] = {version};
    PGresult *r = PQexecParams(pg, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL,
                               params, NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        rc = PQntuples(r) > 0;
    else
        set_err(err, errlen, "checking %s: %s", version,
                r ? PQresultErrorMessage(r) : PQerrorMessage(pg));
    PQclear(r);
    return rc;
}

static int record(PGconn *pg, const char *version, char *err, unsigned long errlen)
{
    const char *params[1] = {version};
    PGresult *r = PQexecParams(pg, "INSERT INTO schema_migrations (version) VALUES ($1)", 1, NULL,
                               params, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        set_err(err, errlen, "recording %s: %s", version,
                r ? PQresultErrorMessage(r) : PQerrorMessage(pg));
    PQclear(r);
    return ok ? 0 : -1;
}

/* The version recorded for a file: its name without ".sql". */
static void version_of(const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    if (n > 4 && strcmp(name + n - 4, ".sql") == 0)
        n -= 4;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, name, n);
    out[n] = '\0';
}

/*
 * Applies one migration in its own transaction. Returns 1 if applied, 0 if it
 * already was, -1 on error (the transaction is rolled back).
 */
static int apply_one(PGconn *pg, const chat_migration_t *m, char *err, unsigned long errlen)
{
    char version[256];
    version_of(m->name, version, sizeof version);
    if (run(pg, "BEGIN", "BEGIN", err, errlen) != 0)
        return -1;
    int rc = run(pg, lock_sql, "advisory lock", err, errlen);
    int applied = 0;
    if (rc == 0) {
        applied = is_applied(pg, version, err, errlen);
        rc = applied < 0 ? -1 : 0;
    }
    if (rc == 0 && !applied) {
        char what[300];
        snprintf(what, sizeof what, "migration %s", m->name);
        rc = run(pg, m->sql, what, err, errlen);
        if (rc == 0)
            rc = record(pg, version, err, errlen);
    }
    if (rc != 0) {
        PGresult *r = PQexec(pg, "ROLLBACK");
        PQclear(r);
        return -1;
    }
    /* COMMIT of an already aborted transaction reports success; we checked above. */
    if (run(pg, "COMMIT", "COMMIT", err, errlen) != 0)
        return -1;
    if (!applied)
        chat_log_info("event=db_migrate version=%s", version);
    return applied ? 0 : 1;
}

/* Index of the migration named name (with or without ".sql"), or -1. */
static int find_migration(const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < chat_migrations_count; i++) {
        const char *m = chat_migrations[i].name;
        if (!strcmp(m, name) || (!strncmp(m, name, n) && !strcmp(m + n, ".sql")))
            return i;
    }
    return -1;
}

int chat_db_migrate(const char *conninfo, char *err, unsigned long errlen)
{
    return chat_db_migrate_to(conninfo, NULL, err, errlen);
}

int chat_db_migrate_to(const char *conninfo, const char *last, char *err, unsigned long errlen)
{
    if (err && errlen)
        err[0] = '\0';
    int upto = last ? find_migration(last) : chat_migrations_count - 1;
    if (upto < 0) {
        set_err(err, errlen, "no migration named %s", last);
        return CHAT_EINVAL;
    }
    PGconn *pg = PQconnectdb(conninfo ? conninfo : "");
    if (!pg || PQstatus(pg) != CONNECTION_OK) {
        set_err(err, errlen, "connect: %s", pg ? PQerrorMessage(pg) : "out of memory");
        PQfinish(pg);
        return CHAT_EDOWN;
    }
    PQsetNoticeProcessor(pg, notice_cb, NULL);
    /* Two first runs racing on CREATE TABLE IF NOT EXISTS can both try to create it. */
    int rc = run(pg, "BEGIN", "BEGIN", err, errlen);
    if (rc == 0)
        rc = run(pg, lock_sql, "advisory lock", err, errlen);
    if (rc == 0)
        rc = run(pg, create_table_sql, "creating schema_migrations", err, errlen);
    if (rc == 0)
        rc = run(pg, "COMMIT", "COMMIT", err, errlen);
    if (rc != 0) {
        PQfinish(pg);
        return CHAT_EREPLY;
    }
    int applied = 0;
    for (int i = 0; i <= upto; i++) {
        int r = apply_one(pg, &chat_migrations[i], err, errlen);
        if (r < 0) {
            PQfinish(pg);
            return CHAT_EREPLY;
        }
        applied += r;
    }
    PQfinish(pg);
    return applied;
}
