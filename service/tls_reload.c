#include "service/tls_reload.h"

#include <errno.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "service/clock.h"

/* How long the fetcher waits before handing gRPC a new version. gRPC core 1.51 swaps its
 * handshaker factory under a mutex but creates each handshaker from the factory pointer after
 * releasing it (grpc/grpc#36693): a handshake that left the fetcher just before the swap could
 * use the old factory as the swap frees it. The fetcher runs under that mutex, so waiting here
 * holds back later handshakes while earlier ones take their reference. This happens once per
 * rotation and narrows the window to a thread stalled that long between two statements. */
#define SWAP_SETTLE_MS 20

/* A bad version is reported once it stayed unchanged this long (or one poll interval, if
 * longer): a rotation writing the files one by one is done well within it. */
#define SETTLE_MIN_MS 1000

/* What identifies one version of a file: a Secret update swaps a symlink (new inode), an
 * operator may rewrite in place (new mtime or size). ok == 0: the file could not be stat'ed. */
typedef struct file_stamp {
    int ok;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} file_stamp;

enum { F_CERT, F_KEY, F_CA, N_FILES };

/* One version of the material, checked. PEM texts are NUL-terminated. */
typedef struct material {
    char *pem[N_FILES]; /* pem[F_CA] NULL without a client CA */
    int64_t not_after;
    char fingerprint[65];
} material;

struct pgw_tls_reload {
    char *path[N_FILES];
    const char *flag[N_FILES];

    pthread_mutex_t mu; /* guards in_force, generation, served: read by gRPC's threads */
    material in_force;
    uint64_t generation; /* bumped when new material is in force */
    uint64_t served;     /* the generation last handed to gRPC */

    /* the reloader's thread only */
    file_stamp seen[N_FILES];     /* the version in force, or the last one reported bad */
    file_stamp settling[N_FILES]; /* a bad version seen, not yet reported */
    int64_t settling_since_ms;    /* when it was first seen (monotonic) */
    int64_t settle_ms;            /* how long it may stay bad before it is reported */
    struct event *timer;
    pgw_tls_reload_cb cb;
    void *cb_user_data;
};

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static void material_cleanup(material *m)
{
    for (int i = 0; i < N_FILES; i++) {
        wipe_free(m->pem[i]);
        m->pem[i] = NULL;
    }
}

static void stamp_of(const struct stat *st, file_stamp *s)
{
    s->ok = 1;
    s->dev = st->st_dev;
    s->ino = st->st_ino;
    s->size = st->st_size;
    s->mtime = st->st_mtim;
}

static int same_stamp(const file_stamp *a, const file_stamp *b)
{
    if (!a->ok || !b->ok)
        return a->ok == b->ok;
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static int same_stamps(const file_stamp *a, const file_stamp *b)
{
    for (int i = 0; i < N_FILES; i++)
        if (!same_stamp(&a[i], &b[i]))
            return 0;
    return 1;
}

/* The files' current stamps, by path (following symlinks, as a reader would). */
static void stat_all(const pgw_tls_reload *t, file_stamp *out)
{
    for (int i = 0; i < N_FILES; i++) {
        struct stat st;
        memset(&out[i], 0, sizeof(out[i]));
        if (t->path[i] && stat(t->path[i], &st) == 0)
            stamp_of(&st, &out[i]);
    }
}

/* Reads a PEM file (bounded) into a NUL-terminated malloc'ed string and the stamp of what was
 * read. NULL with err naming the flag. */
static char *read_pem(const char *path, const char *flag, file_stamp *stamp, char *err,
                      size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "%s: cannot open %.200s: %s", flag, path, strerror(errno));
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    size_t n = 0;
    int bad = fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode);
    if (!bad) {
        buf = malloc(PGW_TLS_MAX_PEM_BYTES + 1);
        n = buf ? fread(buf, 1, PGW_TLS_MAX_PEM_BYTES + 1, f) : 0;
        bad = !buf || ferror(f) || n == 0 || n > PGW_TLS_MAX_PEM_BYTES;
    }
    fclose(f);
    if (bad) {
        snprintf(err, err_len,
                 "%s: cannot read %.200s (not a regular file, empty, unreadable or over 1 MiB)",
                 flag, path);
        if (buf)
            OPENSSL_cleanse(buf, n < PGW_TLS_MAX_PEM_BYTES ? n : PGW_TLS_MAX_PEM_BYTES);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    stamp_of(&st, stamp);
    return buf;
}

/* Checks a version with OpenSSL, so a bad file gets an error naming its flag instead of gRPC
 * failing a handshake: the certificate parses, the key parses and belongs to it, and the
 * client CA holds at least one certificate. Fills not_after and the fingerprint. */
static int check_material(material *m, char *err, size_t err_len)
{
    int ok = 0;
    BIO *b = BIO_new_mem_buf(m->pem[F_CERT], -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    b = BIO_new_mem_buf(m->pem[F_KEY], -1);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (!x)
        snprintf(err, err_len, "--tls-cert: no PEM certificate in the file");
    else if (!k)
        snprintf(err, err_len, "--tls-key: no unencrypted PEM private key in the file");
    else if (X509_check_private_key(x, k) != 1)
        snprintf(err, err_len, "--tls-key: does not match the --tls-cert certificate");
    else
        ok = 1;
    if (ok) {
        struct tm tm;
        m->not_after = ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1 ? (int64_t)timegm(&tm) : 0;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int md_len = 0;
        m->fingerprint[0] = '\0';
        if (X509_digest(x, EVP_sha256(), md, &md_len) == 1 && md_len == 32)
            for (unsigned int i = 0; i < md_len; i++)
                snprintf(m->fingerprint + 2 * i, 3, "%02x", md[i]);
    }
    X509_free(x);
    EVP_PKEY_free(k);
    if (ok && m->pem[F_CA]) {
        b = BIO_new_mem_buf(m->pem[F_CA], -1);
        X509 *c = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        if (!c) {
            snprintf(err, err_len, "--tls-client-ca: no PEM certificate in the file");
            ok = 0;
        }
        X509_free(c);
    }
    return ok ? 0 : -1;
}

/* Reads and checks every file into *m (cleaned up on failure) with the stamps of what was
 * read. */
static int load_material(const pgw_tls_reload *t, material *m, file_stamp *stamps, char *err,
                         size_t err_len)
{
    memset(m, 0, sizeof(*m));
    memset(stamps, 0, sizeof(file_stamp) * N_FILES);
    for (int i = 0; i < N_FILES; i++) {
        if (!t->path[i])
            continue;
        m->pem[i] = read_pem(t->path[i], t->flag[i], &stamps[i], err, err_len);
        if (!m->pem[i]) {
            material_cleanup(m);
            return -1;
        }
    }
    if (check_material(m, err, err_len) != 0) {
        material_cleanup(m);
        return -1;
    }
    return 0;
}

static int same_material(const material *a, const material *b)
{
    for (int i = 0; i < N_FILES; i++) {
        if (!a->pem[i] != !b->pem[i])
            return 0;
        if (a->pem[i] && strcmp(a->pem[i], b->pem[i]) != 0)
            return 0;
    }
    return 1;
}

pgw_tls_reload *pgw_tls_reload_new(const pgw_tls_reload_options *o, char *err, size_t err_len)
{
    if (!o->cert_file || !o->key_file) {
        snprintf(err, err_len, "--tls-cert: needs --tls-key too");
        return NULL;
    }
    pgw_tls_reload *t = calloc(1, sizeof(*t));
    if (!t) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    t->flag[F_CERT] = "--tls-cert";
    t->flag[F_KEY] = "--tls-key";
    t->flag[F_CA] = "--tls-client-ca";
    const char *paths[N_FILES] = {o->cert_file, o->key_file, o->client_ca_file};
    for (int i = 0; i < N_FILES; i++) {
        if (paths[i] && !(t->path[i] = strdup(paths[i]))) {
            snprintf(err, err_len, "out of memory");
            pgw_tls_reload_free(t);
            return NULL;
        }
    }
    if (load_material(t, &t->in_force, t->seen, err, err_len) != 0) {
        pgw_tls_reload_free(t);
        return NULL;
    }
    memcpy(t->settling, t->seen, sizeof(t->seen));
    t->generation = 1;
    return t;
}

int pgw_tls_reload_check(pgw_tls_reload *t, int only_if_changed, char *err, size_t err_len)
{
    file_stamp now[N_FILES];
    stat_all(t, now);
    if (only_if_changed && same_stamps(now, t->seen))
        return 0;
    material m;
    file_stamp read[N_FILES];
    if (load_material(t, &m, read, err, err_len) != 0) {
        /* A rotation that rewrites the files one by one is caught half done now and then (a
         * new certificate beside the old key): report only a version that stayed bad, and
         * unchanged, for the settle time. A version reported is remembered, so it is reported
         * once, not at every poll. */
        int64_t now_ms = pgw_now_mono_ms();
        if (only_if_changed && !same_stamps(now, t->settling)) {
            memcpy(t->settling, now, sizeof(now));
            t->settling_since_ms = now_ms;
            return 0;
        }
        if (only_if_changed && now_ms - t->settling_since_ms < t->settle_ms)
            return 0;
        memcpy(t->seen, now, sizeof(now));
        memcpy(t->settling, now, sizeof(now));
        return -1;
    }
    memcpy(t->seen, read, sizeof(read));
    memcpy(t->settling, read, sizeof(read));
    pthread_mutex_lock(&t->mu);
    int same = same_material(&m, &t->in_force);
    if (!same) {
        material old = t->in_force;
        t->in_force = m;
        t->generation++;
        m = old; /* cleaned up below, outside the lock */
    }
    pthread_mutex_unlock(&t->mu);
    material_cleanup(&m);
    return same ? 0 : 1;
}

/* gRPC's certificate-config fetcher: at every new handshake, on a gRPC thread, under the
 * security connector's mutex. Hands over the material in force when it is newer than what
 * gRPC has; gRPC copies it into the config, which it then owns and destroys. */
static grpc_ssl_certificate_config_reload_status
fetch_config(void *user_data, grpc_ssl_server_certificate_config **config)
{
    pgw_tls_reload *t = user_data;
    pthread_mutex_lock(&t->mu);
    if (t->served == t->generation) {
        pthread_mutex_unlock(&t->mu);
        return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    }
    grpc_ssl_pem_key_cert_pair pair = {.private_key = t->in_force.pem[F_KEY],
                                       .cert_chain = t->in_force.pem[F_CERT]};
    /* gRPC asserts that a fetched config has root certificates, even where no client
     * certificate is ever requested: without a client CA, the server's own chain stands in
     * (never used to verify anything: clients are not asked for certificates then). */
    const char *roots = t->in_force.pem[F_CA] ? t->in_force.pem[F_CA] : t->in_force.pem[F_CERT];
    *config = grpc_ssl_server_certificate_config_create(roots, &pair, 1);
    int first = t->served == 0;
    if (*config)
        t->served = t->generation;
    pthread_mutex_unlock(&t->mu);
    if (!*config)
        return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
    if (!first) {
        struct timespec settle = {0, SWAP_SETTLE_MS * 1000000L};
        nanosleep(&settle, NULL);
    }
    return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
}

grpc_server_credentials *pgw_tls_reload_server_credentials(pgw_tls_reload *t)
{
    /* Under mutual TLS client certificates are requested and, when presented, must verify
     * against the client CA (else the handshake fails); a client that presents none is let
     * through the handshake and refused per call with UNAUTHENTICATED, a status its developer
     * can act on, instead of an opaque handshake error. */
    grpc_ssl_server_credentials_options *opts =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(
            t->path[F_CA] ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                          : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            fetch_config, t);
    return opts ? grpc_ssl_server_credentials_create_with_options(opts) : NULL;
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    pgw_tls_reload *t = arg;
    char err[512];
    int rc = pgw_tls_reload_check(t, 1, err, sizeof(err));
    if (rc != 0 && t->cb)
        t->cb(rc, rc < 0 ? err : NULL, t->cb_user_data);
}

int pgw_tls_reload_watch(pgw_tls_reload *t, struct event_base *base, int interval_ms,
                         pgw_tls_reload_cb cb, void *user_data)
{
    if (t->timer || interval_ms <= 0)
        return -1;
    t->timer = event_new(base, -1, EV_PERSIST, on_poll, t);
    if (!t->timer)
        return -1;
    t->cb = cb;
    t->cb_user_data = user_data;
    t->settle_ms = interval_ms > SETTLE_MIN_MS ? interval_ms : SETTLE_MIN_MS;
    struct timeval tv = {interval_ms / 1000, (interval_ms % 1000) * 1000};
    if (event_add(t->timer, &tv) != 0) {
        event_free(t->timer);
        t->timer = NULL;
        return -1;
    }
    return 0;
}

void pgw_tls_reload_unwatch(pgw_tls_reload *t)
{
    if (t && t->timer) {
        event_free(t->timer);
        t->timer = NULL;
    }
}

int64_t pgw_tls_reload_not_after(pgw_tls_reload *t)
{
    pthread_mutex_lock(&t->mu);
    int64_t v = t->in_force.not_after;
    pthread_mutex_unlock(&t->mu);
    return v;
}

void pgw_tls_reload_fingerprint(pgw_tls_reload *t, char *fingerprint)
{
    pthread_mutex_lock(&t->mu);
    memcpy(fingerprint, t->in_force.fingerprint, sizeof(t->in_force.fingerprint));
    pthread_mutex_unlock(&t->mu);
}

uint64_t pgw_tls_reload_served_generation(pgw_tls_reload *t)
{
    pthread_mutex_lock(&t->mu);
    uint64_t v = t->served;
    pthread_mutex_unlock(&t->mu);
    return v;
}

void pgw_tls_reload_free(pgw_tls_reload *t)
{
    if (!t)
        return;
    pgw_tls_reload_unwatch(t);
    material_cleanup(&t->in_force);
    for (int i = 0; i < N_FILES; i++)
        free(t->path[i]);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
