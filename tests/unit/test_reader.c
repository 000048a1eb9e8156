/*
 * Unit tests for gateway/reader: reads into a bufferevent's input without FIONREAD, and a read
 * timeout that, once cleared, is neither reported nor armed again, also when it fired in the
 * loop pass that clears it.
 */
#include "testkit.h"

#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "gateway/reader.h"

struct rig {
    struct event_base *base;
    struct bufferevent *bev;
    struct reader rd;
    int peer;           /* the other end of the reader's socket */
    int other[2];       /* another connection whose callback runs first in a pass */
    int timeouts;       /* BEV_EVENT_TIMEOUT reported */
    int reads;          /* read callbacks */
    size_t got;         /* bytes read */
    bool rearmed;       /* a timeout was pending on the event after a read */
    bool sentinel;      /* the pass that cleared the timeout is over */
    struct event *last; /* runs after everything else queued in a pass (lowest priority) */
};

static void on_data(struct bufferevent *bev, void *arg)
{
    struct rig *g = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    g->reads++;
    g->got += evbuffer_get_length(in);
    evbuffer_drain(in, evbuffer_get_length(in));
    g->rearmed = event_pending(g->rd.ev, EV_TIMEOUT, NULL) != 0;
    event_base_loopbreak(g->base);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct rig *g = arg;
    assert_true(what & BEV_EVENT_READING);
    if (what & BEV_EVENT_TIMEOUT)
        g->timeouts++;
}

/* The other connection's data, in the same pass as the reader's due timeout: it clears it. */
static void on_other(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct rig *g = arg;
    char b[8];
    assert_true(read(fd, b, sizeof(b)) > 0);
    reader_set_timeouts(&g->rd, NULL, NULL);
    event_active(g->last, EV_TIMEOUT, 0);
}

static void on_last(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rig *g = arg;
    g->sentinel = true;
    event_base_loopbreak(g->base);
}

static void rig_open(struct rig *g)
{
    int sp[2];
    memset(g, 0, sizeof(*g));
    g->base = event_base_new();
    assert_int_equal(event_base_priority_init(g->base, 3), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, g->other), 0);
    evutil_make_socket_nonblocking(sp[0]);
    evutil_make_socket_nonblocking(g->other[0]);
    g->peer = sp[1];
    g->bev = bufferevent_socket_new(g->base, sp[0], BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(g->bev, on_data, NULL, on_event, g);
    reader_init(&g->rd, g->bev);
    reader_attach(&g->rd);
    g->last = event_new(g->base, -1, 0, on_last, g);
    event_priority_set(g->last, 2);
}

static void rig_close(struct rig *g)
{
    reader_detach(&g->rd);
    bufferevent_free(g->bev);
    event_free(g->last);
    event_base_free(g->base);
    close(g->peer);
    close(g->other[0]);
    close(g->other[1]);
}

static void test_reads_into_the_input(void **state)
{
    (void)state;
    struct rig g;
    rig_open(&g);
    reader_enable(&g.rd);
    assert_int_equal(write(g.peer, "hello", 5), 5);
    event_base_dispatch(g.base);
    assert_int_equal(g.reads, 1);
    assert_int_equal(g.got, 5);
    rig_close(&g);
}

/* The timeout comes due while another callback of the same pass runs and clears it (a client's
 * body deadline as the merchant's answer completes): the queued timeout is not reported, and
 * the next read does not arm it again. */
static void test_cleared_timeout_due_in_the_same_pass(void **state)
{
    (void)state;
    struct rig g;
    rig_open(&g);
    struct timeval rt = {0, 20 * 1000};
    reader_set_timeouts(&g.rd, &rt, NULL);
    reader_enable(&g.rd);
    struct event *other = event_new(g.base, g.other[0], EV_READ, on_other, &g);
    event_add(other, NULL);
    assert_int_equal(write(g.other[1], "x", 1), 1);
    /* The other connection's byte is there; by the time the loop polls, the timeout is due
     * too (its deadline is reckoned from the loop's cached time at reader_enable). */
    struct timespec slept = {0, 40 * 1000 * 1000};
    nanosleep(&slept, NULL);
    event_base_dispatch(g.base);
    assert_true(g.sentinel);
    assert_int_equal(g.timeouts, 0);
    assert_int_equal(write(g.peer, "more", 4), 4);
    event_base_dispatch(g.base);
    assert_int_equal(g.reads, 1);
    assert_false(g.rearmed);
    assert_int_equal(g.timeouts, 0);
    event_free(other);
    rig_close(&g);
}

/* Cleared from the read callback itself (the usual way): no timeout left either. */
static void test_cleared_timeout_while_reading(void **state)
{
    (void)state;
    struct rig g;
    rig_open(&g);
    struct timeval rt = {5, 0};
    reader_set_timeouts(&g.rd, &rt, NULL);
    reader_enable(&g.rd);
    assert_int_equal(write(g.peer, "a", 1), 1);
    event_base_dispatch(g.base);
    assert_true(g.rearmed); /* the timeout runs between reads */
    reader_set_timeouts(&g.rd, NULL, NULL);
    assert_false(event_pending(g.rd.ev, EV_TIMEOUT, NULL));
    assert_true(event_pending(g.rd.ev, EV_READ, NULL));
    assert_int_equal(write(g.peer, "b", 1), 1);
    event_base_dispatch(g.base);
    assert_int_equal(g.reads, 2);
    assert_false(g.rearmed);
    rig_close(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_into_the_input),
        cmocka_unit_test(test_cleared_timeout_due_in_the_same_pass),
        cmocka_unit_test(test_cleared_timeout_while_reading),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
