/*
 * libFuzzer target: the gateway's configuration loader (gateway/config.c over core/cfg), which
 * reads an operator's file: any bytes must give a configuration or a list of errors that each
 * name a JSON path, never a crash or a leak. The input is written to a file in a private
 * temporary directory (the loader resolves file names against the file's directory, so key files
 * named by a mutated input are looked up there, where none exist).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/util.h>
#include <netdb.h>

#include "gateway/config.h"

/* The loader resolves upstream names; a fuzzer must never send a DNS query: this definition
 * takes the place of libevent's (the executable's symbol wins) and resolves numeric hosts only. */
int evutil_getaddrinfo(const char *node, const char *service, const struct evutil_addrinfo *hints,
                       struct evutil_addrinfo **res)
{
    struct addrinfo h = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
                         .ai_family = hints ? hints->ai_family : AF_UNSPEC,
                         .ai_socktype = hints ? hints->ai_socktype : 0};
    return getaddrinfo(node, service, &h, (struct addrinfo **)res);
}

static char dir[64], path[96];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof(dir), "/tmp/fuzz-config-XXXXXX");
        if (!mkdtemp(dir))
            abort();
        snprintf(path, sizeof(path), "%s/gateway.json", dir);
    }
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    struct cfg c = {0};
    struct config *conf = config_load(path, &c);
    if (conf && c.nerrors)
        abort(); /* a configuration is only ever returned without errors */
    if (!conf && !c.nerrors)
        abort(); /* a refusal always says why */
    for (size_t i = 0; i < c.nerrors; i++)
        if (strncmp(c.errors[i], path, strlen(path)) != 0)
            abort(); /* every error names the file (then its JSON path) */
    config_unref(conf);
    cfg_clear(&c);
    return 0;
}
