/*
 * Cap periods and the spend ledger with an injected clock: spend in one UTC day, ISO week or
 * month does not count against the next; the cap is never exceeded; a release gives room back.
 */
#include "testkit.h"

#include "gateway/ledger.h"

/* 2026-11-22 (a Sunday) 23:59:59 UTC and the second after. */
#define SUN_LAST  1795391999
#define MON_FIRST 1795392000

static void period(enum cap_period p, int64_t t, const char *want)
{
    char out[16];
    cap_period_at(p, t, out);
    assert_string_equal(out, want);
}

static void test_periods(void **state)
{
    (void)state;
    period(CAP_DAY, SUN_LAST, "d2026-11-22");
    period(CAP_DAY, MON_FIRST, "d2026-11-23");
    period(CAP_WEEK, SUN_LAST, "w2026-11-16"); /* the week began on Monday the 16th */
    period(CAP_WEEK, MON_FIRST, "w2026-11-23");
    period(CAP_MONTH, SUN_LAST, "m2026-11");
    period(CAP_MONTH, 1796083200, "m2026-12"); /* 2026-12-01 00:00:00 */
    period(CAP_TOTAL, 0, "total");
}

static void test_day_does_not_carry_over(void **state)
{
    (void)state;
    struct money cap = {10000, "EUR"};
    char today[CAP_KEY_MAX], tomorrow[CAP_KEY_MAX];
    cap_key("wallet-1", "alice", &cap, CAP_DAY, SUN_LAST, today);
    cap_key("wallet-1", "alice", &cap, CAP_DAY, MON_FIRST, tomorrow);
    struct ledger *l = ledger_new();
    assert_int_equal(ledger_reserve(l, today, 10000, cap.value), 0);
    assert_int_equal(ledger_reserve(l, today, 1, cap.value), -1);
    assert_int_equal(ledger_reserve(l, tomorrow, 10000, cap.value), 0);
    assert_int_equal(ledger_spent(l, today), 10000);
    ledger_free(l);
}

static void test_release_and_overflow(void **state)
{
    (void)state;
    struct ledger *l = ledger_new();
    assert_int_equal(ledger_reserve(l, "k", 6000, 10000), 0);
    assert_int_equal(ledger_reserve(l, "k", 6000, 10000), -1);
    ledger_release(l, "k", 6000);
    assert_int_equal(ledger_reserve(l, "k", 6000, 10000), 0);
    assert_int_equal(ledger_reserve(l, "k", INT64_MAX, INT64_MAX), -1); /* overflow, not wrap */
    assert_int_equal(ledger_reserve(l, "k", -5, 10000), -1);
    ledger_load(l, "k", 4000);
    assert_int_equal(ledger_spent(l, "k"), 10000);
    ledger_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_periods),
        cmocka_unit_test(test_day_does_not_carry_over),
        cmocka_unit_test(test_release_and_overflow),
    };
    return cmocka_run_group_tests_name("ledger", tests, NULL, NULL);
}
