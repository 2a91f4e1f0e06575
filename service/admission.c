#include "service/admission.h"

#include <event2/event.h>
#include <stdlib.h>

#include "service/clock.h"

#define DEFAULT_GRANTS_PER_TURN 16
/* The estimates move 1/2^EWMA_SHIFT of the way to each new sample: a few dozen samples follow
 * a change of upstream latency, one slow call does not swing them. */
#define EWMA_SHIFT 3

typedef struct ticket_list {
    pgw_admission_ticket *head, *tail;
    int n;
} ticket_list;

/* A pending ticket: owned by the admission until its callback starts (or it is cancelled). */
struct pgw_admission_ticket {
    pgw_admission *admission;
    ticket_list *list; /* queue (waiting for a slot) or refusing (to be told) */
    pgw_admission_ticket *prev, *next;
    int64_t deadline_ms;
    int waited; /* queued behind taken slots: subject to the deadline check at its turn */
    pgw_admission_outcome outcome; /* of a refused ticket */
    pgw_admission_cb cb;
    void *user_data;
};

struct pgw_admission {
    pgw_admission_options options;
    /* Zero-delay timer for the next turn; pending while there is something to deliver. A
     * timer, not event_active: libevent runs an event re-activated from its own pass again in
     * that pass, before it polls for I/O. */
    struct event *turn;
    ticket_list queue, refusing;
    int in_flight;
    /* Moving averages of the hold times and of their deviation from it, in ms << EWMA_SHIFT
     * (fixed point), as TCP estimates its round trip (RFC 6298). */
    int64_t mean_x8, dev_x8;
    int has_typical;
    pgw_admission_stats stats;
};

static int64_t now_ms(const pgw_admission *a)
{
    return a->options.now_ms ? a->options.now_ms() : pgw_now_mono_ms();
}

/* The service time to plan on: the average plus twice the mean deviation, so a queued fetch
 * starts only if its caller can wait for most upstream calls, not just the average one (an
 * upstream slows down under exactly the load that fills the queue). */
static int64_t planned_service_ms(const pgw_admission *a)
{
    return (a->mean_x8 + 2 * a->dev_x8) >> EWMA_SHIFT;
}

static void list_push(ticket_list *l, pgw_admission_ticket *t)
{
    t->list = l;
    t->next = NULL;
    t->prev = l->tail;
    if (l->tail)
        l->tail->next = t;
    else
        l->head = t;
    l->tail = t;
    l->n++;
}

static void list_unlink(pgw_admission_ticket *t)
{
    ticket_list *l = t->list;
    if (t->prev)
        t->prev->next = t->next;
    else
        l->head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        l->tail = t->prev;
    l->n--;
    t->list = NULL;
}

/* Makes sure a turn comes when there is a refusal to deliver or a grant to make. */
static void schedule_turn(pgw_admission *a)
{
    int work = a->refusing.head || (a->queue.head && a->in_flight < a->options.max_in_flight);
    if (work && !evtimer_pending(a->turn, NULL)) {
        struct timeval zero = {0, 0};
        evtimer_add(a->turn, &zero);
    }
}

/* Unlinks and frees t, then runs its callback with the outcome. */
static void deliver(pgw_admission_ticket *t, pgw_admission_outcome outcome)
{
    list_unlink(t);
    pgw_admission_cb cb = t->cb;
    void *user_data = t->user_data;
    free(t);
    cb(outcome, user_data);
}

/* One turn: refusals are told, then the first tickets in line get their slot (or are dropped
 * when their deadline no longer leaves the planned service time). Bounded, so a long queue is
 * served over many turns. */
static void on_turn(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    pgw_admission *a = arg;
    for (int n = 0; n < a->options.grants_per_turn && a->refusing.head; n++)
        deliver(a->refusing.head, a->refusing.head->outcome);
    for (int n = 0; n < a->options.grants_per_turn; n++) {
        pgw_admission_ticket *t = a->queue.head;
        if (!t || a->in_flight >= a->options.max_in_flight)
            break;
        int64_t now = now_ms(a);
        int late = t->deadline_ms && (now >= t->deadline_ms ||
                                      (t->waited && now + planned_service_ms(a) > t->deadline_ms));
        if (late) {
            a->stats.dropped++;
        } else {
            a->in_flight++;
            a->stats.granted++;
        }
        deliver(t, late ? PGW_ADMISSION_LATE : PGW_ADMISSION_GRANTED);
    }
    schedule_turn(a);
}

pgw_admission *pgw_admission_new(struct event_base *base, const pgw_admission_options *options)
{
    pgw_admission *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->options = *options;
    if (a->options.max_in_flight < 1)
        a->options.max_in_flight = 1;
    if (a->options.max_queued < 0)
        a->options.max_queued = 0;
    if (a->options.grants_per_turn <= 0)
        a->options.grants_per_turn = DEFAULT_GRANTS_PER_TURN;
    a->turn = evtimer_new(base, on_turn, a);
    if (!a->turn) {
        free(a);
        return NULL;
    }
    if (a->options.event_priority > 0)
        event_priority_set(a->turn, a->options.event_priority);
    return a;
}

void pgw_admission_free(pgw_admission *a)
{
    if (!a)
        return;
    ticket_list *lists[] = {&a->queue, &a->refusing};
    for (int i = 0; i < 2; i++) {
        while (lists[i]->head) {
            pgw_admission_ticket *t = lists[i]->head;
            list_unlink(t);
            free(t);
        }
    }
    event_free(a->turn);
    free(a);
}

/* Decides at once whether a new ticket may wait for a slot: PGW_ADMISSION_GRANTED here means
 * "queue it" (a slot is free, or it may wait for one); a refusal is final. */
static pgw_admission_outcome admit(pgw_admission *a, int64_t deadline_ms, int *waits)
{
    int free_slots = a->options.max_in_flight - a->in_flight;
    /* Tickets ahead of this one that will not find a free slot: the ones that wait. */
    int waiting_ahead = a->queue.n - (free_slots > 0 ? free_slots : 0);
    *waits = waiting_ahead >= 0;
    if (!*waits)
        return PGW_ADMISSION_GRANTED;
    if (waiting_ahead >= a->options.max_queued) {
        a->stats.refused_full++;
        return PGW_ADMISSION_FULL;
    }
    if (deadline_ms && a->has_typical) {
        /* In steady state a slot frees every mean/max_in_flight ms. */
        int64_t wait = (a->mean_x8 >> EWMA_SHIFT) * (waiting_ahead + 1) / a->options.max_in_flight;
        if (now_ms(a) + wait + planned_service_ms(a) > deadline_ms) {
            a->stats.refused_late++;
            return PGW_ADMISSION_LATE;
        }
    }
    return PGW_ADMISSION_GRANTED;
}

int pgw_admission_acquire(pgw_admission *a, int64_t deadline_ms, pgw_admission_cb cb,
                          void *user_data, pgw_admission_ticket **ticket)
{
    *ticket = NULL;
    pgw_admission_ticket *t = calloc(1, sizeof(*t));
    if (!t)
        return -1;
    t->admission = a;
    t->deadline_ms = deadline_ms;
    t->cb = cb;
    t->user_data = user_data;
    t->outcome = admit(a, deadline_ms, &t->waited);
    list_push(t->outcome == PGW_ADMISSION_GRANTED ? &a->queue : &a->refusing, t);
    schedule_turn(a);
    *ticket = t;
    return 0;
}

void pgw_admission_cancel(pgw_admission_ticket *t)
{
    if (!t)
        return;
    list_unlink(t);
    free(t);
}

void pgw_admission_release(pgw_admission *a, int64_t held_ms)
{
    if (a->in_flight > 0)
        a->in_flight--;
    if (held_ms >= 0) {
        if (!a->has_typical) {
            a->mean_x8 = held_ms << EWMA_SHIFT;
            a->dev_x8 = (held_ms / 2) << EWMA_SHIFT;
            a->has_typical = 1;
        } else {
            int64_t err = held_ms - (a->mean_x8 >> EWMA_SHIFT);
            a->mean_x8 += err;
            a->dev_x8 += (err < 0 ? -err : err) - (a->dev_x8 >> EWMA_SHIFT);
        }
    }
    schedule_turn(a);
}

void pgw_admission_stats_get(const pgw_admission *a, pgw_admission_stats *out)
{
    *out = a->stats;
    out->in_flight = a->in_flight;
    out->queued = a->queue.n;
    out->refusing = a->refusing.n;
    out->typical_ms = a->has_typical ? a->mean_x8 >> EWMA_SHIFT : 0;
    out->planned_ms = a->has_typical ? planned_service_ms(a) : 0;
}
