#include "service/loop.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdlib.h>

/* Posted tasks run at most this many per wake-up; then I/O that became ready meanwhile (a
 * Redis reply a cache hit waits for) gets its turn before the next batch. */
#define TASKS_PER_BATCH 64
/* libevent looks for new I/O after this many bulk-priority callbacks in a row. */
#define BULK_CALLBACKS_PER_CHECK 8

/* A lane's ring keeps at least this many slots, and gives back memory above it when it drains. */
#define LANE_MIN_CAP 256

/* A posted task. */
typedef struct loop_task {
    pgw_loop_fn fn;
    void *arg;
} loop_task;

/* A FIFO of tasks: a ring buffer that grows by doubling. Rings rather than a linked list of
 * malloc'ed tasks: a task posted by a gRPC thread and freed by the loop's cost an allocation
 * and a free in another thread's malloc arena for every call, and that arena's lock was a
 * measured source of futex waits (bench/README.md). */
typedef struct lane {
    loop_task *slots;
    size_t head, len, cap;
} lane;

enum { URGENT, NORMAL, N_LANES };

struct pgw_loop {
    struct event_base *base;
    struct event *wakeup; /* activated by pgw_loop_post from any thread */
    struct event *again;  /* zero-delay timer: the next batch, after a look at the I/O */
    pthread_t thread;
    int started;

    pthread_mutex_t mu;
    lane posted[N_LANES]; /* under mu */
    int accepting;        /* cleared by pgw_loop_stop */
    int stopping;
};

/* Appends a task. Returns 0, or -1 when the ring cannot grow. */
static int lane_push(lane *l, loop_task task)
{
    if (l->len == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : LANE_MIN_CAP;
        loop_task *n = malloc(ncap * sizeof(*n));
        if (!n)
            return -1;
        for (size_t i = 0; i < l->len; i++)
            n[i] = l->slots[(l->head + i) % l->cap];
        free(l->slots);
        l->slots = n;
        l->head = 0;
        l->cap = ncap;
    }
    l->slots[(l->head + l->len) % l->cap] = task;
    l->len++;
    return 0;
}

/* Moves up to max tasks from the front of l to out; returns how many. An emptied ring that
 * grew during a burst gives its memory back. */
static int lane_take(lane *l, loop_task *out, int max)
{
    int n = 0;
    while (n < max && l->len > 0) {
        out[n++] = l->slots[l->head];
        l->head = (l->head + 1) % l->cap;
        l->len--;
    }
    if (l->len == 0) {
        l->head = 0;
        if (l->cap > LANE_MIN_CAP) {
            free(l->slots);
            l->slots = NULL;
            l->cap = 0;
        }
    }
    return n;
}

static void run_posted(evutil_socket_t fd, short what, void *arg)
{
    pgw_loop *loop = arg;
    loop_task batch[TASKS_PER_BATCH];
    /* One batch, urgent tasks first: they jump ahead of every normal task not yet run. Tasks
     * posted while the batch runs wait for the next one, after a look at the I/O. */
    pthread_mutex_lock(&loop->mu);
    int n = lane_take(&loop->posted[URGENT], batch, TASKS_PER_BATCH);
    n += lane_take(&loop->posted[NORMAL], batch + n, TASKS_PER_BATCH - n);
    pthread_mutex_unlock(&loop->mu);
    for (int i = 0; i < n; i++)
        batch[i].fn(batch[i].arg);
    pthread_mutex_lock(&loop->mu);
    int more = 0;
    for (int i = 0; i < N_LANES; i++)
        more |= loop->posted[i].len > 0;
    int stopping = loop->stopping;
    pthread_mutex_unlock(&loop->mu);
    /* Left-overs (of this batch, or posted while it ran) run on the next turn, after the
     * I/O that is ready now: a timer, because libevent runs an event activated from inside
     * its own pass in that same pass, before it polls for I/O again. */
    if (more) {
        struct timeval zero = {0, 0};
        evtimer_add(loop->again, &zero);
    } else if (stopping) {
        event_base_loopbreak(loop->base);
    }
}

pgw_loop *pgw_loop_new(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, (void (*)(void))evthread_use_pthreads);

    pgw_loop *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return NULL;
    pthread_mutex_init(&loop->mu, NULL);
    struct event_config *cfg = event_config_new();
    if (cfg) {
        event_config_set_max_dispatch_interval(cfg, NULL, BULK_CALLBACKS_PER_CHECK,
                                               PGW_LOOP_PRIORITY_BULK);
        loop->base = event_base_new_with_config(cfg);
        event_config_free(cfg);
    }
    /* Three levels: 0 (unused, for anything that must beat the default later), the default,
     * and bulk. */
    if (loop->base && event_base_priority_init(loop->base, 3) != 0) {
        event_base_free(loop->base);
        loop->base = NULL;
    }
    if (loop->base) {
        loop->wakeup = event_new(loop->base, -1, EV_PERSIST, run_posted, loop);
        loop->again = evtimer_new(loop->base, run_posted, loop);
    }
    if (!loop->base || !loop->wakeup || !loop->again) {
        pgw_loop_free(loop);
        return NULL;
    }
    loop->accepting = 1;
    return loop;
}

struct event_base *pgw_loop_base(pgw_loop *loop)
{
    return loop->base;
}

static int post(pgw_loop *loop, int which, pgw_loop_fn fn, void *arg)
{
    loop_task task = {fn, arg};
    pthread_mutex_lock(&loop->mu);
    int was_empty = loop->posted[URGENT].len == 0 && loop->posted[NORMAL].len == 0;
    if (!loop->accepting || lane_push(&loop->posted[which], task) != 0) {
        pthread_mutex_unlock(&loop->mu);
        return -1;
    }
    pthread_mutex_unlock(&loop->mu);
    /* Waking the loop costs a syscall; when tasks are already posted, a wake-up is already
     * pending and run_posted will take this one too. */
    if (was_empty)
        event_active(loop->wakeup, 0, 0);
    return 0;
}

int pgw_loop_post(pgw_loop *loop, pgw_loop_fn fn, void *arg)
{
    return post(loop, NORMAL, fn, arg);
}

int pgw_loop_post_urgent(pgw_loop *loop, pgw_loop_fn fn, void *arg)
{
    return post(loop, URGENT, fn, arg);
}

static void *loop_main(void *arg)
{
    pgw_loop *loop = arg;
    /* Idle is normal (no transfer in flight): keep running until pgw_loop_stop. */
    event_base_loop(loop->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

int pgw_loop_start(pgw_loop *loop)
{
    if (pthread_create(&loop->thread, NULL, loop_main, loop) != 0)
        return -1;
    loop->started = 1;
    return 0;
}

void pgw_loop_stop(pgw_loop *loop)
{
    pthread_mutex_lock(&loop->mu);
    loop->accepting = 0;
    loop->stopping = 1;
    pthread_mutex_unlock(&loop->mu);
    if (!loop->started)
        return;
    event_active(loop->wakeup, 0, 0);
    pthread_join(loop->thread, NULL);
    loop->started = 0;
}

void pgw_loop_free(pgw_loop *loop)
{
    if (!loop)
        return;
    for (int i = 0; i < N_LANES; i++)
        free(loop->posted[i].slots); /* tasks never run own nothing here */
    if (loop->wakeup)
        event_free(loop->wakeup);
    if (loop->again)
        event_free(loop->again);
    if (loop->base)
        event_base_free(loop->base);
    pthread_mutex_destroy(&loop->mu);
    free(loop);
}
