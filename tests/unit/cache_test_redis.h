/* Test helper: runs a throwaway redis-server on a free loopback port, for the cache tests.
 * Each server is this test's own child, killed by PID at the end (and by the kernel if the
 * test dies first: PR_SET_PDEATHSIG). */
#ifndef PGW_CACHE_TEST_REDIS_H
#define PGW_CACHE_TEST_REDIS_H

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <stdint.h>
#include <event2/event.h>

/* A port the kernel just handed out on 127.0.0.1 (bind to 0), or -1. */
static inline int pgw_tr_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* CLOCK_MONOTONIC milliseconds. */
static inline int64_t pgw_tr_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Steps the loop in 5 ms slices until *flag is nonzero or ms pass. Returns *flag. */
static inline int pgw_tr_run_until(struct event_base *base, const int *flag, int ms)
{
    int64_t end = pgw_tr_now_ms() + ms;
    while (!*flag && pgw_tr_now_ms() < end) {
        struct timeval tv = {0, 5000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    return *flag;
}

/* Runs the loop for ms. */
static inline void pgw_tr_run_for(struct event_base *base, int ms)
{
    int never = 0;
    pgw_tr_run_until(base, &never, ms);
}

static inline void pgw_tr_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Starts redis-server on 127.0.0.1:port (with --requirepass when password is not NULL) and
 * waits until it accepts connections. Returns its PID, 0 when redis-server is not installed,
 * or -1 when it did not come up. */
static inline pid_t pgw_tr_start(int port, const char *password)
{
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        if (password)
            execlp("redis-server", "redis-server", "--port", port_s, "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", "/tmp", "--requirepass", password,
                   (char *)NULL);
        else
            execlp("redis-server", "redis-server", "--port", port_s, "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", "/tmp", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 250; i++) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) && WEXITSTATUS(status) == 127 ? 0 : -1;
        struct timeval tv = {0, 100000};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        int up = c && !c->err;
        if (c)
            redisFree(c);
        if (up)
            return pid;
        pgw_tr_sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* Starts redis-server with a plain port (for the test's own checks) and a TLS port using
 * dir/<cert>.pem, dir/<cert>.key and dir/ca.pem as the CA for client certificates; with
 * auth_clients, clients must present one. Returns like pgw_tr_start (0: not installed). */
static inline pid_t pgw_tr_start_tls(int port, int tls_port, const char *dir, const char *cert,
                                     int auth_clients)
{
    char port_s[16], tls_s[16], cert_s[512], key_s[512], ca_s[512];
    snprintf(port_s, sizeof port_s, "%d", port);
    snprintf(tls_s, sizeof tls_s, "%d", tls_port);
    snprintf(cert_s, sizeof cert_s, "%s/%s.pem", dir, cert);
    snprintf(key_s, sizeof key_s, "%s/%s.key", dir, cert);
    snprintf(ca_s, sizeof ca_s, "%s/ca.pem", dir);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execlp("redis-server", "redis-server", "--port", port_s, "--tls-port", tls_s, "--bind",
               "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", "/tmp", "--tls-cert-file",
               cert_s, "--tls-key-file", key_s, "--tls-ca-cert-file", ca_s, "--tls-auth-clients",
               auth_clients ? "yes" : "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 250; i++) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) && WEXITSTATUS(status) == 127 ? 0 : -1;
        struct timeval tv = {0, 100000};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        int up = c && !c->err;
        if (c)
            redisFree(c);
        if (up)
            return pid;
        pgw_tr_sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* Sends sig to our server and, for terminating signals, reaps it. */
static inline void pgw_tr_signal(pid_t pid, int sig)
{
    if (pid <= 0)
        return;
    kill(pid, sig);
    if (sig == SIGKILL || sig == SIGTERM)
        waitpid(pid, NULL, 0);
}

/* A blocking client for checking what the tier wrote (fine in a test). NULL on failure. */
static inline redisContext *pgw_tr_connect(int port, const char *password, int db)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (password) {
        redisReply *r = redisCommand(c, "AUTH %s", password);
        if (r)
            freeReplyObject(r);
    }
    if (db) {
        redisReply *r = redisCommand(c, "SELECT %d", db);
        if (r)
            freeReplyObject(r);
    }
    return c;
}

#endif
