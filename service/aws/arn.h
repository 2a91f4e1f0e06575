/* arn: strict parsing of Amazon Personalize batch inference job ARNs.
 *
 *   arn:<partition>:personalize:<region>:<12-digit account>:batch-inference-job/<name>
 *
 * The ARN is the only caller-controlled input that reaches the upstream URL, the SigV4 scope and
 * the cache key, so it is checked strictly before anything else: a region such as
 * "us-east-1.evil.example" would otherwise redirect the signed call to another host. Pure: no
 * I/O, no allocation. */
#ifndef PGW_ARN_H
#define PGW_ARN_H

#include <stddef.h>

/* Longest ARN accepted, in bytes (the AWS model's Arn shape: max 256). */
#define PGW_ARN_MAX_LEN 256

/* A parsed ARN. Every member is a NUL-terminated copy; the sizes bound what the parser
 * accepts (a real region name is far shorter than 32 bytes). */
typedef struct pgw_arn {
    char partition[16]; /* "aws", "aws-cn" or "aws-us-gov" */
    char region[32];    /* e.g. "us-east-1" */
    char account[13];   /* exactly 12 digits */
    char job_name[64];  /* 1..63 characters of [A-Za-z0-9_-], first alphanumeric */
} pgw_arn;

/* Parses the `len` bytes at `s` (need not be NUL-terminated; an embedded NUL is an error) into
 * *out. Returns 0 on success; on failure returns -1, leaves *out zeroed and writes a one-line
 * human-readable reason into err (if err_len > 0), safe to show to the caller: any quoted part
 * of the input is escaped and truncated. */
int pgw_arn_parse(const char *s, size_t len, pgw_arn *out, char *err, size_t err_len);

/* Nonzero when the n bytes at s are an AWS region name as the ARN check accepts it
 * (^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$, shorter than pgw_arn.region): safe to put into a host
 * name. */
int pgw_arn_region_valid(const char *s, size_t n);

/* The DNS suffix of the ARN's partition: "amazonaws.com.cn" for aws-cn, else
 * "amazonaws.com". Returns a static string. */
const char *pgw_arn_dns_suffix(const pgw_arn *arn);

/* Writes the default Personalize endpoint for the ARN's region, e.g.
 * "https://personalize.us-east-1.amazonaws.com", into buf (NUL-terminated). Returns 0, or -1
 * if buf is too small. */
int pgw_arn_default_endpoint(const pgw_arn *arn, char *buf, size_t len);

#endif
