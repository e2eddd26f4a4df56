/* http_request.h - one HTTP/1.x request assembled from bytes by http-parser.
 *
 * No libuv and no Lua here: bytes go in with jr_httpreq_feed, a whole request
 * (method, target, headers, body) or a status code to refuse it with comes out.
 * runtime/http.c feeds it from sockets; tests/fuzz/http_request_fuzz.c feeds it
 * from libFuzzer.
 */
#ifndef JR_HTTP_REQUEST_H
#define JR_HTTP_REQUEST_H

#include <stddef.h>
#include <http_parser.h>

#define JR_HTTP_MAX_HEADERS 64     /* more header lines: 431 */

typedef struct jr_httpreq {
  http_parser p;
  size_t max_header;      /* bytes of request target + header names and values */
  size_t max_body;        /* bytes of body (after chunked decoding) */
  /* The request being read: target, then each header's name and value, in buf. */
  char *buf;
  size_t len, cap;
  size_t url_len;
  size_t hdr[JR_HTTP_MAX_HEADERS][4];   /* name offset, name length, value offset, value length */
  int nhdr;
  int last;               /* 0 target, 1 header name, 2 header value */
  char *body;
  size_t body_len, body_cap;
  /* Set by feed. */
  int complete;           /* a whole request is here (the parser is paused after it) */
  int headers_done;       /* its header block is complete */
  int expect_continue;    /* it asked for "100 Continue" before sending its body */
  int keep_alive;         /* the connection may carry another request after it */
  int error_status;       /* 400, 405, 413, 431, 505: refuse the request and close */
  const char *error_msg;  /* static text naming the problem */
} jr_httpreq;

/* Prepares r for a connection's first request. Limits in bytes. */
void jr_httpreq_init(jr_httpreq *r, size_t max_header, size_t max_body);

/* Forgets the request just handled and unpauses the parser for the next one on
 * the same connection. Keeps the buffers. */
void jr_httpreq_next(jr_httpreq *r);

/* Frees the buffers (r itself belongs to the caller). */
void jr_httpreq_free(jr_httpreq *r);

/* Parses up to len bytes. Returns how many were used: fewer than len when a
 * request completed (the rest belongs to the next request: feed it after
 * jr_httpreq_next) or an error was found (r->error_status set; the
 * connection must answer it and close). Never reads past data + len. */
size_t jr_httpreq_feed(jr_httpreq *r, const char *data, size_t len);

/* Header i's name (lower case) and value; the method name. */
const char *jr_httpreq_method(const jr_httpreq *r);
#define JR_HTTPREQ_NAME(r, i) ((r)->buf + (r)->hdr[i][0])
#define JR_HTTPREQ_VALUE(r, i) ((r)->buf + (r)->hdr[i][2])

#endif
