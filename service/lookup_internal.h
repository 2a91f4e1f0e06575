/* lookup's construction, for main and tests (frontends only need lookup.h). */
#ifndef PGW_LOOKUP_INTERNAL_H
#define PGW_LOOKUP_INTERNAL_H

#include "service/lookup.h"

struct event_base;
struct pgw_personalize;

typedef struct pgw_lookup_options {
    struct event_base *base;
    struct pgw_personalize *personalize;
} pgw_lookup_options;

/* Creates the lookup over borrowed parts (they must outlive it). Loop thread. */
pgw_lookup *pgw_lookup_new(const pgw_lookup_options *options);
void pgw_lookup_free(pgw_lookup *lookup);

#endif
