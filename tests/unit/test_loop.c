/* The event loop's hand-over: tasks run in posting order from any thread; posted tasks run in
 * bounded batches with ready I/O in between; urgent tasks overtake normal ones not yet run;
 * bulk-priority events wait behind every ready default-priority one; stop runs what was
 * posted. */
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "service/loop.h"
#include "test_util.h"

#define N_TASKS 1000

static int ran[N_TASKS], n_ran;
static int in_order = 1;
static int io_ran_at = -1; /* n_ran when the default-priority event ran */
static int bulk_ran_at = -1;
static struct event *io_ev, *bulk_ev;
static pgw_loop *the_loop;
static int urgent_ran_at[2] = {-1, -1};

static void urgent_task(void *arg)
{
    urgent_ran_at[(intptr_t)arg] = n_ran;
}
static int pair[2]; /* a byte written to pair[1] makes io_ev's socket readable */

static void task(void *arg)
{
    int i = (int)(intptr_t)arg;
    if (n_ran > 0 && ran[n_ran - 1] != i - 1)
        in_order = 0;
    if (n_ran < N_TASKS)
        ran[n_ran] = i;
    n_ran++;
    if (i == 0) {
        /* A Redis reply arrives while the tasks run (real I/O, seen only when the loop polls),
         * and bulk work (an upstream transfer) is ready too. */
        event_active(bulk_ev, 0, 0);
        CHECK(write(pair[1], "x", 1) == 1);
    }
    if (i == 100) /* a cache hit's lookup arrives in the middle of the burst */
        CHECK(pgw_loop_post_urgent(the_loop, urgent_task, (void *)1) == 0);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    (void)what, (void)arg;
    char c;
    CHECK(read(fd, &c, 1) == 1);
    io_ran_at = n_ran;
}

static void on_bulk(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    bulk_ran_at = n_ran;
}

static void test_batches_and_priorities(void)
{
    pgw_loop *loop = pgw_loop_new();
    CHECK(loop != NULL);
    struct event_base *base = pgw_loop_base(loop);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
    io_ev = event_new(base, pair[0], EV_READ, on_io, NULL);
    event_add(io_ev, NULL);
    bulk_ev = event_new(base, -1, 0, on_bulk, NULL);
    CHECK(event_priority_set(io_ev, PGW_LOOP_PRIORITY_DEFAULT) == 0);
    CHECK(event_priority_set(bulk_ev, PGW_LOOP_PRIORITY_BULK) == 0);
    /* Everything is posted before the loop runs: one long FIFO, as a burst of misses. */
    the_loop = loop;
    for (int i = 0; i < N_TASKS; i++)
        CHECK(pgw_loop_post(loop, task, (void *)(intptr_t)i) == 0);
    CHECK(pgw_loop_post_urgent(loop, urgent_task, (void *)0) == 0);
    CHECK(pgw_loop_start(loop) == 0);
    for (int i = 0; i < 500 && n_ran < N_TASKS; i++)
        usleep(2000);
    pgw_loop_stop(loop);
    CHECK(n_ran == N_TASKS);
    CHECK(in_order);
    /* The ready I/O ran after the first batch, long before the FIFO was empty ... */
    CHECK(io_ran_at > 0 && io_ran_at < N_TASKS / 2);
    /* ... and the bulk event only once no default-priority work was left. */
    CHECK(bulk_ran_at == N_TASKS);
    /* Urgent tasks overtake the normal ones: the one posted last ran first, the one posted
     * by task 100 right after that task's batch. */
    CHECK(urgent_ran_at[0] == 0);
    CHECK(urgent_ran_at[1] > 100 && urgent_ran_at[1] <= 128);
    event_free(io_ev);
    event_free(bulk_ev);
    close(pair[0]);
    close(pair[1]);
    pgw_loop_free(loop);
}

static atomic_int counted;
static void count_task(void *arg)
{
    (void)arg;
    atomic_fetch_add(&counted, 1);
}

static void *poster(void *arg)
{
    pgw_loop *loop = arg;
    for (int i = 0; i < 10000; i++)
        while (pgw_loop_post(loop, count_task, NULL) != 0)
            ;
    return NULL;
}

static void test_threads_and_stop(void)
{
    pgw_loop *loop = pgw_loop_new();
    CHECK(pgw_loop_start(loop) == 0);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, poster, loop);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    pgw_loop_stop(loop); /* runs everything posted before it */
    CHECK(atomic_load(&counted) == 30000);
    CHECK(pgw_loop_post(loop, count_task, NULL) == -1);
    pgw_loop_free(loop);
}

int main(void)
{
    test_batches_and_priorities();
    test_threads_and_stop();
    return pgw_test_finish("test_loop");
}
