/* redis_stream.c - one socket to a server on the libuv loop: TCP (with
 * non-blocking name resolution, every address tried in turn, a deadline) or
 * a unix socket, optionally under TLS, with writes coalesced per loop turn.
 *
 * Reading: libuv reads into one static buffer (data is consumed before the
 * callback returns); under TLS the bytes go into OpenSSL through a memory
 * BIO and the plaintext comes out of SSL_read. The owner gets plaintext.
 *
 * Writing: the owner appends to `out` (jr_stream_reserve/commit) and the
 * stream is listed for the end of the loop turn: a prepare handle, which
 * runs once per turn just before the loop polls, writes everything queued
 * in one uv_try_write, so the commands of a whole turn leave in one
 * write(2), as Redis flushes its replies in beforeSleep(). Only what the
 * socket does not take at once goes through uv_write (from a buffer nothing
 * appends to meanwhile); more output waits for its callback. The owner may
 * also write early (jr_stream_flush), which never reports an error at once:
 * a failed early write is reported by the end-of-turn flush, outside the
 * owner's code. Under TLS, `out` is encrypted at flush time: a turn's
 * commands become as few TLS records as possible.
 *
 * Lifetime: the stream belongs to its owner until jr_stream_close, after
 * which no callback reaches the owner. Its memory is freed once libuv gives
 * back everything it holds (handles closed, requests called back): `refs`
 * counts those.
 */
#include "redis_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

enum { S_RESOLVING, S_CONNECTING, S_HANDSHAKE, S_OPEN, S_CLOSED };

typedef struct {
  char *data;
  size_t len, cap;
} jr_buf;

struct jr_stream {
  void *owner;
  const jr_stream_handler *h;
  int state;                     /* S_* */
  int refs;                      /* handles open + requests libuv has not called back */
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } io;
  int io_inited;                 /* io initialised, its close callback not run yet */
  uv_timer_t timer;              /* the deadline; also delivers failures found in open */
  uv_getaddrinfo_t gai;
  uv_connect_t creq;
  uv_write_t wreq;
  struct addrinfo *ai_list, *ai_next;
  int retry_next;                /* io is closing to try the next address */
  jr_errno_t late_code;          /* a failure found before any callback could run */
  char *late_msg;
  int write_err;                 /* an early write failed: reported by the end-of-turn flush */
  int ready;                     /* the owner finished its setup (jr_stream_ready) */
  int got_data;
  jr_buf out;                    /* queued by the owner (plaintext) */
  jr_buf tx;                     /* TLS records waiting for the socket */
  jr_buf wire;                   /* given to uv_write */
  int writing;
  jr_stream *flush_next;
  int flush_listed;
  SSL *ssl;
  BIO *rbio, *wbio;              /* owned by ssl */
  const jr_tls *tls;
  double timeout_ms;
  int port;
  char *host, *path, *name;
  char addr[300];
};

static char rx_buf[65536];       /* socket reads (consumed inside the read callback) */
static char plain_buf[65536];    /* SSL_read output */

static uv_prepare_t flush_prep;
static int flush_inited;
static jr_stream *flush_head;

static void stream_send(jr_stream *s, int report);
static void stream_fail(jr_stream *s, jr_errno_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void tcp_attempt(jr_stream *s);

/* ---- buffers -------------------------------------------------------------- */

/* Makes room for n more bytes; returns 0, or -1 out of memory. */
static int buf_grow(jr_buf *b, size_t n) {
  if (b->cap - b->len >= n) return 0;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->len < n) cap *= 2;
  char *p = realloc(b->data, cap);
  if (p == NULL) return -1;
  b->data = p;
  b->cap = cap;
  return 0;
}

/* An emptied buffer that grew large gives its memory back. */
static void buf_emptied(jr_buf *b) {
  b->len = 0;
  if (b->cap > (1u << 20)) {
    free(b->data);
    b->data = NULL;
    b->cap = 0;
  }
}

/* ---- lifetime ------------------------------------------------------------- */

/* Frees s once it is closed and libuv holds nothing of it (refs == 0). */
static void stream_free_if_done(jr_stream *s) {
  if (s->state != S_CLOSED || s->refs > 0) return;
  if (s->ssl) SSL_free(s->ssl);
  if (s->ai_list) uv_freeaddrinfo(s->ai_list);
  free(s->out.data);
  free(s->tx.data);
  free(s->wire.data);
  free(s->late_msg);
  free(s->host);
  free(s->path);
  free(s->name);
  free(s);
}

static void flush_unlist(jr_stream *s) {
  if (!s->flush_listed) return;
  jr_stream **pp = &flush_head;
  while (*pp && *pp != s) pp = &(*pp)->flush_next;
  if (*pp) *pp = s->flush_next;
  s->flush_listed = 0;
}

/* The socket handle is closed: try the next address of the name (when a
 * connect failed), or let the stream go. */
static void on_io_closed(uv_handle_t *h) {
  jr_stream *s = h->data;
  s->refs--;
  s->io_inited = 0;
  if (s->state != S_CLOSED && s->retry_next) {
    s->retry_next = 0;
    tcp_attempt(s);
    return;
  }
  stream_free_if_done(s);
}

static void on_timer_closed(uv_handle_t *h) {
  jr_stream *s = h->data;
  s->refs--;
  stream_free_if_done(s);
}

/* Stops all callbacks to the owner and releases the socket. Idempotent;
 * safe inside any callback of this stream. */
void jr_stream_close(jr_stream *s) {
  if (s == NULL || s->state == S_CLOSED) return;
  int resolving = s->state == S_RESOLVING;
  s->state = S_CLOSED;
  s->owner = NULL;
  flush_unlist(s);
  if (resolving) uv_cancel((uv_req_t *)&s->gai);     /* its callback still comes */
  if (s->io_inited && !uv_is_closing(&s->io.handle)) uv_close(&s->io.handle, on_io_closed);
  if (!uv_is_closing((uv_handle_t *)&s->timer)) uv_close((uv_handle_t *)&s->timer, on_timer_closed);
  stream_free_if_done(s);
}

/* Tells the owner that the stream failed, then closes it. */
static void stream_fail(jr_stream *s, jr_errno_t code, const char *fmt, ...) {
  if (s->state == S_CLOSED) return;
  char msg[700];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const jr_stream_handler *h = s->h;
  if (s->owner && h->failed) h->failed(s, code, msg);
  jr_stream_close(s);
}

/* A libuv error as the C library words it ("Connection refused"). */
static const char *uv_why(int err) {
  return err < 0 && err > -4096 ? strerror(-err) : uv_strerror(err);
}

/* The socket failed with err (a libuv error; UV_EOF: the server closed it)
 * while doing what ("cannot write to the socket", NULL for reading). Says
 * what it most likely means: before any answer under TLS, a server that
 * refuses our client certificate (TLS 1.3 ends the handshake on our side
 * before the server has checked us, and its alert may be lost in the
 * reset); before any answer without TLS, a TLS port. */
static void stream_fail_io(jr_stream *s, int err, const char *what) {
  const char *why = err == UV_EOF ? "closed by the server" : uv_why(err);
  if (s->ssl && s->state == S_OPEN && !s->got_data && !s->ready) {
    stream_fail(s, JR_ETLS, "the server closed the TLS connection right after the handshake "
                "(%s): it may want a client certificate it trusts: pass --tls-cert FILE and "
                "--tls-key FILE (env JOBRT_TLS_CERT, JOBRT_TLS_KEY)", why);
  } else if (s->state == S_HANDSHAKE) {
    stream_fail(s, JR_ETLS, "the server closed the connection during the TLS handshake (%s): "
                "is that port plain TCP? use redis:// for it", why);
  } else if (!s->got_data && !s->ready && s->ssl == NULL) {
    stream_fail(s, JR_ECONN, "%s%s%s before it answered (if that port speaks TLS, use rediss://)",
                what ? what : "", what ? ": " : "", why);
  } else {
    stream_fail(s, JR_ECONN, "%s%s%s", what ? what : "", what ? ": " : "", why);
  }
}

/* ---- connecting ----------------------------------------------------------- */

/* The stream's timer: delivers a failure found in jr_stream_open, or the
 * deadline to connect and set up passed (ETIMEDOUT, saying which step). */
static void on_timer(uv_timer_t *t) {
  jr_stream *s = t->data;
  if (s->late_msg) {
    stream_fail(s, s->late_code, "%s", s->late_msg);
    return;
  }
  double secs = s->timeout_ms / 1000.0;
  switch (s->state) {
  case S_RESOLVING:
    stream_fail(s, JR_ETIMEDOUT, "could not resolve '%s' within %g s", s->host, secs);
    break;
  case S_CONNECTING:
    stream_fail(s, JR_ETIMEDOUT, "no connection within %g s (a firewall dropping packets, or a "
                "wrong address?)", secs);
    break;
  case S_HANDSHAKE:
    stream_fail(s, JR_ETIMEDOUT, "no TLS handshake within %g s (is that port plain TCP? use "
                "redis:// for it)", secs);
    break;
  default:
    stream_fail(s, JR_ETIMEDOUT, "no answer to the connection setup within %g s", secs);
    break;
  }
}

/* Records a failure found where the owner cannot be called yet (inside
 * jr_stream_open); the timer delivers it on the next loop turn. */
static void fail_later(jr_stream *s, jr_errno_t code, const char *msg) {
  if (s->late_msg) return;
  s->late_code = code;
  s->late_msg = strdup(msg);
  uv_timer_start(&s->timer, on_timer, 0, 0);
}

/* Every read goes into rx_buf: on_read consumes it before returning. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(rx_buf, sizeof rx_buf);
}

/* Pushes what OpenSSL produced into the TLS output queue. */
static int tls_drain(jr_stream *s) {
  size_t n = BIO_ctrl_pending(s->wbio);
  if (n == 0) return 0;
  if (buf_grow(&s->tx, n) != 0) return -1;
  int got = BIO_read(s->wbio, s->tx.data + s->tx.len, (int)n);
  if (got > 0) s->tx.len += (size_t)got;
  return 0;
}

/* Hands every byte of plaintext OpenSSL has to the owner. */
static void tls_read_app(jr_stream *s) {
  for (;;) {
    ERR_clear_error();
    int n = SSL_read(s->ssl, plain_buf, sizeof plain_buf);
    if (n > 0) {
      s->got_data = 1;
      if (s->owner) s->h->data(s, plain_buf, (size_t)n);
      if (s->state == S_CLOSED) return;
      continue;
    }
    int e = SSL_get_error(s->ssl, n);
    if (e == SSL_ERROR_WANT_READ) break;
    if (e == SSL_ERROR_ZERO_RETURN) {
      stream_fail(s, JR_ECONN, "closed by the server (TLS close_notify)");
      return;
    }
    char msg[600];
    jr_tls_read_error(s->ssl, e, msg, sizeof msg);
    stream_fail(s, JR_ETLS, "%s", msg);
    return;
  }
  stream_send(s, 1);             /* what SSL_read produced (a key update, say) */
}

/* The socket (and TLS) is up: tells the owner, then sends what it queued. */
static void stream_opened(jr_stream *s) {
  s->state = S_OPEN;
  if (s->owner && s->h->connected) s->h->connected(s);
  if (s->state == S_CLOSED) return;
  stream_send(s, 1);
}

/* One step of the TLS handshake, after each read. */
static void tls_step(jr_stream *s) {
  ERR_clear_error();
  int rc = SSL_do_handshake(s->ssl);
  if (rc == 1) {
    stream_send(s, 1);
    if (s->state == S_CLOSED) return;
    stream_opened(s);
    if (s->state == S_CLOSED) return;
    tls_read_app(s);             /* application data that came with the last flight */
    return;
  }
  int e = SSL_get_error(s->ssl, rc);
  if (e == SSL_ERROR_WANT_READ) {
    stream_send(s, 1);
    return;
  }
  char msg[600];
  jr_tls_handshake_error(s->ssl, e, s->name, msg, sizeof msg);
  stream_send(s, 0);             /* the alert, if any, so the server logs why */
  stream_fail(s, JR_ETLS, "%s", msg);
}

/* Bytes from the socket: plaintext to the owner, ciphertext through OpenSSL
 * (the handshake first); the end of the stream or an error fails it. */
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  jr_stream *s = st->data;
  if (s->state == S_CLOSED) return;
  if (nread > 0) {
    if (s->ssl) {
      BIO_write(s->rbio, buf->base, (int)nread);
      if (s->state == S_HANDSHAKE) tls_step(s);
      else tls_read_app(s);
    } else {
      s->got_data = 1;
      if (s->owner) s->h->data(s, buf->base, (size_t)nread);
    }
    return;
  }
  if (nread == 0 || nread == UV_ENOBUFS) return;
  stream_fail_io(s, (int)nread, NULL);
}

/* Returns 1 when name is an IPv4 or IPv6 address literal. */
static int is_ip(const char *name) {
  unsigned char b[16];
  return uv_inet_pton(AF_INET, name, b) == 0 || uv_inet_pton(AF_INET6, name, b) == 0;
}

/* The socket is connected: start reading and, under TLS, the handshake. */
static void on_connected(uv_connect_t *req, int status) {
  jr_stream *s = req->data;
  s->refs--;
  if (s->state == S_CLOSED) {
    stream_free_if_done(s);
    return;
  }
  if (status < 0) {
    if (s->ai_next && !s->path) {       /* try the next address of the name */
      s->retry_next = 1;
      uv_close(&s->io.handle, on_io_closed);
      return;
    }
    stream_fail(s, JR_ECONNREFUSED, "%s", uv_why(status));
    return;
  }
  int rc = uv_read_start(&s->io.stream, on_alloc, on_read);
  if (rc < 0) {
    stream_fail(s, JR_ECONN, "cannot read from the socket: %s", uv_why(rc));
    return;
  }
  if (s->tls == NULL) {
    stream_opened(s);
    return;
  }
  s->state = S_HANDSHAKE;
  s->ssl = SSL_new(jr_tls_ctx(s->tls));
  s->rbio = BIO_new(BIO_s_mem());
  s->wbio = BIO_new(BIO_s_mem());
  if (s->ssl == NULL || s->rbio == NULL || s->wbio == NULL) {
    BIO_free(s->rbio);
    BIO_free(s->wbio);
    s->rbio = s->wbio = NULL;
    stream_fail(s, JR_ENOMEM, "cannot start TLS: out of memory");
    return;
  }
  BIO_set_mem_eof_return(s->rbio, -1);    /* empty means "wait", not end of stream */
  BIO_set_mem_eof_return(s->wbio, -1);
  SSL_set_bio(s->ssl, s->rbio, s->wbio);
  SSL_set_connect_state(s->ssl);
  int ip = is_ip(s->name);
  if (!ip) SSL_set_tlsext_host_name(s->ssl, s->name);
  if (!jr_tls_insecure(s->tls)) {
    int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), s->name)
                : SSL_set1_host(s->ssl, s->name);
    if (!ok) {
      stream_fail(s, JR_ETLS, "cannot check the server's certificate against the name '%s'", s->name);
      return;
    }
  }
  tls_step(s);
}

/* Connects to the next address of the list (TCP). */
static void tcp_attempt(jr_stream *s) {
  struct addrinfo *ai = s->ai_next;
  s->ai_next = ai->ai_next;
  int rc = uv_tcp_init(jr_H.loop, &s->io.tcp);
  if (rc < 0) {
    fail_later(s, JR_ECONNREFUSED, uv_why(rc));
    return;
  }
  s->io.handle.data = s;
  s->io_inited = 1;
  s->refs++;
  uv_tcp_nodelay(&s->io.tcp, 1);
  uv_tcp_keepalive(&s->io.tcp, 1, 60);
  s->creq.data = s;
  rc = uv_tcp_connect(&s->creq, &s->io.tcp, ai->ai_addr, on_connected);
  if (rc < 0) {
    if (s->ai_next) {
      s->retry_next = 1;
      uv_close(&s->io.handle, on_io_closed);
    } else {
      fail_later(s, JR_ECONNREFUSED, uv_why(rc));
    }
    return;
  }
  s->refs++;
  s->state = S_CONNECTING;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  jr_stream *s = req->data;
  s->refs--;
  if (s->state == S_CLOSED) {
    if (res) uv_freeaddrinfo(res);
    stream_free_if_done(s);
    return;
  }
  if (status < 0 || res == NULL) {
    if (res) uv_freeaddrinfo(res);
    stream_fail(s, JR_ECONNREFUSED, "cannot resolve the host name '%s': %s", s->host,
                status < 0 ? uv_strerror(status) : "no address");
    return;
  }
  s->ai_list = s->ai_next = res;
  tcp_attempt(s);
}

/* Opens a stream to o's address and returns it; the owner hears back
 * through h (connected, data, failed: never from inside this call). Returns
 * NULL only when out of memory (err says so). Strings in o are copied. */
jr_stream *jr_stream_open(const jr_stream_opts *o, const jr_stream_handler *h, void *owner,
                          char *err, size_t errlen) {
  jr_stream *s = calloc(1, sizeof *s);
  if (s == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  s->owner = owner;
  s->h = h;
  s->tls = o->tls;
  s->timeout_ms = o->timeout_ms;
  s->port = o->port;
  s->host = o->host ? strdup(o->host) : NULL;
  s->path = o->path ? strdup(o->path) : NULL;
  const char *name = o->server_name ? o->server_name : (o->host ? o->host : "");
  s->name = strdup(name);
  snprintf(s->addr, sizeof s->addr, "%s", o->addr ? o->addr : name);
  if (s->name == NULL || (o->host && s->host == NULL) || (o->path && s->path == NULL)) {
    free(s->host);
    free(s->path);
    free(s->name);
    free(s);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  uv_timer_init(jr_H.loop, &s->timer);
  uv_unref((uv_handle_t *)&s->timer);
  s->timer.data = s;
  s->refs++;
  if (s->timeout_ms > 0) uv_timer_start(&s->timer, on_timer, (uint64_t)s->timeout_ms, 0);
  if (s->path) {
    uv_pipe_init(jr_H.loop, &s->io.pipe, 0);
    s->io.handle.data = s;
    s->io_inited = 1;
    s->refs++;
    s->creq.data = s;
    s->state = S_CONNECTING;
    uv_pipe_connect(&s->creq, &s->io.pipe, s->path, on_connected);
    s->refs++;
    return s;
  }
  char port[16];
  snprintf(port, sizeof port, "%d", s->port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  if (is_ip(s->host)) {
    /* An address literal needs no resolver thread: getaddrinfo answers at once. */
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(s->host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
      s->state = S_CONNECTING;
      fail_later(s, JR_ECONNREFUSED, gai_strerror(rc));
      return s;
    }
    /* getaddrinfo's list is freed with freeaddrinfo, which uv_freeaddrinfo calls */
    s->ai_list = s->ai_next = res;
    tcp_attempt(s);
    return s;
  }
  s->state = S_RESOLVING;
  s->gai.data = s;
  int rc = uv_getaddrinfo(jr_H.loop, &s->gai, on_resolved, s->host, port, &hints);
  if (rc < 0) {
    char m[400];
    snprintf(m, sizeof m, "cannot resolve the host name '%s': %s", s->host, uv_strerror(rc));
    fail_later(s, JR_ECONNREFUSED, m);
    return s;
  }
  s->refs++;
  return s;
}

/* ---- writing -------------------------------------------------------------- */

/* A uv_write finished: the wire buffer is free; send what queued meanwhile. */
static void on_written(uv_write_t *req, int status) {
  jr_stream *s = req->data;
  s->refs--;
  s->writing = 0;
  buf_emptied(&s->wire);
  if (s->state == S_CLOSED) {
    stream_free_if_done(s);
    return;
  }
  if (status < 0) {
    stream_fail_io(s, status, "cannot write to the socket");
    return;
  }
  stream_send(s, 1);
}

/* Sends what is queued: encrypts `out` under TLS, writes what the socket
 * takes, hands the rest to uv_write. report=0 (an early write, inside the
 * owner's code): an error is kept for the end-of-turn flush to report. */
static void stream_send(jr_stream *s, int report) {
  if (s->state != S_OPEN && s->state != S_HANDSHAKE) return;
  if (s->write_err) {
    if (report) stream_fail_io(s, s->write_err, "cannot write to the socket");
    return;
  }
  jr_buf *src = &s->out;
  if (s->ssl) {
    if (s->state == S_OPEN && s->out.len > 0) {
      ERR_clear_error();
      int n = SSL_write(s->ssl, s->out.data, (int)s->out.len);
      if (n <= 0) {
        if (!report) return;
        char msg[600];
        jr_tls_read_error(s->ssl, SSL_get_error(s->ssl, n), msg, sizeof msg);
        stream_fail(s, JR_ETLS, "%s", msg);
        return;
      }
      buf_emptied(&s->out);
    }
    if (tls_drain(s) != 0) {
      if (report) stream_fail(s, JR_ENOMEM, "out of memory");
      return;
    }
    src = &s->tx;
  } else if (s->state != S_OPEN) {
    return;
  }
  if (s->writing || src->len == 0) return;
  uv_buf_t b = uv_buf_init(src->data, (unsigned)src->len);
  int n = uv_try_write(&s->io.stream, &b, 1);
  if (n == UV_EAGAIN || n == UV_ENOSYS) n = 0;
  if (n < 0) {
    s->write_err = n;
    if (report) stream_fail_io(s, n, "cannot write to the socket");
    return;
  }
  if ((size_t)n == src->len) {
    buf_emptied(src);
    return;
  }
  /* The rest goes through uv_write from `wire`, which nothing appends to
   * until its callback: swap the buffers instead of copying. */
  jr_buf tmp = s->wire;
  s->wire = *src;
  *src = tmp;
  src->len = 0;
  b = uv_buf_init(s->wire.data + n, (unsigned)(s->wire.len - (size_t)n));
  s->wreq.data = s;
  int rc = uv_write(&s->wreq, &s->io.stream, &b, 1, on_written);
  if (rc < 0) {
    s->write_err = rc;
    if (report) stream_fail_io(s, rc, "cannot write to the socket");
    return;
  }
  s->writing = 1;
  s->refs++;
}

/* Once per loop turn, before the loop polls: writes every listed stream. */
static void on_flush(uv_prepare_t *h) {
  while (flush_head) {
    jr_stream *s = flush_head;
    flush_head = s->flush_next;
    s->flush_listed = 0;
    stream_send(s, 1);            /* may fail the stream, which runs the owner's code */
  }
  uv_prepare_stop(h);
}

/* Room for n more bytes of output; NULL when out of memory. Write at most
 * n bytes there, then jr_stream_commit the number written. */
char *jr_stream_reserve(jr_stream *s, size_t n) {
  if (buf_grow(&s->out, n) != 0) return NULL;
  return s->out.data + s->out.len;
}

/* n bytes were written at jr_stream_reserve's pointer: they leave at the
 * end of this loop turn (or with an earlier jr_stream_flush). Output queued
 * before the stream is open waits for it. */
void jr_stream_commit(jr_stream *s, size_t n) {
  s->out.len += n;
  if (s->flush_listed || s->state == S_CLOSED) return;
  if (!flush_inited) {
    uv_prepare_init(jr_H.loop, &flush_prep);   /* data NULL: the shutdown walk closes it */
    uv_unref((uv_handle_t *)&flush_prep);
    flush_inited = 1;
  }
  if (uv_is_closing((uv_handle_t *)&flush_prep)) {
    stream_send(s, 0);            /* shutting down: no more loop turns to wait for */
    return;
  }
  s->flush_next = flush_head;
  flush_head = s;
  s->flush_listed = 1;
  uv_prepare_start(&flush_prep, on_flush);
}

/* Writes what is queued now instead of at the end of the turn. Never calls
 * the owner: a failure is reported by the end-of-turn flush. */
void jr_stream_flush(jr_stream *s) { stream_send(s, 0); }

/* ---- accessors ------------------------------------------------------------ */

void *jr_stream_owner(const jr_stream *s) { return s->owner; }

/* The socket's file descriptor, or -1 (not connected). */
int jr_stream_fd(const jr_stream *s) {
  uv_os_fd_t fd;
  if (!s->io_inited || uv_fileno(&s->io.handle, &fd) != 0) return -1;
  return fd;
}

/* The owner's setup is done: the connect deadline no longer applies. */
void jr_stream_ready(jr_stream *s) {
  s->ready = 1;
  if (s->state != S_CLOSED && !s->late_msg) uv_timer_stop(&s->timer);
}

/* At shutdown: nothing to flush at the end of a turn any more. */
void jr_stream_shutdown(void) {
  while (flush_head) {
    jr_stream *s = flush_head;
    flush_head = s->flush_next;
    s->flush_listed = 0;
  }
}
