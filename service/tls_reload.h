/* tls_reload: the gRPC port's TLS material (certificate chain, private key, client CA bundle),
 * re-read when its files change, without a restart.
 *
 * cert-manager and kubelet rotate a mounted Secret in place (an atomic symlink swap); an
 * operator may also rewrite the files. The files are polled on the event loop (like the
 * policy file) and on SIGHUP; a new version is checked with OpenSSL (the certificate parses,
 * the key parses and belongs to it, the CA bundle holds a certificate) before it replaces the
 * material in force. A bad version keeps the old material: it is reported once (through the
 * watch callback), not at every poll, and a version caught half-written is given a settle
 * time (1 s, or one poll interval if longer) to be completed before it counts as bad.
 *
 * gRPC core asks for the material through a certificate-config fetcher
 * (grpc_ssl_server_credentials_create_options_using_config_fetcher) at each new handshake, on
 * its own threads: the fetcher only hands over what the loop thread already loaded, under a
 * mutex, and never touches the files. Connections made before a change keep the material they
 * were made with; every handshake after it sees the new one.
 *
 * Threads: _new, _check, _watch, _unwatch on one thread (the loop's, once watched); the
 * credentials' fetcher on any gRPC thread. */
#ifndef PGW_TLS_RELOAD_H
#define PGW_TLS_RELOAD_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc_security.h>

struct event_base;
typedef struct pgw_tls_reload pgw_tls_reload;

typedef struct pgw_tls_reload_options {
    const char *cert_file;      /* PEM certificate chain (--tls-cert); required */
    const char *key_file;       /* its unencrypted PEM private key (--tls-key); required */
    const char *client_ca_file; /* PEM CA bundle (--tls-client-ca), or NULL: no mutual TLS */
} pgw_tls_reload_options;

/* Largest PEM file accepted. */
#define PGW_TLS_MAX_PEM_BYTES (1 << 20)

/* Reads and checks the three files. Returns the reloader (free with pgw_tls_reload_free) or
 * NULL with a one-line reason in err that names the flag (--tls-cert, --tls-key,
 * --tls-client-ca) and never quotes the files' content. The paths are copied. */
pgw_tls_reload *pgw_tls_reload_new(const pgw_tls_reload_options *options, char *err,
                                   size_t err_len);

/* gRPC server credentials whose handshakes use the material in force: client certificates
 * requested and, when presented, verified against the client CA if one is configured. The
 * caller owns the returned reference (grpc_server_credentials_release); the reloader must
 * outlive every server using it (free it after grpc_server_destroy). NULL if gRPC refuses. */
grpc_server_credentials *pgw_tls_reload_server_credentials(pgw_tls_reload *t);

/* Re-reads the files; with only_if_changed, only when one of them changed (inode, size,
 * modification time) since the version in force or the last one reported bad. Returns 1 when
 * new material is in force (for the next handshakes), 0 when nothing changed (or a bad version
 * is still within its settle time, when watched), -1 with the reason in err when the new
 * version is bad: the old material stays in force. */
int pgw_tls_reload_check(pgw_tls_reload *t, int only_if_changed, char *err, size_t err_len);

/* Called after each reload attempt that changed something or failed: rc as
 * pgw_tls_reload_check (1 or -1), err the reason when rc is -1. */
typedef void (*pgw_tls_reload_cb)(int rc, const char *err, void *user_data);

/* Polls the files every interval_ms on `base` (whose thread becomes the reloader's) and calls
 * cb after each reload attempt. Returns 0 or -1. */
int pgw_tls_reload_watch(pgw_tls_reload *t, struct event_base *base, int interval_ms,
                         pgw_tls_reload_cb cb, void *user_data);

/* Stops polling (frees the timer: call on the loop thread, before its base is freed). */
void pgw_tls_reload_unwatch(pgw_tls_reload *t);

/* The certificate in force: its notAfter (Unix seconds) and the SHA-256 fingerprint of its
 * DER encoding as 64 lowercase hex digits (fingerprint must hold 65 bytes). For logs and
 * metrics; any thread. */
int64_t pgw_tls_reload_not_after(pgw_tls_reload *t);
void pgw_tls_reload_fingerprint(pgw_tls_reload *t, char *fingerprint);

/* Versions handed to gRPC so far (1 after the first handshake setup); for tests. */
uint64_t pgw_tls_reload_served_generation(pgw_tls_reload *t);

/* Frees the reloader, wiping the key (NULL is fine). Unwatch first. */
void pgw_tls_reload_free(pgw_tls_reload *t);

#endif
