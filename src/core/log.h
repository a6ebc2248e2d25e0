/*
 * Structured logging: one line per event on stderr, as key=value pairs,
 * starting with ts= and level=. A debug call costs one branch when the level
 * is above debug. Messages are written with a single write(2) so lines from
 * several worker threads never interleave.
 */
#ifndef CHAT_CORE_LOG_H
#define CHAT_CORE_LOG_H

enum chat_log_level {
    CHAT_LOG_DEBUG = 0,
    CHAT_LOG_INFO = 1,
    CHAT_LOG_WARN = 2,
    CHAT_LOG_ERROR = 3,
};

/** The lowest level that is written; set once at start-up. */
extern int chat_log_level;

/** Parses "debug", "info", "warn" or "error"; -1 for anything else. */
int chat_log_level_parse(const char *s);

/**
 * Writes one line: "ts=<RFC 3339> level=<level> " followed by the formatted
 * text, which should itself be key=value pairs starting with event=.
 */
void chat_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define chat_log_debug(...)                                                                        \
    do {                                                                                           \
        if (chat_log_level <= CHAT_LOG_DEBUG)                                                      \
            chat_log_write(CHAT_LOG_DEBUG, __VA_ARGS__);                                           \
    } while (0)
#define chat_log_info(...)                                                                         \
    do {                                                                                           \
        if (chat_log_level <= CHAT_LOG_INFO)                                                       \
            chat_log_write(CHAT_LOG_INFO, __VA_ARGS__);                                            \
    } while (0)
#define chat_log_warn(...) chat_log_write(CHAT_LOG_WARN, __VA_ARGS__)
#define chat_log_error(...) chat_log_write(CHAT_LOG_ERROR, __VA_ARGS__)

#endif
