#include "service/call_limit.h"

#include <stdatomic.h>
#include <stdlib.h>

struct pgw_call_limit {
    int max;
    atomic_int current;
};

pgw_call_limit *pgw_call_limit_new(int max)
{
    pgw_call_limit *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->max = max > 0 ? max : 1;
    atomic_init(&l->current, 0);
    return l;
}

void pgw_call_limit_free(pgw_call_limit *l)
{
    free(l);
}

int pgw_call_limit_enter(pgw_call_limit *l)
{
    if (!l)
        return 1;
    /* Optimistic: take the place, give it back if that went past the bound. A refused call
     * may briefly make another see the bound reached one call early; never one call late. */
    if (atomic_fetch_add_explicit(&l->current, 1, memory_order_relaxed) >= l->max) {
        atomic_fetch_sub_explicit(&l->current, 1, memory_order_relaxed);
        return 0;
    }
    return 1;
}

void pgw_call_limit_leave(pgw_call_limit *l)
{
    if (l)
        atomic_fetch_sub_explicit(&l->current, 1, memory_order_relaxed);
}

int pgw_call_limit_max(const pgw_call_limit *l)
{
    return l ? l->max : 0;
}

int pgw_call_limit_current(const pgw_call_limit *l)
{
    return l ? atomic_load_explicit(&l->current, memory_order_relaxed) : 0;
}
