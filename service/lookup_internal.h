/* lookup's construction, for main and tests (frontends only need lookup.h). Its counters are
 * in service/metrics.h. */
#ifndef PGW_LOOKUP_INTERNAL_H
#define PGW_LOOKUP_INTERNAL_H

#include <stdint.h>

#include "cache/ttl.h"
#include "service/lookup.h"

struct event_base;
struct pgw_personalize;
struct pgw_l1;
struct pgw_redis_tier;
struct pgw_fleet;
struct pgw_policy;
struct pgw_rate_limit;
struct pgw_audit;
struct pgw_admission;

typedef struct pgw_lookup_options {
    struct event_base *base;
    struct pgw_personalize *personalize; /* borrowed */
    struct pgw_l1 *l1;                   /* borrowed; NULL = no in-process tier */
    struct pgw_redis_tier *redis;        /* borrowed; NULL = no Redis tier */
    struct pgw_fleet *fleet;             /* borrowed; NULL = coalesce within this process only */
    pgw_ttl_config ttl;
    struct pgw_policy *policy;         /* borrowed; NULL = no policy (every caller allowed) */
    struct pgw_rate_limit *rate_limit; /* borrowed; NULL = no rate limits */
    struct pgw_audit *audit;           /* borrowed; NULL = no audit lines */
    /* borrowed; bounds the upstream fetches in flight and queued (--upstream-max-in-flight,
     * --upstream-max-queued); NULL = unbounded */
    struct pgw_admission *admission;
} pgw_lookup_options;

/* Creates the lookup over borrowed parts (they must outlive it). Loop thread. */
pgw_lookup *pgw_lookup_new(const pgw_lookup_options *options);

/* Frees the lookup. Requests still pending are dropped without callbacks. */
void pgw_lookup_free(pgw_lookup *lookup);

#endif
