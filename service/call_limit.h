/* call_limit: the gateway's own bound on calls in flight (--max-concurrent-calls), shared by
 * the gRPC and HTTP frontends. Every call that has to wait on the event loop (anything but a
 * fresh in-process cache hit, which is answered at once on the thread that received it and
 * never counts) takes a place before it is handed to lookup, and gives it back when it is
 * answered or abandoned; past the bound the call is refused at once with RESOURCE_EXHAUSTED.
 * With the upstream bound (service/admission.h) this keeps the memory of waiting calls
 * bounded whatever the load: each holds a gRPC call, a lookup request and a flight waiter.
 *
 * Any thread: one atomic counter. */
#ifndef PGW_CALL_LIMIT_H
#define PGW_CALL_LIMIT_H

typedef struct pgw_call_limit pgw_call_limit;

/* Creates a bound of max calls (at least 1). NULL on allocation failure. */
pgw_call_limit *pgw_call_limit_new(int max);

void pgw_call_limit_free(pgw_call_limit *limit);

/* Takes a place. Returns 1 if taken (give it back with pgw_call_limit_leave), 0 if the bound
 * is reached. A NULL limit always admits. */
int pgw_call_limit_enter(pgw_call_limit *limit);

/* Gives back a place taken by pgw_call_limit_enter. NULL is a no-op. */
void pgw_call_limit_leave(pgw_call_limit *limit);

/* The bound, for messages (0 for NULL). */
int pgw_call_limit_max(const pgw_call_limit *limit);

/* Places taken now (0 for NULL). */
int pgw_call_limit_current(const pgw_call_limit *limit);

#endif
