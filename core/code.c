/*
 * code: names and statuses of the decision codes.
 */
#include "core/code.h"

static const struct {
    const char *name;
    int status;
} codes[] = {
#define CODE_ROW(name, str, status) {str, status},
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
