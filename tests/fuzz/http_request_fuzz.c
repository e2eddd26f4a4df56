/* http_request_fuzz.c - libFuzzer target for runtime/http_request.c (the HTTP request
 * assembly on top of http-parser): make fuzz-http.
 *
 * The first input byte picks how the rest is cut into reads (as a socket would deliver it);
 * every complete request is checked and the parser moved on to the next one, as the server
 * does with pipelined requests. Checks: nothing is read outside the buffers (ASan), the limits
 * hold, and every offset the assembler reports lies inside its buffer.
 */
#include "http_request.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADER 2048
#define MAX_BODY 4096

static void check(const jr_httpreq *r) {
  if (r->len > MAX_HEADER || r->url_len > r->len || r->body_len > MAX_BODY) abort();
  if (r->nhdr < 0 || r->nhdr > JR_HTTP_MAX_HEADERS) abort();
  for (int i = 0; i < r->nhdr; i++) {
    if (r->hdr[i][0] + r->hdr[i][1] > r->len) abort();
    if (r->hdr[i][2] + r->hdr[i][3] > r->len) abort();
    for (size_t k = 0; k < r->hdr[i][1]; k++) {
      char c = JR_HTTPREQ_NAME(r, i)[k];
      if (c >= 'A' && c <= 'Z') abort();            /* names are lower-cased */
    }
  }
  if (jr_httpreq_method(r) == NULL) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t step = (size_t)(data[0] % 64) + 1;          /* bytes per read */
  data++;
  size--;
  jr_httpreq r;
  jr_httpreq_init(&r, MAX_HEADER, MAX_BODY);
  size_t pos = 0;
  int requests = 0;
  while (pos < size && !r.error_status && requests < 64) {
    size_t n = size - pos < step ? size - pos : step;
    size_t used = jr_httpreq_feed(&r, (const char *)data + pos, n);
    if (used > n) abort();
    pos += used;
    if (r.complete) {
      if (!r.headers_done) abort();
      check(&r);
      jr_httpreq_next(&r);
      requests++;
    } else if (!r.error_status && used < n) {
      abort();                                        /* stopped early without a reason */
    }
  }
  if (r.error_status && (r.error_status < 400 || r.error_status > 599 || r.error_msg == NULL)) abort();
  jr_httpreq_free(&r);
  return 0;
}
