/*
 * mandate-audit: the auditor's tool (SPEC §4).
 */
#include <stdio.h>
#include <string.h>

#include "core/version.h"

static const char usage[] =
    "usage: mandate-audit verify --db DB --checkpoint-key PUB [--checkpoint FILE]... "
    "[--jwks ID=FILE]... [--json]\n"
    "       mandate-audit replay --db DB [--jwks ID=FILE]... [--json]\n"
    "       mandate-audit export --db DB [--since SEQ]\n"
    "       mandate-audit show --db DB [--principal P] [--agent A] [--merchant M] [--since TIME]\n"
    "       mandate-audit --version | --help\n";

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("mandate-audit %s\n", MANDATE_VERSION);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    fputs(usage, stderr);
    return 1;
}
