/*
 * money: parsing and arithmetic of integer amounts.
 */
#include "core/money.h"

#include <stdio.h>
#include <string.h>

static bool currency_ok(const char *c)
{
    if (strlen(c) != 3)
        return false;
    for (int i = 0; i < 3; i++)
        if (c[i] < 'A' || c[i] > 'Z')
            return false;
    return true;
}

int money_from_json(const json_t *v, bool allow_extra, struct money *out, const char **why)
{
    if (!json_is_object(v)) {
        *why = "amount is not an object";
        return -1;
    }
    json_t *value = json_object_get(v, "value");
    json_t *cur = json_object_get(v, "currency");
    if (!json_is_integer(value)) {
        *why = value ? "amount value is not an integer" : "amount value missing";
        return -1;
    }
    if (json_integer_value(value) < 0) {
        *why = "amount value is negative";
        return -1;
    }
    if (!json_is_string(cur) || !currency_ok(json_string_value(cur))) {
        *why = "amount currency is not a three-letter ISO 4217 code";
        return -1;
    }
    if (!allow_extra && json_object_size(v) != 2) {
        *why = "amount has members other than value and currency";
        return -1;
    }
    out->value = json_integer_value(value);
    memcpy(out->currency, json_string_value(cur), 4);
    return 0;
}

json_t *money_to_json(const struct money *m)
{
    return json_pack("{sIss}", "value", (json_int_t)m->value, "currency", m->currency);
}

int money_add(const struct money *a, const struct money *b, struct money *out)
{
    int64_t sum;
    if (strcmp(a->currency, b->currency) != 0 || __builtin_add_overflow(a->value, b->value, &sum))
        return -1;
    out->value = sum;
    memcpy(out->currency, a->currency, 4);
    return 0;
}

int money_mul(int64_t qty, const struct money *unit, struct money *out)
{
    int64_t p;
    if (qty < 0 || __builtin_mul_overflow(qty, unit->value, &p))
        return -1;
    out->value = p;
    memcpy(out->currency, unit->currency, 4);
    return 0;
}

bool money_equal(const struct money *a, const struct money *b)
{
    return a->value == b->value && strcmp(a->currency, b->currency) == 0;
}

void money_format(const struct money *m, char *buf, size_t n)
{
    snprintf(buf, n, "%lld %s", (long long)m->value, m->currency);
}
