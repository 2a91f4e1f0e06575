#include "service/aws/http_client.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

struct pgw_http_client {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    pgw_http_client_options options;
    char *ca_file;
    pgw_http_transfer *transfers; /* every transfer in flight, for pgw_http_client_free */
};

struct pgw_http_transfer {
    pgw_http_client *client;
    pgw_http_transfer *prev, *next;
    CURL *easy;
    struct curl_slist *headers;
    char *body; /* request body copy */
    size_t body_len;
    char *response;
    size_t response_len, response_cap;
    int too_big;
    int sends, max_sends; /* times the request left; the bound (0: none) */
    int send_refused;     /* curl wanted to re-send past max_sends: refused */
    pgw_http_cb cb;
    void *user_data;
    char error[CURL_ERROR_SIZE];
};

/* Per-socket state handed to curl with curl_multi_assign. */
typedef struct socket_watch {
    pgw_http_client *client;
    struct event *ev;
} socket_watch;

/* Request headers and bodies may carry secrets (a signature, a session token, a web identity
 * or container authorization token): wipe them before the memory goes back to the heap. */
static void free_wiped(struct curl_slist *headers, char *body, size_t body_len)
{
    for (struct curl_slist *h = headers; h; h = h->next)
        OPENSSL_cleanse(h->data, strlen(h->data));
    curl_slist_free_all(headers);
    if (body)
        OPENSSL_cleanse(body, body_len);
    free(body);
}

static void transfer_free(pgw_http_transfer *t)
{
    curl_multi_remove_handle(t->client->multi, t->easy);
    curl_easy_cleanup(t->easy);
    free_wiped(t->headers, t->body, t->body_len);
    if (t->response)
        OPENSSL_cleanse(t->response, t->response_len); /* may hold issued credentials */
    free(t->response);
    if (t->prev)
        t->prev->next = t->next;
    else
        t->client->transfers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    free(t);
}

/* Hands finished transfers to their callbacks. */
static void drain_finished(pgw_http_client *client)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(client->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        pgw_http_transfer *t = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        CURLcode rc = msg->data.result;
        pgw_http_response r = {0};
        r.transfer = t;
        r.sends = t->sends < t->max_sends || !t->max_sends ? t->sends : t->max_sends;
        long connects = 0, version = 0;
        curl_easy_getinfo(t->easy, CURLINFO_NUM_CONNECTS, &connects);
        curl_easy_getinfo(t->easy, CURLINFO_HTTP_VERSION, &version);
        r.new_connections = (int)connects;
        r.http_version = version == CURL_HTTP_VERSION_2_0   ? 2
                         : version == CURL_HTTP_VERSION_1_0 ? 1
                         : version == CURL_HTTP_VERSION_1_1 ? 1
                                                            : 0;
        if (rc == CURLE_OK) {
            curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &r.status);
            r.body = t->response ? t->response : "";
            r.body_len = t->response_len;
        } else {
            r.transport_error = 1;
            r.timed_out = rc == CURLE_OPERATION_TIMEDOUT;
            r.error = t->too_big ? "response body too large"
                      : t->send_refused
                          ? "the connection closed without an answer (not re-sent: the "
                            "request already left as often as allowed)"
                          : (t->error[0] ? t->error : curl_easy_strerror(rc));
            r.body = "";
        }
        t->cb(&r, t->user_data);
        transfer_free(t);
    }
}

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    pgw_http_client *client = arg;
    int action =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(client->multi, fd, action, &running);
    drain_finished(client);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    pgw_http_client *client = arg;
    int running;
    curl_multi_socket_action(client->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    drain_finished(client);
}

/* CURLMOPT_SOCKETFUNCTION: curl tells which sockets to watch for what. */
static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    pgw_http_client *client = userp;
    socket_watch *w = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (w) {
            event_free(w->ev);
            free(w);
            curl_multi_assign(client->multi, s, NULL);
        }
        return 0;
    }
    short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
                 ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    if (!w) {
        w = calloc(1, sizeof(*w));
        if (!w)
            return -1;
        w->client = client;
        curl_multi_assign(client->multi, s, w);
    } else {
        event_free(w->ev);
    }
    w->ev = event_new(client->base, s, kind, on_socket_event, client);
    if (!w->ev)
        return -1;
    if (client->options.event_priority > 0)
        event_priority_set(w->ev, client->options.event_priority);
    event_add(w->ev, NULL);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: one libevent timer stands for curl's single timeout. */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    pgw_http_client *client = userp;
    if (timeout_ms < 0) {
        evtimer_del(client->timer);
        return 0;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(client->timer, &tv);
    return 0;
}

/* CURLOPT_PREREQFUNCTION: runs each time the request is about to leave on a connection, also
 * when curl re-sends it by itself on a fresh connection because the reused one was found
 * dead. Counting here counts every request the upstream may have seen. */
static int prereq_cb(void *clientp, char *primary_ip, char *local_ip, int primary_port,
                     int local_port)
{
    (void)primary_ip, (void)local_ip, (void)primary_port, (void)local_port;
    pgw_http_transfer *t = clientp;
    if (t->max_sends && t->sends >= t->max_sends) {
        t->send_refused = 1;
        return CURL_PREREQFUNC_ABORT;
    }
    t->sends++;
    return CURL_PREREQFUNC_OK;
}

static size_t write_cb(char *data, size_t size, size_t n, void *userp)
{
    pgw_http_transfer *t = userp;
    size_t len = size * n;
    size_t max = t->client->options.max_body_bytes;
    if (t->response_len + len > max) {
        t->too_big = 1;
        return 0; /* makes curl fail the transfer */
    }
    if (t->response_len + len + 1 > t->response_cap) {
        size_t cap = t->response_cap ? t->response_cap : 4096;
        while (cap < t->response_len + len + 1)
            cap *= 2;
        char *grown = realloc(t->response, cap);
        if (!grown)
            return 0;
        t->response = grown;
        t->response_cap = cap;
    }
    memcpy(t->response + t->response_len, data, len);
    t->response_len += len;
    t->response[t->response_len] = '\0';
    return len;
}

pgw_http_client *pgw_http_client_new(struct event_base *base,
                                     const pgw_http_client_options *options)
{
    pgw_http_client *client = calloc(1, sizeof(*client));
    if (!client)
        return NULL;
    client->base = base;
    client->options = *options;
    if (client->options.max_body_bytes == 0)
        client->options.max_body_bytes = 1 << 20;
    if (options->ca_file)
        client->ca_file = strdup(options->ca_file);
    client->options.ca_file = client->ca_file;
    client->multi = curl_multi_init();
    client->timer = evtimer_new(base, on_timer, client);
    if (!client->multi || !client->timer) {
        pgw_http_client_free(client);
        return NULL;
    }
    if (options->event_priority > 0)
        event_priority_set(client->timer, options->event_priority);
    curl_multi_setopt(client->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(client->multi, CURLMOPT_SOCKETDATA, client);
    curl_multi_setopt(client->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(client->multi, CURLMOPT_TIMERDATA, client);
    /* HTTP/2 transfers to one host share a connection (up to the server's stream limit). */
    curl_multi_setopt(client->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    long per_host = options->max_host_connections > 0 ? options->max_host_connections : 0;
    curl_multi_setopt(client->multi, CURLMOPT_MAX_HOST_CONNECTIONS, per_host);
    /* Keep as many idle connections as a burst may have opened, so the next burst reuses
     * them instead of paying a TCP and TLS handshake each. */
    long idle = per_host == 0 ? 256L : per_host < 16 ? 16L : per_host;
    curl_multi_setopt(client->multi, CURLMOPT_MAXCONNECTS, idle);
    return client;
}

void pgw_http_client_free(pgw_http_client *client)
{
    if (!client)
        return;
    if (client->multi) {
        while (client->transfers)
            transfer_free(client->transfers);
        curl_multi_cleanup(client->multi);
    }
    if (client->timer)
        event_free(client->timer);
    free(client->ca_file);
    free(client);
}

pgw_http_transfer *pgw_http_start(pgw_http_client *client, const pgw_http_request *request,
                                  pgw_http_cb cb, void *user_data)
{
    pgw_http_transfer *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->client = client;
    t->cb = cb;
    t->user_data = user_data;
    t->max_sends = request->max_sends > 0 ? request->max_sends : 0;
    t->easy = curl_easy_init();
    if (!t->easy) {
        free(t);
        return NULL;
    }
    t->next = client->transfers;
    if (t->next)
        t->next->prev = t;
    client->transfers = t;
    int ok = 1;
    for (const char *const *h = request->headers; h && *h && ok; h++) {
        struct curl_slist *next = curl_slist_append(t->headers, *h);
        ok = next != NULL;
        if (next)
            t->headers = next;
    }
    /* curl adds "Expect: 100-continue" to larger POSTs: a round trip for nothing here. */
    struct curl_slist *next = ok ? curl_slist_append(t->headers, "Expect:") : NULL;
    ok = next != NULL;
    if (next)
        t->headers = next;
    if (ok && request->body) {
        t->body = malloc(request->body_len + 1);
        t->body_len = request->body_len;
        ok = t->body != NULL;
        if (ok)
            memcpy(t->body, request->body, request->body_len);
    }
    if (!ok) {
        transfer_free(t);
        return NULL;
    }

    CURL *e = t->easy;
    curl_easy_setopt(e, CURLOPT_URL, request->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (client->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, client->ca_file);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    /* Waiting for a connection that may multiplex is only worth it over TLS, where ALPN says
     * so during the handshake. Over plain http:// curl learns that a connection is HTTP/1.1
     * only from its response's status line, so with PIPEWAIT every new transfer to the host
     * waited behind one whose answer trickled in (found by test_faults_upstream). */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, strncmp(request->url, "https://", 8) == 0 ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)client->options.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                     (long)(request->timeout_ms > 0 ? request->timeout_ms : 1));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, prereq_cb);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, t);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "personalize-gateway/" PGW_VERSION);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* any encoding curl can decode */
    if (strcmp(request->method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->body ? t->body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(t->body ? request->body_len : 0));
    } else if (strcmp(request->method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, request->method);
        if (t->body) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->body);
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)request->body_len);
        }
    }
    if (curl_multi_add_handle(client->multi, e) != CURLM_OK) {
        transfer_free(t);
        return NULL;
    }
    return t;
}

void pgw_http_cancel(pgw_http_transfer *transfer)
{
    if (transfer)
        transfer_free(transfer);
}

const char *pgw_http_response_header(const pgw_http_response *response, const char *name)
{
    struct curl_header *h = NULL;
    if (!response->transfer ||
        curl_easy_header(response->transfer->easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
        return NULL;
    return h->value;
}
