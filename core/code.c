/*
 * code: names and statuses of the decision codes.
 */
#include "core/code.h"

static const struct {
    const char *name;
    int status;
    const char *message;
} codes[] = {
#define CODE_ROW(name, str, status, msg) {str, status, msg},
    CODE_LIST(CODE_ROW)
#undef CODE_ROW
};

const char *code_name(enum code c)
{
    return (unsigned)c < CODE__COUNT ? codes[c].name : "unknown";
}

int code_status(enum code c)
{
    return (unsigned)c < CODE__COUNT ? codes[c].status : 500;
}

const char *code_message(enum code c)
{
    return (unsigned)c < CODE__COUNT ? codes[c].message : "unknown";
}

const char *code_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}
