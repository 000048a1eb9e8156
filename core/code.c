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
