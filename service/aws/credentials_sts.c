#include "service/aws/credentials_sts.h"

#include <curl/curl.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/aws/arn.h"
#include "service/aws/credentials_source.h"
#include "service/aws/sigv4.h"
#include "service/clock.h"
#include "service/text.h"

int pgw_sts_endpoint(const char *region, char *url, size_t url_len)
{
    const char *override = pgw_credentials_getenv("AWS_ENDPOINT_URL_STS");
    if (!override)
        override = pgw_credentials_getenv("AWS_ENDPOINT_URL");
    int n;
    if (override)
        n = snprintf(url, url_len, "%s", override);
    else if (region && *region && !pgw_arn_region_valid(region, strlen(region)))
        /* The region becomes part of the host name (from AWS_REGION or a profile's "region"):
         * "evil.example/x#" would send the signed call elsewhere (found by fuzz_url). */
        return -1;
    else if (!region || !*region)
        n = snprintf(url, url_len, "https://sts.amazonaws.com/");
    else
        n = snprintf(url, url_len, "https://sts.%s.amazonaws.com%s/", region,
                     strncmp(region, "cn-", 3) == 0 ? ".cn" : "");
    return (n > 0 && (size_t)n < url_len) ? 0 : -1;
}

const char *pgw_sts_signing_region(const char *region)
{
    return (region && *region) ? region : "us-east-1";
}

void pgw_sts_default_session_name(char *out, size_t out_len)
{
    snprintf(out, out_len, "personalize-gateway-%lld", (long long)pgw_now_wall_ms());
}

/* --- the XML answer --- */

static int name_is(const xmlNode *n, const char *name)
{
    return n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

/* The first element named `name` under n (depth first), or NULL. */
static xmlNode *find_element(xmlNode *n, const char *name, int depth)
{
    for (; n && depth < 16; n = n->next) {
        if (name_is(n, name))
            return n;
        xmlNode *found = find_element(n->children, name, depth + 1);
        if (found)
            return found;
    }
    return NULL;
}

/* The text of the child element `name` of parent (heap, free with wipe_xml_string), or NULL. */
static xmlChar *child_text(xmlNode *parent, const char *name)
{
    for (xmlNode *c = parent ? parent->children : NULL; c; c = c->next)
        if (name_is(c, name))
            return xmlNodeGetContent(c);
    return NULL;
}

static void wipe_xml_string(xmlChar *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen((const char *)s));
        xmlFree(s);
    }
}

/* Wipes every text node under n: the tree holds the secrets until xmlFreeDoc. */
static void wipe_tree(xmlNode *n, int depth)
{
    for (; n && depth < 32; n = n->next) {
        if ((n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) && n->content)
            OPENSSL_cleanse(n->content, strlen((const char *)n->content));
        wipe_tree(n->children, depth + 1);
    }
}

int pgw_sts_parse_answer(long http_status, const char *body, size_t len, const char *source,
                         pgw_credentials **out, char *err, size_t err_len)
{
    *out = NULL;
    if (len > PGW_CREDENTIALS_MAX_ANSWER || len > (size_t)INT32_MAX) {
        snprintf(err, err_len, "STS answered HTTP %ld with an oversized body", http_status);
        return -1;
    }
    /* NONET: no external fetches; no NOENT: entities are not expanded; NOERROR/NOWARNING:
     * libxml2 must not print parts of the document (it may hold secrets) to stderr. */
    xmlDoc *doc = len ? xmlReadMemory(body, (int)len, "sts.xml", NULL,
                                      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING)
                      : NULL;
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    int rc = -1;
    if (!root) {
        snprintf(err, err_len, "STS answered HTTP %ld without a readable XML body", http_status);
    } else if (http_status != 200) {
        xmlNode *e = find_element(root, "Error", 0);
        xmlChar *code = child_text(e, "Code");
        xmlChar *msg = child_text(e, "Message");
        /* Quoted: the answer's text may hold control characters, and a cut could split a
         * character, which the JSON log line quoting this message would refuse. */
        char qc[PGW_TEXT_QUOTE_SIZE(64)], qm[PGW_TEXT_QUOTE_SIZE(200)];
        snprintf(err, err_len, "STS answered HTTP %ld: %s: %s", http_status,
                 code ? pgw_text_quote_str((const char *)code, 64, qc, sizeof(qc)) : "UnknownError",
                 msg ? pgw_text_quote_str((const char *)msg, 200, qm, sizeof(qm)) : "no message");
        xmlFree(code);
        xmlFree(msg);
    } else {
        xmlNode *c = find_element(root, "Credentials", 0);
        xmlChar *akid = child_text(c, "AccessKeyId");
        xmlChar *secret = child_text(c, "SecretAccessKey");
        xmlChar *token = child_text(c, "SessionToken");
        xmlChar *exp = child_text(c, "Expiration");
        int64_t expires_ms = 0;
        if (!c || !akid || !secret || !token || !exp) {
            snprintf(err, err_len,
                     "STS answer lacks Credentials (AccessKeyId, SecretAccessKey, "
                     "SessionToken, Expiration)");
        } else if (pgw_credentials_parse_time((const char *)exp, &expires_ms) != 0) {
            snprintf(err, err_len, "STS answer's Expiration is not an ISO 8601 time");
        } else {
            *out = pgw_credentials_new((const char *)akid, (const char *)secret,
                                       (const char *)token, expires_ms, source);
            if (*out)
                rc = 0;
            else
                snprintf(err, err_len,
                         "STS answer's credentials are empty or hold characters a request "
                         "header cannot carry");
        }
        wipe_xml_string(akid);
        wipe_xml_string(secret);
        wipe_xml_string(token);
        xmlFree(exp);
    }
    if (root)
        wipe_tree(root, 0);
    xmlFreeDoc(doc);
    return rc;
}

/* --- the call --- */

struct pgw_sts_call {
    pgw_http_transfer *transfer;
    pgw_credentials_cb cb;
    void *user_data;
    char source[32];
};

/* Appends "&name=<form-encoded value>" to the body. */
static int append_param(char **body, size_t *len, const char *name, const char *value)
{
    char *esc = curl_easy_escape(NULL, value, 0);
    if (!esc)
        return -1;
    size_t need = *len + 1 + strlen(name) + 1 + strlen(esc) + 1;
    char *grown = malloc(need);
    if (!grown) {
        OPENSSL_cleanse(esc, strlen(esc));
        curl_free(esc);
        return -1;
    }
    int n = snprintf(grown, need, "%s&%s=%s", *body, name, esc);
    OPENSSL_cleanse(esc, strlen(esc));
    curl_free(esc);
    pgw_credentials_secret_free(*body);
    *body = grown;
    *len = (size_t)n;
    return 0;
}

static void on_sts_response(const pgw_http_response *resp, void *user_data)
{
    pgw_sts_call *call = user_data;
    char err[400];
    pgw_credentials *creds = NULL;
    if (resp->transport_error) {
        snprintf(err, sizeof(err), "STS unreachable: %.200s",
                 resp->error ? resp->error : "transport error");
    } else {
        pgw_sts_parse_answer(resp->status, resp->body, resp->body_len, call->source, &creds, err,
                             sizeof(err));
        pgw_credentials_wipe_body(resp->body, resp->body_len);
    }
    call->cb(creds, creds ? NULL : err, call->user_data);
    pgw_credentials_unref(creds);
    free(call);
}

void pgw_sts_call_cancel(pgw_sts_call *call)
{
    if (!call)
        return;
    pgw_http_cancel(call->transfer);
    free(call);
}

pgw_sts_call *pgw_sts_call_start(const pgw_sts_call_options *o, pgw_credentials_cb cb,
                                 void *user_data, char *err, size_t err_len)
{
    int assume_role = strcmp(o->action, "AssumeRole") == 0;
    if (!o->role_arn || !*o->role_arn || !o->session_name || !*o->session_name ||
        (assume_role ? !o->signing : !o->web_identity_token)) {
        snprintf(err, err_len, "STS %s: missing role ARN, session name or %s", o->action,
                 assume_role ? "source credentials" : "web identity token");
        return NULL;
    }
    char scheme[16], host[300], path[256];
    if (pgw_credentials_url_parts(o->url, scheme, sizeof(scheme), host, sizeof(host), path,
                                  sizeof(path), NULL, 0) != 0) {
        snprintf(err, err_len, "STS endpoint is not a valid URL");
        return NULL;
    }
    char *body = malloc(64);
    size_t body_len = 0;
    if (body)
        body_len = (size_t)snprintf(body, 64, "Action=%s&Version=2011-06-15", o->action);
    int ok = body != NULL;
    ok = ok && append_param(&body, &body_len, "RoleArn", o->role_arn) == 0;
    ok = ok && append_param(&body, &body_len, "RoleSessionName", o->session_name) == 0;
    if (ok && o->web_identity_token && !assume_role)
        ok = append_param(&body, &body_len, "WebIdentityToken", o->web_identity_token) == 0;
    if (ok && assume_role && o->external_id && *o->external_id)
        ok = append_param(&body, &body_len, "ExternalId", o->external_id) == 0;
    if (ok && o->duration_seconds > 0) {
        char d[16];
        snprintf(d, sizeof(d), "%d", o->duration_seconds);
        ok = append_param(&body, &body_len, "DurationSeconds", d) == 0;
    }
    pgw_sts_call *call = ok ? calloc(1, sizeof(*call)) : NULL;
    if (!call) {
        pgw_credentials_secret_free(body);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    call->cb = cb;
    call->user_data = user_data;
    snprintf(call->source, sizeof(call->source), "%s", o->source ? o->source : "sts");

    static const char content_type[] = "application/x-www-form-urlencoded; charset=utf-8";
    char host_line[320], ctype_line[80];
    snprintf(host_line, sizeof(host_line), "Host: %s", host);
    snprintf(ctype_line, sizeof(ctype_line), "Content-Type: %s", content_type);
    const char *headers[4 + PGW_SIGV4_MAX_OUT_HDRS + 1] = {host_line, ctype_line,
                                                           "Accept: text/xml"};
    size_t nh = 3;
    char *signed_lines[PGW_SIGV4_MAX_OUT_HDRS] = {0};
    pgw_sigv4_output sout = {0};
    pgw_sigv4_signer *signer = NULL;
    if (assume_role) {
        const pgw_sigv4_header to_sign[] = {{"Host", host}, {"Content-Type", content_type}};
        pgw_sigv4_request sreq = {
            .method = "POST",
            .path = path,
            .headers = to_sign,
            .n_headers = 2,
            .body = body,
            .body_len = body_len,
        };
        pgw_sigv4_credentials sc = {o->signing->access_key_id, o->signing->secret_access_key,
                                    o->signing->session_token};
        pgw_sigv4_context ctx = {
            .credentials = &sc,
            .region = pgw_sts_signing_region(o->region),
            .service = "sts",
            .now = (time_t)(pgw_now_wall_ms() / 1000),
        };
        signer = pgw_sigv4_signer_new();
        ok = signer && pgw_sigv4_sign(signer, &sreq, &ctx, &sout) == 0;
        if (!ok)
            snprintf(err, err_len, "cannot sign the STS request: %s",
                     signer ? pgw_sigv4_signer_errstr(signer) : "out of memory");
        for (size_t i = 0; ok && i < sout.n_headers; i++) {
            size_t need = strlen(sout.headers[i].name) + 2 + strlen(sout.headers[i].value) + 1;
            signed_lines[i] = malloc(need);
            ok = signed_lines[i] != NULL;
            if (ok) {
                snprintf(signed_lines[i], need, "%s: %s", sout.headers[i].name,
                         sout.headers[i].value);
                headers[nh++] = signed_lines[i];
            } else {
                snprintf(err, err_len, "out of memory");
            }
        }
    }
    if (ok) {
        pgw_http_request req = {
            .method = "POST",
            .url = o->url,
            .headers = headers,
            .body = body,
            .body_len = body_len,
            .timeout_ms = PGW_STS_TIMEOUT_MS,
        };
        call->transfer = pgw_http_start(o->http, &req, on_sts_response, call);
        if (!call->transfer) {
            snprintf(err, err_len, "cannot start the STS request");
            ok = 0;
        }
    }
    for (size_t i = 0; i < PGW_SIGV4_MAX_OUT_HDRS; i++)
        pgw_credentials_secret_free(signed_lines[i]);
    pgw_sigv4_output_cleanup(&sout);
    pgw_sigv4_signer_free(signer);
    pgw_credentials_secret_free(body); /* it held the web identity token */
    if (!ok) {
        free(call);
        return NULL;
    }
    return call;
}
