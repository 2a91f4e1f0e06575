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

/* A posted task. Tasks form two FIFOs (lanes) under the loop's mutex. */
typedef struct loop_task {
    pgw_loop_fn fn;
    void *arg;
    struct loop_task *next;
} loop_task;

typedef struct lane {
    loop_task *head, *tail;
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
    lane taken[N_LANES];  /* loop thread only: taken from posted, not yet run */
    int accepting;        /* cleared by pgw_loop_stop */
    int stopping;
};

static void lane_append(lane *to, lane *from)
{
    if (!from->head)
        return;
    if (to->tail)
        to->tail->next = from->head;
    else
        to->head = from->head;
    to->tail = from->tail;
    from->head = from->tail = NULL;
}

static loop_task *lane_pop(lane *l)
{
    loop_task *t = l->head;
    if (t) {
        l->head = t->next;
        if (!l->head)
            l->tail = NULL;
    }
    return t;
}

static void run_posted(evutil_socket_t fd, short what, void *arg)
{
    pgw_loop *loop = arg;
    pthread_mutex_lock(&loop->mu);
    /* Urgent tasks posted since the last batch jump ahead of the normal ones already taken;
     * normal ones are taken once the previous ones ran. */
    lane_append(&loop->taken[URGENT], &loop->posted[URGENT]);
    if (!loop->taken[NORMAL].head)
        lane_append(&loop->taken[NORMAL], &loop->posted[NORMAL]);
    pthread_mutex_unlock(&loop->mu);
    for (int n = 0; n < TASKS_PER_BATCH; n++) {
        loop_task *task = lane_pop(&loop->taken[URGENT]);
        if (!task)
            task = lane_pop(&loop->taken[NORMAL]);
        if (!task)
            break;
        task->fn(task->arg);
        free(task);
    }
    pthread_mutex_lock(&loop->mu);
    int more = 0;
    for (int i = 0; i < N_LANES; i++)
        more |= loop->taken[i].head != NULL || loop->posted[i].head != NULL;
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
    loop_task *task = malloc(sizeof(*task));
    if (!task)
        return -1;
    task->fn = fn;
    task->arg = arg;
    task->next = NULL;

    pthread_mutex_lock(&loop->mu);
    if (!loop->accepting) {
        pthread_mutex_unlock(&loop->mu);
        free(task);
        return -1;
    }
    int was_empty = !loop->posted[URGENT].head && !loop->posted[NORMAL].head;
    lane one = {task, task};
    lane_append(&loop->posted[which], &one);
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
    for (int i = 0; i < N_LANES; i++) {
        loop_task *task;
        while ((task = lane_pop(&loop->taken[i])) || (task = lane_pop(&loop->posted[i])))
            free(task);
    }
    if (loop->wakeup)
        event_free(loop->wakeup);
    if (loop->again)
        event_free(loop->again);
    if (loop->base)
        event_base_free(loop->base);
    pthread_mutex_destroy(&loop->mu);
    free(loop);
}
