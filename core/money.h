/*
 * money: {value, currency} amounts in integer minor units, with overflow-checked arithmetic.
 * There are no floats anywhere in this module, by design.
 */
#ifndef CORE_MONEY_H
#define CORE_MONEY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "core/util.h"

struct money {
    int64_t value;    /* minor units, >= 0 */
    char currency[4]; /* ISO 4217, three upper-case letters */
};

/** Parse {"value": int >= 0, "currency": "EUR"} (extra members allowed only if allow_extra). */
int money_from_json(const json_t *v, bool allow_extra, struct money *out,
                    const char **why) MUST_CHECK;
/** A new JSON object for m. */
json_t *money_to_json(const struct money *m);
/** *out = a + b; -1 on overflow or a currency difference. */
int money_add(const struct money *a, const struct money *b, struct money *out) MUST_CHECK;
/** *out = qty * unit; -1 on overflow. */
int money_mul(int64_t qty, const struct money *unit, struct money *out) MUST_CHECK;
/** 1 when a and b have the same value and currency. */
bool money_equal(const struct money *a, const struct money *b);
/** "18000 EUR" into buf (at least 32 bytes). */
void money_format(const struct money *m, char *buf, size_t n);

#endif
