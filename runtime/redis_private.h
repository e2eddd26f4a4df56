/* redis_private.h - what the files of the Redis client share.
 *
 * The client is built in layers, one file each (as luv splits its files):
 *   redis_reader.c  RESP replies parsed by hiredis' redisReader, built
 *                   straight into Lua values on a "stage" thread;
 *   redis_stream.c  one socket on the libuv loop (TCP with non-blocking DNS
 *                   and a connect deadline, or a unix socket), TLS through
 *                   OpenSSL memory BIOs, writes coalesced per loop turn;
 *   redis_tls.c     OpenSSL contexts (CA, client certificate, verification)
 *                   and the words for a failed handshake;
 *   redis_conn.c    the connection object Lua sees: one command link and one
 *                   subscriber link, requests matched to replies in order,
 *                   setup (AUTH, SELECT, ROLE, PING), deadlines, reconnects
 *                   with backoff, failover (READONLY, LOADING, a resolver);
 *   redis_pubsub.c  the subscriber link: SUBSCRIBE/UNSUBSCRIBE bookkeeping,
 *                   messages dispatched to Lua functions, resubscription.
 * A connection talks to one node: routing (Sentinel today, Cluster next) is
 * done above it, in Lua, through the resolver hook and conn:_reset().
 *
 * Errors are jr_errno_t codes (private.h); text for people goes beside them.
 */
#ifndef JR_REDIS_PRIVATE_H
#define JR_REDIS_PRIVATE_H

#include "private.h"

#include <hiredis/read.h>
#include <openssl/ssl.h>

/* ---- redis_reader.c ------------------------------------------------------ */

/* A reply reader: bytes in, one Lua value per reply out. The value of the
 * reply last completed is alone on `stage`; what it is at its root is
 * described by type/str/len/integer/elements (str points into the Lua
 * string on stage: valid until the stage is cleared). */
typedef struct jr_reader {
  redisReader *r;
  lua_State *stage;      /* thread on which values are built */
  int stage_ref;         /* registry ref keeping stage alive */
  int type;              /* REDIS_REPLY_* of the root */
  const char *str;       /* root string, status or error */
  size_t len;
  long long integer;     /* root integer */
  size_t elements;       /* root array length */
  int feeding;           /* inside jr_reader_next: the reader must not be replaced */
  int root_ref;          /* LUA_NOREF, or a table reused for every root array (see jr_reader_reuse_root) */
  char dummy;            /* what the element functions return to hiredis */
} jr_reader;

int jr_reader_init(jr_reader *rd);
void jr_reader_reuse_root(jr_reader *rd);
int jr_reader_reset(jr_reader *rd);
void jr_reader_free(jr_reader *rd);
int jr_reader_feed(jr_reader *rd, const char *buf, size_t len);
int jr_reader_next(jr_reader *rd);
const char *jr_reader_error(const jr_reader *rd);

/* ---- redis_tls.c --------------------------------------------------------- */

typedef struct jr_tls jr_tls;   /* one SSL_CTX with its options; cached, never freed before exit */

jr_tls *jr_tls_get(const char *ca, const char *cert, const char *key, int insecure, char *err,
                   size_t errlen);
SSL_CTX *jr_tls_ctx(const jr_tls *t);
int jr_tls_insecure(const jr_tls *t);
void jr_tls_handshake_error(SSL *ssl, int ssl_err, const char *name, char *out, size_t n);
void jr_tls_read_error(SSL *ssl, int ssl_err, char *out, size_t n);
void jr_tls_free_all(void);

/* ---- redis_stream.c ------------------------------------------------------ */

typedef struct jr_stream jr_stream;

/* What a stream tells its owner. None is called after jr_stream_close; each
 * may call jr_stream_close on its own stream. */
typedef struct jr_stream_handler {
  void (*connected)(jr_stream *s);                          /* socket (and TLS) up */
  void (*data)(jr_stream *s, const char *buf, size_t len);  /* bytes from the server */
  void (*failed)(jr_stream *s, jr_errno_t code, const char *msg);  /* the stream is done */
} jr_stream_handler;

typedef struct jr_stream_opts {
  const char *host;          /* name or address literal (TCP) */
  int port;
  const char *path;          /* unix socket path instead of host/port */
  const jr_tls *tls;         /* NULL: no TLS */
  const char *server_name;   /* name the certificate must carry (and SNI); NULL: host */
  const char *addr;          /* how messages name the server, e.g. "10.0.0.1:6379" */
  double timeout_ms;         /* deadline to connect (and set up: see jr_stream_ready); 0 none */
} jr_stream_opts;

jr_stream *jr_stream_open(const jr_stream_opts *o, const jr_stream_handler *h, void *owner,
                          char *err, size_t errlen);
void jr_stream_close(jr_stream *s);
void *jr_stream_owner(const jr_stream *s);
char *jr_stream_reserve(jr_stream *s, size_t n);
void jr_stream_commit(jr_stream *s, size_t n);
void jr_stream_flush(jr_stream *s);
int jr_stream_fd(const jr_stream *s);
void jr_stream_ready(jr_stream *s);
void jr_stream_shutdown(void);

/* ---- redis_conn.c -------------------------------------------------------- */

typedef struct jr_conn jr_conn;
typedef struct jr_link jr_link;
typedef struct jr_req jr_req;

enum { REQ_CALL, REQ_SETUP, REQ_SUB, REQ_UNSUB };
enum { STEP_AUTH, STEP_SELECT, STEP_ROLE, STEP_PING };
enum { L_DOWN, L_CONNECTING, L_UP, L_CLOSED };

/* One command sent and not answered yet. Requests of a link form a FIFO:
 * Redis answers in order, so the head owns the next reply. */
struct jr_req {
  jr_req *next;                 /* the link's FIFO; the free pool */
  jr_req *dl_prev, *dl_next;    /* the connection's deadline list */
  jr_link *link;
  double deadline;              /* uv_now() ms; 0: none */
  int kind;                     /* REQ_* */
  int co_ref;                   /* parked caller (REQ_CALL, REQ_SUB); LUA_NOREF: none or given up */
  int step;                     /* REQ_SETUP: STEP_* */
  char *chan;                   /* REQ_SUB, REQ_UNSUB: the channel (malloc'd) */
  size_t chanlen;
  char cmd[24];                 /* command name, for messages */
};

/* One socket's worth of a connection: the command link or the subscriber
 * link. Down, it waits on retry_t; each attempt opens a new stream. */
struct jr_link {
  jr_conn *c;
  int is_sub;
  int state;                    /* L_* */
  jr_stream *s;                 /* NULL unless connecting or up */
  jr_reader rd;
  jr_req *head, *tail;          /* sent, unanswered, in order */
  int inflight;                 /* REQ_CALL requests in the FIFO */
  int unflushed;                /* calls queued since the last early write */
  int same_cpu;                 /* see link_on_our_cpu */
  uint64_t cpu_asked_at;
  double backoff;               /* ms of the last retry delay; 0 after success */
  uv_timer_t retry_t;
  int waiting_target;           /* waits for the resolver's address */
  int down;                     /* counted in the outage table */
  int ever_up;
  int ups;                      /* times it came up */
  int lost_failover;            /* last lost to READONLY, LOADING or a wrong role */
  jr_errno_t lastcode;
  char lasterr[300];            /* why it is down */
};

struct jr_conn {
  jr_link cmd, sub;
  char *host, *path;            /* current target (the resolver may change it) */
  int port;
  char addr[300];               /* "host:port" or "unix:///path", for messages */
  char *user, *password, *server_name, *label;
  int db;
  jr_tls *tls;
  int want_master;              /* ROLE must answer master (Sentinel) */
  double timeout;               /* default per-call deadline, seconds; 0 none */
  double connect_timeout;       /* seconds to connect and set up a link */
  int resolver_ref;             /* Lua fn(conn) that calls conn:_target(...); LUA_NOREF: none */
  int resolving;
  double resolve_at;            /* uv_now() ms when the resolver was last asked */
  int connect_ref;              /* coroutine in conn:_connect(), LUA_NOREF otherwise */
  int subs_ref;                 /* registry table channel -> fn */
  int subwait_ref;              /* registry table channel -> coroutine waiting in subscribe */
  int resub_ref;                /* registry table channel -> true: resubscribed, not yet confirmed */
  uv_timer_t deadline_t;
  jr_req *dl_head;
  int handles_open;             /* of retry_t x2 and deadline_t */
  int busy;                     /* inside one of its callbacks: free later */
  int closed, collected;
  jr_conn *next_conn;
};

void jr_req_free(jr_req *q);
jr_req *jr_req_new(jr_link *l, int kind, const char *cmd, size_t cmdlen);
int jr_link_send(jr_link *l, int argc, const char **argv, const size_t *lens);
jr_req *jr_link_request(jr_link *l, int kind, int argc, const char **argv, const size_t *lens);
void jr_link_start(jr_link *l);
void jr_link_healthy(jr_link *l);
void jr_link_lost(jr_link *l, jr_errno_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void jr_conn_maybe_free(jr_conn *c);
int jr_push_err(lua_State *L, jr_errno_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int jr_push_redis_err(lua_State *L, lua_State *stage, const char *msg, size_t len);

/* ---- redis_pubsub.c ------------------------------------------------------ */

void jr_pubsub_up(jr_conn *c);
void jr_pubsub_reply(jr_link *l);
int jr_pubsub_subscribe(lua_State *L, jr_conn *c);
int jr_pubsub_unsubscribe(lua_State *L, jr_conn *c);
void jr_pubsub_fail_waiters(jr_conn *c, jr_errno_t code, const char *why);

#endif
