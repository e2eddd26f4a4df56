/* http_request.c - assembles HTTP/1.x requests from bytes with http-parser.
 *
 * http-parser (Debian's libhttp-parser 2.9) does the parsing; this file keeps
 * what it reports (the target, the header lines, the decoded body) in growing
 * buffers, enforces our size limits while the bytes arrive, and pauses the
 * parser after each whole request so pipelined requests are handled one at a
 * time. See http_request.h for the contract.
 */
#include "http_request.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int fail(jr_httpreq *r, int status, const char *msg) {
  if (r->error_status == 0) {
    r->error_status = status;
    r->error_msg = msg;
  }
  return -1;
}

/* Appends n bytes to *buf (growing it); returns 0, or -1 when out of memory. */
static int append(char **buf, size_t *len, size_t *cap, const char *at, size_t n) {
  if (*len + n > *cap) {
    size_t c = *cap ? *cap : 1024;
    while (c < *len + n) c *= 2;
    char *p = realloc(*buf, c);
    if (p == NULL) return -1;
    *buf = p;
    *cap = c;
  }
  memcpy(*buf + *len, at, n);
  *len += n;
  return 0;
}

static int head_append(jr_httpreq *r, const char *at, size_t n) {
  if (r->len + n > r->max_header)
    return fail(r, 431, "request header fields too large (the target and headers together exceed the limit)");
  if (append(&r->buf, &r->len, &r->cap, at, n) != 0) return fail(r, 503, "out of memory");
  return 0;
}

static int on_message_begin(http_parser *p) {
  jr_httpreq *r = p->data;
  r->len = r->url_len = r->body_len = 0;
  r->nhdr = 0;
  r->last = 0;
  r->complete = r->headers_done = r->expect_continue = r->keep_alive = 0;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  jr_httpreq *r = p->data;
  if (head_append(r, at, n) != 0) return -1;
  r->url_len += n;
  return 0;
}

/* Closes the value of the last header (its length is what was appended since). */
static void end_value(jr_httpreq *r) {
  if (r->last == 2) r->hdr[r->nhdr - 1][3] = r->len - r->hdr[r->nhdr - 1][2];
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  jr_httpreq *r = p->data;
  if (r->last != 1) {                     /* a new header line starts */
    end_value(r);
    if (r->nhdr == JR_HTTP_MAX_HEADERS) return fail(r, 431, "too many header lines");
    r->hdr[r->nhdr][0] = r->len;
    r->hdr[r->nhdr][1] = r->hdr[r->nhdr][2] = r->hdr[r->nhdr][3] = 0;
    r->nhdr++;
    r->last = 1;
  }
  return head_append(r, at, n);
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  jr_httpreq *r = p->data;
  if (r->last != 2) {
    if (r->last != 1) return fail(r, 400, "header value without a name");
    size_t *h = r->hdr[r->nhdr - 1];
    h[1] = r->len - h[0];
    h[2] = r->len;
    r->last = 2;
  }
  return head_append(r, at, n);
}

static int on_headers_complete(http_parser *p) {
  jr_httpreq *r = p->data;
  if (r->last == 1) {                      /* a name without a value (parser allows it) */
    size_t *h = r->hdr[r->nhdr - 1];
    h[1] = r->len - h[0];
    h[2] = r->len;
    h[3] = 0;
  }
  end_value(r);
  r->last = 0;
  if (p->http_major != 1) return fail(r, 505, "HTTP version not supported (use HTTP/1.1)");
  for (int i = 0; i < r->nhdr; i++) {
    char *name = r->buf + r->hdr[i][0];
    for (size_t k = 0; k < r->hdr[i][1]; k++)
      if (name[k] >= 'A' && name[k] <= 'Z') name[k] = (char)(name[k] + 32);
    if (r->hdr[i][1] == 6 && memcmp(name, "expect", 6) == 0) {
      if (r->hdr[i][3] == 12 && strncasecmp(r->buf + r->hdr[i][2], "100-continue", 12) == 0)
        r->expect_continue = 1;
      else
        return fail(r, 417, "expectation failed (only Expect: 100-continue is understood)");
    }
  }
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > r->max_body)
    return fail(r, 413, "request body too large");
  r->keep_alive = http_should_keep_alive(p);
  r->headers_done = 1;
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  jr_httpreq *r = p->data;
  if (r->body_len + n > r->max_body) return fail(r, 413, "request body too large");
  if (append(&r->body, &r->body_len, &r->body_cap, at, n) != 0) return fail(r, 503, "out of memory");
  return 0;
}

static int on_message_complete(http_parser *p) {
  jr_httpreq *r = p->data;
  r->complete = 1;
  r->keep_alive = http_should_keep_alive(p);
  http_parser_pause(p, 1);                 /* the next request waits until this one is answered */
  return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void jr_httpreq_init(jr_httpreq *r, size_t max_header, size_t max_body) {
  memset(r, 0, sizeof *r);
  http_parser_init(&r->p, HTTP_REQUEST);
  r->p.data = r;
  r->max_header = max_header;
  r->max_body = max_body;
}

void jr_httpreq_next(jr_httpreq *r) {
  r->complete = r->headers_done = r->expect_continue = 0;
  r->len = r->url_len = r->body_len = 0;
  r->nhdr = 0;
  http_parser_pause(&r->p, 0);
}

void jr_httpreq_free(jr_httpreq *r) {
  free(r->buf);
  free(r->body);
  r->buf = r->body = NULL;
  r->cap = r->body_cap = 0;
}

size_t jr_httpreq_feed(jr_httpreq *r, const char *data, size_t len) {
  if (r->error_status || r->complete || len == 0) return 0;
  size_t n = http_parser_execute(&r->p, &settings, data, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&r->p);
  if (e == HPE_PAUSED) return n;
  if (e != HPE_OK) {
    fail(r, 400, http_errno_description(e));
    return n;
  }
  if (r->p.upgrade) {
    fail(r, 400, "protocol upgrade (and CONNECT) is not supported");
    return n;
  }
  return n;
}

const char *jr_httpreq_method(const jr_httpreq *r) {
  return http_method_str((enum http_method)r->p.method);
}
