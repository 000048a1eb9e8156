/*
 * Log lines are valid JSON whatever a client sends: control bytes, quotes and bytes that are not
 * UTF-8 are escaped; well-formed UTF-8 passes through unchanged.
 */
#include "testkit.h"

#include "core/log.h"

static void check(const char *in, const char *want)
{
    struct sb b = {0};
    sb_json_str(&b, in);
    sb_putn(&b, "", 1);
    assert_string_equal(b.buf, want);
    json_error_t e;
    json_t *v = json_loads(b.buf, JSON_DECODE_ANY, &e);
    if (!v)
        fail_msg("not JSON: %s (%s)", b.buf, e.text);
    json_decref(v);
    sb_clear(&b);
}

static void test_escapes(void **state)
{
    (void)state;
    check("/a\"b\\c\n", "\"/a\\\"b\\\\c\\u000a\"");
    check("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
          "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
    check("/\xff", "\"/\\u00ff\"");                                  /* never valid */
    check("/\xc3", "\"/\\u00c3\"");                                  /* truncated */
    check("/\xc0\xaf", "\"/\\u00c0\\u00af\"");                       /* overlong '/' */
    check("/\xed\xa0\x80", "\"/\\u00ed\\u00a0\\u0080\"");            /* a surrogate */
    check("/\xf4\x90\x80\x80", "\"/\\u00f4\\u0090\\u0080\\u0080\""); /* past U+10FFFF */
    check("\x7f", "\"\\u007f\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
