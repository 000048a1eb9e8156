/* Unit tests for gateway/route: exact and prefix matching, first match, unreachable routes. */
#include "testkit.h"

#include "gateway/route.h"

static const struct route *match(struct route_table *t, const char *method, const char *path)
{
    return route_match(t, method, path, strlen(path));
}

static void test_match(void **state)
{
    (void)state;
    struct route_table t = {0};
    route_add(&t, "GET", "/lux/search", "search", false, NULL);
    route_add(&t, "POST", "/lux/book", "book_room", true, NULL);
    route_add(&t, "GET", "/lux/bookings/*", "get_booking", false, NULL);
    assert_string_equal(match(&t, "GET", "/lux/search")->action, "search");
    assert_null(match(&t, "POST", "/lux/search"));
    assert_null(match(&t, "GET", "/lux/search/"));
    assert_null(match(&t, "GET", "/lux/searchx"));
    assert_true(match(&t, "POST", "/lux/book")->priced);
    assert_string_equal(match(&t, "GET", "/lux/bookings/42")->action, "get_booking");
    assert_null(match(&t, "GET", "/lux/bookings"));
    assert_null(match(&t, "GET", "/lux/bookings/"));
    size_t by;
    assert_int_equal(route_unreachable(&t, &by), -1);
    route_clear(&t);
}

static void test_unreachable(void **state)
{
    (void)state;
    struct route_table t = {0};
    size_t by;
    route_add(&t, "GET", "/a/*", "a", false, NULL);
    route_add(&t, "GET", "/a/b", "b", false, NULL);
    assert_int_equal(route_unreachable(&t, &by), 1);
    assert_int_equal(by, 0);
    route_clear(&t);
    route_add(&t, "GET", "/a/b/*", "b", false, NULL);
    route_add(&t, "GET", "/a/*", "a", false, NULL); /* reachable: /a/c */
    route_add(&t, "POST", "/a/b/*", "c", false, NULL);
    assert_int_equal(route_unreachable(&t, &by), -1);
    route_add(&t, "GET", "/a/b/*", "dup", false, NULL);
    assert_int_equal(route_unreachable(&t, &by), 3);
    route_clear(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_unreachable),
    };
    return cmocka_run_group_tests_name("route", tests, NULL, NULL);
}
