/* Unit tests for core/money: integers only, overflow-checked sums and products. */
#include "testkit.h"

#include "core/money.h"

static json_t *parse(const char *s)
{
    char *err = NULL;
    json_t *v = sjson_parse(s, strlen(s), &err);
    assert_non_null(v);
    return v;
}

static void test_parse(void **state)
{
    (void)state;
    struct money m;
    const char *why;
    json_t *v = parse("{\"value\":18000,\"currency\":\"EUR\"}");
    assert_int_equal(money_from_json(v, false, &m, &why), 0);
    assert_int_equal(m.value, 18000);
    assert_string_equal(m.currency, "EUR");
    char buf[32];
    money_format(&m, buf, sizeof(buf));
    assert_string_equal(buf, "18000 EUR");
    json_decref(v);
}

static void test_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {"{\"value\":180.5,\"currency\":\"EUR\"}",
                                      "{\"value\":1e3,\"currency\":\"EUR\"}",
                                      "{\"value\":-1,\"currency\":\"EUR\"}",
                                      "{\"value\":\"1\",\"currency\":\"EUR\"}",
                                      "{\"value\":1,\"currency\":\"eur\"}",
                                      "{\"value\":1,\"currency\":\"EURO\"}",
                                      "{\"value\":1}",
                                      "{\"value\":1,\"currency\":\"EUR\",\"x\":1}"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        struct money m;
        const char *why = NULL;
        json_t *v = parse(bad[i]);
        if (money_from_json(v, false, &m, &why) == 0)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(why);
        json_decref(v);
    }
}

static void test_overflow(void **state)
{
    (void)state;
    struct money a = {INT64_MAX, "EUR"}, b = {1, "EUR"}, out;
    assert_int_equal(money_add(&a, &b, &out), -1);
    assert_int_equal(money_mul(2, &a, &out), -1);
    struct money c = {1, "USD"};
    assert_int_equal(money_add(&b, &c, &out), -1); /* currencies differ */
    assert_int_equal(money_mul(3, &b, &out), 0);
    assert_int_equal(out.value, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_overflow),
    };
    return cmocka_run_group_tests_name("money", tests, NULL, NULL);
}
