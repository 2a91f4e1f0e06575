/* identity: who is calling. With mutual TLS the identity is taken from the client certificate
 * that gRPC core verified against the configured client CA: its SPIFFE ID / URI SAN, else its
 * first DNS SAN, else its subject CN. In plain-text mode (behind a sidecar that terminates mTLS)
 * it may come from one trusted request header instead, which is only safe when the sidecar
 * always sets (overwrites) that header.
 *
 * An identity is printable ASCII without spaces, 1..PGW_IDENTITY_MAX_LEN bytes. Anything else
 * is rejected, never truncated: a truncated identity could alias another caller's. */
#ifndef PGW_IDENTITY_H
#define PGW_IDENTITY_H

#include <stddef.h>

#include <grpc/grpc.h>

#define PGW_IDENTITY_MAX_LEN 256

/* The names a verified certificate offers, each NULL when absent (borrowed). */
typedef struct pgw_identity_candidates {
    const char *spiffe_id; /* gRPC's peer_spiffe_id: the one spiffe:// URI SAN */
    const char *uri;       /* the first URI SAN */
    const char *dns;       /* the first DNS SAN */
    const char *cn;        /* the subject common name */
} pgw_identity_candidates;

/* Nonzero when the `len` bytes at s form an acceptable identity (see above). */
int pgw_identity_valid(const char *s, size_t len);

/* Picks the identity from the candidates in order SPIFFE ID, URI SAN, DNS SAN, CN, skipping
 * invalid ones, and copies it NUL-terminated into out. Returns 0, or -1 when none is usable
 * (out is then ""). out_len should be at least PGW_IDENTITY_MAX_LEN + 1. */
int pgw_identity_choose(const pgw_identity_candidates *candidates, char *out, size_t out_len);

/* The identity of a call's TLS peer, from the call's auth context; only a peer gRPC core
 * authenticated (its certificate chain verified) counts. Returns 0 with the identity in out,
 * or -1 (plain-text call, no client certificate, or no usable name). Any thread. */
int pgw_identity_from_call(grpc_call *call, char *out, size_t out_len);

/* The identity carried in request header `header` (lowercase name). Exactly one occurrence
 * with a valid value counts: a repeated header is refused, because a client could add its own
 * copy next to the sidecar's. Returns 0 with the identity in out, or -1. */
int pgw_identity_from_metadata(const grpc_metadata_array *md, const char *header, char *out,
                               size_t out_len);

#endif
