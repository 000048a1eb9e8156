/*
 * entry: canonical entry encoding.
 */
#include "audit/entry.h"

#include <stdlib.h>
#include <string.h>

static const char *check(const json_t *v, int depth)
{
    if (depth > 16)
        return "nested too deeply";
    if (json_is_real(v))
        return "floats are not allowed in entries";
    const char *k, *why;
    json_t *m;
    size_t i;
    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, k, m)
        {
            for (const char *p = k; *p; p++)
                if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                    return "entry keys must be printable ASCII";
            if ((why = check(m, depth + 1)))
                return why;
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, m)
        {
            if ((why = check(m, depth + 1)))
                return why;
        }
    }
    return NULL;
}

char *entry_encode(const json_t *obj, size_t *len, const char **why)
{
    if (!json_is_object(obj)) {
        *why = "an entry is a JSON object";
        return NULL;
    }
    if ((*why = check(obj, 0)))
        return NULL;
    char *s = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (!s)
        abort();
    *len = strlen(s);
    return s;
}
