/*
 * Names and texts of chatd's error codes (see error.h).
 */
#include "core/error.h"

#include <uv.h>

const char *chat_err_name(int err)
{
    switch ((chat_err_t)err) {
    case CHAT_EOK:
        return "OK";
#define CHAT_ERR_NAME(name, value, text)                                                           \
    case CHAT_##name:                                                                              \
        return #name;
        CHAT_ERR_MAP(CHAT_ERR_NAME)
#undef CHAT_ERR_NAME
    }
    return uv_err_name(err);
}

const char *chat_strerror(int err)
{
    switch ((chat_err_t)err) {
    case CHAT_EOK:
        return "success";
#define CHAT_ERR_TEXT(name, value, text)                                                           \
    case CHAT_##name:                                                                              \
        return text;
        CHAT_ERR_MAP(CHAT_ERR_TEXT)
#undef CHAT_ERR_TEXT
    }
    return uv_strerror(err);
}
