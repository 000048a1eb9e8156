/*
 * Unit tests for core/jsonscan: what it accepts is what sjson_parse() accepts (asserted on both
 * for every case), and the values read in place are the document's. The claims built on it are
 * in test_mandate.c; tests/fuzz/fuzz_claims_diff.c compares the two parsers on arbitrary input.
 */
#include "testkit.h"

#include "core/jsonscan.h"

/* js_parse() of text, after asserting that sjson_parse() says the same. */
static int parse(struct js_doc *d, const char *text, size_t len)
{
    char *err = NULL;
    json_t *t = sjson_parse(text, len, &err);
    int rc = js_parse(d, text, len);
    if ((t != NULL) != (rc == 0))
        fail_msg("sjson_parse %s but js_parse %s: %.80s", t ? "accepts" : "refuses",
                 rc == 0 ? "accepts" : "refuses", text);
    json_decref(t);
    free(err);
    return rc;
}

static int check(const char *text)
{
    struct js_doc d;
    int rc = parse(&d, text, strlen(text));
    js_clear(&d);
    return rc;
}

static void test_grammar(void **state)
{
    (void)state;
    static const char *const good[] = {
        "{}",
        "[]",
        " {\"a\" : [ 1 , -0 , 0.5 , 1e5 , 1E-5 , true , false , null ] } ",
        "[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"]",
        "[\"\xc3\xa9\xe2\x82\xac\xf4\x8f\xbf\xbf\"]",
        "[9223372036854775807,-9223372036854775808]",
        "[1.7976931348623157e308,4.9e-324,1e-99999]",
        "[0e99999999999999999999]",
        "{\"a\":{\"a\":{}},\"b\":{\"a\":{}}}",
    };
    static const char *const bad[] = {
        "",
        " ",
        "1",
        "\"a\"",
        "null",
        "{} {}",
        "{",
        "[1,]",
        "{\"a\":1,}",
        "{\"a\"}",
        "{1:2}",
        "[01]",
        "[-]",
        "[1.]",
        "[.5]",
        "[1e]",
        "[1e+]",
        "[+1]",
        "[0x1]",
        "[tru]",
        "[True]",
        "[9223372036854775808]",
        "[-9223372036854775809]",
        "[1.7976931348623159e308]",
        "[1e309]",
        "[\"\\u0000\"]",
        "[\"\\ud800\"]",
        "[\"\\udc00\"]",
        "[\"\\ud800\\ud800\"]",
        "[\"\\x\"]",
        "[\"\\u12\"]",
        "[\"\x01\"]",
        "[\"\xc0\x80\"]",
        "[\"\xed\xa0\x80\"]",
        "[\"\xf4\x90\x80\x80\"]",
        "[\"\xe2\x82\"]",
        "[\xc3\xa9]",
        "{\"a\":1,\"a\":2}",
        "{\"a\":1,\"\\u0061\":2}",
        "[{\"x\":1,\"y\":{\"x\":1},\"x\":2}]",
    };
    for (size_t i = 0; i < ARRAY_LEN(good); i++)
        if (check(good[i]) != 0)
            fail_msg("refused: %s", good[i]);
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        if (check(bad[i]) == 0)
            fail_msg("accepted: %s", bad[i]);
}

/* More top-level members than the inline index holds: it grows, duplicates are still found
 * (by sorting, past 16 members). */
static void test_many_members(void **state)
{
    (void)state;
    char *text = xstrdup("{\"m0\":0");
    for (int i = 1; i < 3 * JS_INLINE_MEMBERS; i++) {
        char *more = xasprintf("%s,\"m%d\":%d", text, i, i);
        free(text);
        text = more;
    }
    char *dup = xasprintf("%s,\"m%d\":0}", text, JS_INLINE_MEMBERS + 5);
    char *ok = xasprintf("%s}", text);
    struct js_doc d;
    assert_int_equal(parse(&d, ok, strlen(ok)), 0);
    assert_int_equal(d.n, 3 * JS_INLINE_MEMBERS);
    int64_t v;
    assert_int_equal(js_int(js_root_get(&d, "m70"), &v), 0);
    assert_int_equal(v, 70);
    assert_null(js_root_get(&d, "m96").p);
    js_clear(&d);
    assert_int_equal(parse(&d, dup, strlen(dup)), -1);
    js_clear(&d);
    /* The same inside an array, where the members are dropped once the object is read. */
    char *nested = xasprintf("[%s,%s]", ok, dup);
    assert_int_equal(parse(&d, nested, strlen(nested)), -1);
    js_clear(&d);
    free(nested);
    nested = xasprintf("[%s,%s]", ok, ok);
    assert_int_equal(parse(&d, nested, strlen(nested)), 0);
    assert_int_equal(d.n, 0);
    js_clear(&d);
    free(nested);
    free(text);
    free(dup);
    free(ok);
}

static void test_reading(void **state)
{
    (void)state;
    const char *text = "{\"s\":\"a\\u00e9\\n\",\"o\":{ \"k\\u0065y\" : [ 1 , {\"x\":-42} ] },"
                       "\"r\":2.0,\"n\":null,\"e\":\"\"}";
    struct js_doc d;
    assert_int_equal(parse(&d, text, strlen(text)), 0);
    char buf[8];
    struct js_val s = js_root_get(&d, "s");
    assert_int_equal(js_type(s), JS_STRING);
    assert_int_equal(js_str(s, buf, sizeof(buf)), 4);
    assert_string_equal(buf, "a\xc3\xa9\n");
    assert_int_equal(js_str(s, buf, 3), 4); /* cut, still NUL-terminated */
    assert_string_equal(buf, "a\xc3");
    struct js_val arr = js_get(js_root_get(&d, "o"), "key");
    assert_int_equal(js_type(arr), JS_ARRAY);
    assert_int_equal(js_size(arr), 2);
    assert_int_equal(js_size(js_root_get(&d, "o")), 1);
    struct js_val it = {NULL, 0};
    int64_t v;
    assert_true(js_next(arr, &it));
    assert_int_equal(js_int(it, &v), 0);
    assert_int_equal(v, 1);
    assert_true(js_next(arr, &it));
    assert_int_equal(js_int(js_get(it, "x"), &v), 0);
    assert_int_equal(v, -42);
    assert_false(js_next(arr, &it));
    assert_int_equal(js_type(js_root_get(&d, "r")), JS_REAL);
    assert_int_equal(js_int(js_root_get(&d, "r"), &v), -1);
    assert_int_equal(js_type(js_root_get(&d, "n")), JS_NULL);
    assert_int_equal(js_str(js_root_get(&d, "e"), buf, sizeof(buf)), 0);
    assert_int_equal(js_type(js_root_get(&d, "missing")), JS_NONE);
    assert_int_equal(js_type(js_get(js_root_get(&d, "s"), "x")), JS_NONE); /* not an object */
    assert_false(js_next(js_root_get(&d, "o"), &it));                      /* not an array */
    js_clear(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grammar),
        cmocka_unit_test(test_many_members),
        cmocka_unit_test(test_reading),
    };
    return cmocka_run_group_tests_name("jsonscan", tests, NULL, NULL);
}
