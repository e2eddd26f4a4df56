/* redis_conn.c - the Redis connection object Lua sees (jobrt.core.redis).
 *
 * A connection talks to one Redis node over two links: the command link,
 * opened by conn:_connect(), and the subscriber link, opened by the first
 * conn:subscribe() (redis_pubsub.c). Each link is a stream (redis_stream.c)
 * and a reader (redis_reader.c) with a FIFO of the requests it sent: Redis
 * answers in order, so the head of the FIFO owns the next reply. A reply
 * with no request waiting for it, or bytes that are not RESP2 (a RESP3 push,
 * a fake or broken server), close the link with EPROTO: every pending call
 * gets an error, nothing aborts.
 *
 * Calls: conn:call() formats the command straight into the stream's output
 * (sent at the end of the loop turn, or early in groups: see count_call),
 * parks the calling coroutine in a request, and the reply resumes it with
 * the Lua value the reader built. Errors come back luv's way: nil,
 * "CODE: message", "CODE"; a Redis error reply is nil, the message as Redis
 * sent it, "EREDIS" and its first word ("NOSCRIPT", "READONLY", ...).
 * Commands that would turn the link into a stream of unasked replies
 * (SUBSCRIBE and its family, MONITOR, CLIENT REPLY OFF|SKIP, HELLO 3, ...)
 * are refused before anything is sent.
 *
 * Setup: every new link sends AUTH [user] password (when given), SELECT
 * (command link, db != 0), ROLE (when the node must be a primary: Sentinel)
 * and PING, pipelined; the PING's answer makes the link up. LOADING (Redis
 * replaying its AOF or RDB) is waited out, logged once at info level.
 *
 * Lost links: pending calls get nil, "ECONN: ..." (calls made while down
 * fail at once), and the link reconnects with exponential backoff (50 ms
 * doubling to 5 s, with jitter); the log says so once per outage of an
 * address, not once per retry. A READONLY reply (the node became a replica:
 * a failover) or LOADING on an up link makes the connection drop its links
 * and reconnect. With a resolver (Sentinel, in Lua), every reconnect first
 * asks it for the address: C calls resolver(conn) in a coroutine and waits
 * for conn:_target(host, port) or conn:_target(nil, message, code).
 *
 * Deadlines: calls with a deadline are kept on a list; one timer per
 * connection fires at the earliest and resumes the late callers with
 * nil, "ETIMEDOUT: ...". Their replies, when they come, are dropped.
 *
 * Memory: the C struct lives outside Lua. It is freed when the Lua object
 * has been collected (or the host shuts down), it is closed, its three
 * timers are closed and none of its callbacks is running (busy == 0).
 */
#define _GNU_SOURCE                /* sched_getcpu */
#include "redis_private.h"

#include <ctype.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

typedef struct {
  jr_conn *c;
} jr_conn_ud;

static const char CONN_MT[] = "jobrt.redis.conn";
static const void *conn_mt;      /* the metatable of connection objects */
static jr_conn *all_conns;
static int objs_ref = LUA_NOREF; /* registry: weak table lightuserdata(c) -> connection object */

/* ---- errors to Lua -------------------------------------------------------- */

/* Pushes nil, "CODE: text", "CODE" and returns 3. */
int jr_push_err(lua_State *L, jr_errno_t code, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", jr_err_name(code), buf);
  lua_pushstring(L, jr_err_name(code));
  return 3;
}

/* A Redis error reply: moves the message (on top of stage; msg/len point
 * into it) to L and pushes nil, message, "EREDIS", first word. Returns 4. */
int jr_push_redis_err(lua_State *L, lua_State *stage, const char *msg, size_t len) {
  lua_pushnil(L);
  lua_xmove(stage, L, 1);
  lua_pushliteral(L, "EREDIS");
  size_t k = 0;
  while (k < len && k < 40 && msg[k] != ' ') k++;
  lua_pushlstring(L, msg, k);
  return 4;
}

/* Whether an error reply's first word is word. */
static int err_is(const char *msg, size_t len, const char *word) {
  size_t n = strlen(word);
  return len >= n && memcmp(msg, word, n) == 0 && (len == n || msg[n] == ' ');
}

/* ---- requests ------------------------------------------------------------- */

/* Free requests kept for reuse: a pipelined call costs no malloc/free. */
static jr_req *req_pool;
static int req_pool_n;

/* A request for link l, not yet in its FIFO; NULL when out of memory. */
jr_req *jr_req_new(jr_link *l, int kind, const char *cmd, size_t cmdlen) {
  jr_req *q = req_pool;
  if (q) {
    req_pool = q->next;
    req_pool_n--;
  } else if ((q = malloc(sizeof *q)) == NULL) {
    return NULL;
  }
  q->next = q->dl_prev = q->dl_next = NULL;
  q->link = l;
  q->deadline = 0;
  q->kind = kind;
  q->co_ref = LUA_NOREF;
  q->step = -1;
  q->chan = NULL;
  q->chanlen = 0;
  size_t n = cmdlen < sizeof q->cmd - 1 ? cmdlen : sizeof q->cmd - 1;
  memcpy(q->cmd, cmd, n);
  q->cmd[n] = '\0';
  return q;
}

/* Returns q (out of every list, its caller already resumed or dropped) to
 * the pool. */
void jr_req_free(jr_req *q) {
  free(q->chan);
  if (req_pool_n >= 1024 || jr_H.lua_closing) {
    free(q);
    return;
  }
  q->next = req_pool;
  req_pool = q;
  req_pool_n++;
}

/* Frees the pool and the TLS contexts (at exit, after lua_close). */
void jr_redis_pool_free(void) {
  while (req_pool) {
    jr_req *q = req_pool;
    req_pool = q->next;
    free(q);
  }
  req_pool_n = 0;
  jr_tls_free_all();
}

static void link_push(jr_link *l, jr_req *q) {
  if (l->tail) l->tail->next = q;
  else l->head = q;
  l->tail = q;
}

static jr_req *link_pop(jr_link *l) {
  jr_req *q = l->head;
  l->head = q->next;
  if (l->head == NULL) l->tail = NULL;
  q->next = NULL;
  return q;
}

/* Writes n as decimal at p; returns the number of bytes written. */
static size_t put_uint(char *p, size_t n) {
  char tmp[24];
  size_t k = 0;
  do {
    tmp[k++] = (char)('0' + n % 10);
    n /= 10;
  } while (n);
  for (size_t i = 0; i < k; i++) p[i] = tmp[k - 1 - i];
  return k;
}

/* Formats argv as one RESP command straight into l's output (hiredis'
 * formatting went through sdscatfmt and was the largest cost of a pipelined
 * call). Returns 0, or -1 out of memory (nothing queued). */
int jr_link_send(jr_link *l, int argc, const char **argv, const size_t *lens) {
  size_t total = 1 + 20 + 2;
  for (int i = 0; i < argc; i++) total += 1 + 20 + 2 + lens[i] + 2;
  char *buf = jr_stream_reserve(l->s, total);
  if (buf == NULL) return -1;
  char *p = buf;
  *p++ = '*';
  p += put_uint(p, (size_t)argc);
  *p++ = '\r';
  *p++ = '\n';
  for (int i = 0; i < argc; i++) {
    *p++ = '$';
    p += put_uint(p, lens[i]);
    *p++ = '\r';
    *p++ = '\n';
    memcpy(p, argv[i], lens[i]);
    p += lens[i];
    *p++ = '\r';
    *p++ = '\n';
  }
  jr_stream_commit(l->s, (size_t)(p - buf));
  return 0;
}

/* Sends a command on l and queues its request; returns it, or NULL out of
 * memory (nothing sent). */
jr_req *jr_link_request(jr_link *l, int kind, int argc, const char **argv, const size_t *lens) {
  jr_req *q = jr_req_new(l, kind, argv[0], lens[0]);
  if (q == NULL) return NULL;
  if (jr_link_send(l, argc, argv, lens) != 0) {
    jr_req_free(q);
    return NULL;
  }
  link_push(l, q);
  return q;
}

/* ---- deadline list -------------------------------------------------------- */

static void dl_unlink(jr_conn *c, jr_req *q) {
  if (q->deadline == 0) return;
  if (q->dl_prev) q->dl_prev->dl_next = q->dl_next;
  else c->dl_head = q->dl_next;
  if (q->dl_next) q->dl_next->dl_prev = q->dl_prev;
  q->dl_prev = q->dl_next = NULL;
  q->deadline = 0;
}

static void dl_arm(jr_conn *c);

/* The deadline timer: resumes every caller whose deadline passed with nil,
 * "ETIMEDOUT: ...", "ETIMEDOUT"; their requests stay in the FIFO, given up,
 * so the replies (when they come) are matched and dropped. */
static void on_deadline(uv_timer_t *t) {
  jr_conn *c = t->data;
  double now = (double)uv_now(jr_H.loop);
  c->busy++;
  /* Resuming a caller may run anything (close the connection, which fails
   * and frees the other requests): find the next late one from the head
   * each time. */
  for (;;) {
    jr_req *q = c->dl_head;
    while (q && q->deadline > now) q = q->dl_next;
    if (q == NULL) break;
    dl_unlink(c, q);
    lua_State *co = jr_unref_thread(q->co_ref);
    q->co_ref = LUA_NOREF;            /* stays in the FIFO: its reply is dropped */
    jr_push_err(co, JR_ETIMEDOUT, "redis at %s did not answer %s in time", c->addr, q->cmd);
    jr_resume(co, 3);
  }
  dl_arm(c);
  c->busy--;
  jr_conn_maybe_free(c);
}

/* Arms the deadline timer for the earliest deadline on the list. */
static void dl_arm(jr_conn *c) {
  if (c->closed || uv_is_closing((uv_handle_t *)&c->deadline_t)) return;
  double first = 0;
  for (jr_req *q = c->dl_head; q; q = q->dl_next)
    if (first == 0 || q->deadline < first) first = q->deadline;
  if (first == 0) {
    uv_timer_stop(&c->deadline_t);
    return;
  }
  double now = (double)uv_now(jr_H.loop);
  uv_timer_start(&c->deadline_t, on_deadline, first > now ? (uint64_t)(first - now) : 0, 0);
}

/* ---- outages: logged once per address, not once per retry ----------------- */

/* One entry per outage: made when the first link to an address goes down,
 * dropped when the last of those links is up again (or closed). Every link
 * of every connection to that address shares it, so a worker with a dozen
 * connections logs one line when Redis goes away and one when it is back. */
typedef struct outage {
  struct outage *next;
  int links;                     /* links down that refer to it */
  int back;                      /* "reconnected" was logged */
  int loading, readonly;         /* those were logged */
  double since;                  /* uv_now() ms */
  char addr[300];
} outage;

static outage *outages;

/* The links point at their outage through this side table: link -> entry. */
typedef struct down_link {
  struct down_link *next;
  jr_link *l;
  outage *o;
  int first;                     /* the link had never been up: it is ready, not back */
} down_link;

static down_link *down_links;

/* The outage l is counted in, or NULL when it is not down. */
static outage *outage_for(jr_link *l) {
  for (down_link *d = down_links; d; d = d->next)
    if (d->l == l) return d->o;
  return NULL;
}

/* l is down: joins (or starts, logging why at level) the outage of its
 * address. Returns the outage, NULL when out of memory. */
static outage *link_mark_down(jr_link *l, int level, const char *why) {
  outage *o = outage_for(l);
  if (o) return o;
  for (o = outages; o; o = o->next)
    if (strcmp(o->addr, l->c->addr) == 0) break;
  if (o == NULL) {
    o = calloc(1, sizeof *o);
    if (o == NULL) return NULL;
    snprintf(o->addr, sizeof o->addr, "%s", l->c->addr);
    o->since = (double)uv_now(jr_H.loop);
    o->next = outages;
    outages = o;
    if (level >= 0)
      jr_log(level, "lost connection to redis at %s (%s); reconnecting with backoff", o->addr, why);
  }
  down_link *d = malloc(sizeof *d);
  if (d == NULL) return o;
  d->l = l;
  d->o = o;
  d->first = !l->ever_up;
  d->next = down_links;
  down_links = d;
  o->links++;
  l->down = 1;
  return o;
}

/* l is up again (logged: 1) or closed (0): leaves its outage. */
static void link_mark_up(jr_link *l, int log) {
  if (!l->down) return;
  l->down = 0;
  down_link **pp = &down_links;
  while (*pp && (*pp)->l != l) pp = &(*pp)->next;
  if (*pp == NULL) return;
  down_link *d = *pp;
  *pp = d->next;
  outage *o = d->o;
  int first = d->first;
  free(d);
  if (log && !o->back) {
    double secs = ((double)uv_now(jr_H.loop) - o->since) / 1000.0;
    if (first)
      jr_log(1, "redis at %s is ready after %.1f s", l->c->addr, secs);
    else if (strcmp(o->addr, l->c->addr) == 0)
      jr_log(1, "reconnected to redis at %s after %.1f s", o->addr, secs);
    else
      jr_log(1, "reconnected to redis at %s (was %s) after %.1f s", l->c->addr, o->addr, secs);
    o->back = 1;
  }
  if (--o->links > 0) return;
  outage **op = &outages;
  while (*op && *op != o) op = &(*op)->next;
  if (*op) *op = o->next;
  free(o);
}

/* ---- links ---------------------------------------------------------------- */

static void link_on_data(jr_stream *s, const char *buf, size_t len);
static void link_on_failed(jr_stream *s, jr_errno_t code, const char *msg);
static const jr_stream_handler link_handler = {NULL, link_on_data, link_on_failed};

static void conn_close(jr_conn *c);
static void conn_resolve(jr_conn *c);
static void link_schedule(jr_link *l);
static void link_lost_ex(jr_link *l, jr_errno_t code, int level, const char *why);
static void link_loading(jr_link *l);

/* Resumes the coroutine waiting in conn:_connect() with nil, "CODE: cannot
 * connect to redis at ADDR: why", code, and closes the connection (a first
 * connect that fails does not keep trying). */
static void connect_failed(jr_conn *c, jr_errno_t code, const char *why) {
  lua_State *co = jr_unref_thread(c->connect_ref);
  c->connect_ref = LUA_NOREF;
  if (code == JR_EAUTH || code == JR_EROLE || code == JR_EPROTO)
    jr_push_err(co, code, "%s", why);
  else
    jr_push_err(co, code, "cannot connect to redis at %s: %s", c->addr, why);
  c->busy++;
  conn_close(c);
  jr_resume(co, 3);
  c->busy--;
  jr_conn_maybe_free(c);
}

/* Opens a new stream for l to the connection's current target and queues
 * the setup commands (sent once the socket is up). */
static void link_connect(jr_link *l) {
  jr_conn *c = l->c;
  if (c->closed || l->s) return;
  if (l->rd.feeding || jr_reader_reset(&l->rd) != 0) {   /* try again in a moment */
    link_schedule(l);
    return;
  }
  jr_stream_opts o;
  memset(&o, 0, sizeof o);
  o.host = c->host;
  o.port = c->port;
  o.path = c->path;
  o.tls = c->tls;
  o.server_name = c->server_name;
  o.addr = c->addr;
  o.timeout_ms = c->connect_timeout * 1000.0;
  char err[200];
  l->s = jr_stream_open(&o, &link_handler, l, err, sizeof err);
  if (l->s == NULL) {
    snprintf(l->lasterr, sizeof l->lasterr, "%s", err);
    l->lastcode = JR_ENOMEM;
    if (!l->is_sub && c->connect_ref != LUA_NOREF) connect_failed(c, JR_ENOMEM, err);
    else link_schedule(l);
    return;
  }
  l->state = L_CONNECTING;
  char dbs[24];
  const char *argv[3];
  size_t lens[3];
  int ok = 1;
  jr_req *q;
  if (c->password || c->user) {
    int n = 0;
    argv[n] = "AUTH", lens[n++] = 4;
    if (c->user) argv[n] = c->user, lens[n] = strlen(c->user), n++;
    argv[n] = c->password ? c->password : "", lens[n] = strlen(argv[n]), n++;
    ok = ok && (q = jr_link_request(l, REQ_SETUP, n, argv, lens)) && (q->step = STEP_AUTH, 1);
  }
  if (!l->is_sub && c->db != 0) {
    snprintf(dbs, sizeof dbs, "%d", c->db);
    argv[0] = "SELECT", lens[0] = 6, argv[1] = dbs, lens[1] = strlen(dbs);
    ok = ok && (q = jr_link_request(l, REQ_SETUP, 2, argv, lens)) && (q->step = STEP_SELECT, 1);
  }
  if (c->want_master) {
    argv[0] = "ROLE", lens[0] = 4;
    ok = ok && (q = jr_link_request(l, REQ_SETUP, 1, argv, lens)) && (q->step = STEP_ROLE, 1);
  }
  argv[0] = "PING", lens[0] = 4;
  ok = ok && (q = jr_link_request(l, REQ_SETUP, 1, argv, lens)) && (q->step = STEP_PING, 1);
  if (!ok) jr_link_lost(l, JR_ENOMEM, "out of memory");
}

/* Starts l (the subscriber link's first connect). */
void jr_link_start(jr_link *l) {
  if (l->state != L_DOWN || l->s || uv_is_active((uv_handle_t *)&l->retry_t)) return;
  link_connect(l);
}

/* A resolver that has not answered after this long is asked again (it may
 * have died on an error after its first yield). */
enum { RESOLVE_TIMEOUT_MS = 30000 };

/* l's retry timer: reconnects now, or first asks the resolver for the
 * address (arming a watchdog on its answer). */
static void on_retry(uv_timer_t *t) {
  jr_link *l = t->data;
  jr_conn *c = l->c;
  if (c->closed || l->s) return;
  if (c->resolver_ref != LUA_NOREF) {
    l->waiting_target = 1;
    conn_resolve(c);
    if (!c->closed && l->waiting_target && l->s == NULL)   /* the watchdog on the answer */
      uv_timer_start(&l->retry_t, on_retry, RESOLVE_TIMEOUT_MS, 0);
  } else {
    link_connect(l);
  }
}

/* Whether c has channels subscribed (its registry table channel -> fn is not
 * empty). */
static int has_subscriptions(jr_conn *c) {
  if (c->subs_ref == LUA_NOREF || c->subs_ref == LUA_REFNIL) return 0;
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->subs_ref);
  int any = 0;
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    if (lua_next(L, -2)) { any = 1; lua_pop(L, 2); }
  }
  lua_pop(L, 1);
  return any;
}

/* Arms l's retry: 50 ms after the first failure, doubling up to 5 s (1 s
 * when the node answers but cannot serve us: READONLY, LOADING, a replica
 * where a primary is wanted; reconnecting to it is cheap, and the new
 * primary should be found soon), each delay drawn within +-20% so that many
 * workers do not retry in step. */
static void link_schedule(jr_link *l) {
  if (l->c->closed) return;
  double cap = l->lost_failover ? 1000 : 5000;
  l->backoff = l->backoff > 0 ? l->backoff * 2 : 50;
  if (l->backoff > cap) l->backoff = cap;
  double delay = l->backoff * (0.8 + 0.4 * ((double)rand() / RAND_MAX));
  uv_timer_start(&l->retry_t, on_retry, (uint64_t)delay, 0);
  /* A coroutine waiting in conn:_connect() (through LOADING) is woken by this
   * timer: it keeps the loop alive then. So does the subscriber link while it
   * has subscriptions: connected, its socket kept the loop alive for the
   * messages someone waits for (a result awaited by `enqueue --wait`), and a
   * lost connection must not end the process before it is back. */
  int keep = l->is_sub ? has_subscriptions(l->c) : l->c->connect_ref != LUA_NOREF;
  if (keep) uv_ref((uv_handle_t *)&l->retry_t);
  else uv_unref((uv_handle_t *)&l->retry_t);
}

/* Resumes every request of list (already out of the link) with an error:
 * calls get nil, "CODE: connection to redis at ADDR lost before it
 * answered CMD (why)"; setup and subscription requests are just freed
 * (subscription waiters are failed by jr_pubsub_fail_waiters). */
static void fail_requests(jr_conn *c, jr_req *list, jr_errno_t code, const char *why) {
  while (list) {
    jr_req *q = list;
    list = q->next;
    dl_unlink(c, q);
    if (q->kind == REQ_CALL && q->co_ref != LUA_NOREF && !jr_H.lua_closing) {
      lua_State *co = jr_unref_thread(q->co_ref);
      jr_errno_t e = c->closed ? JR_ECLOSED : code;
      jr_push_err(co, e, "connection to redis at %s lost before it answered %s (%s)", c->addr,
                  q->cmd, why);
      jr_req_free(q);
      jr_resume(co, 3);
    } else {
      if (q->co_ref != LUA_NOREF && !jr_H.lua_closing) jr_drop_thread(jr_H.L, q->co_ref);
      jr_req_free(q);
    }
  }
}

/* Takes l down: closes its stream, fails what it had pending, and (unless
 * the connection is closed) reconnects with backoff, logging the outage
 * once; during the first conn:_connect() the caller gets the error instead.
 * code is what pending calls get: ECONN, or EPROTO/ETLS when that is why. */
static void link_lost_ex(jr_link *l, jr_errno_t code, int level, const char *why) {
  jr_conn *c = l->c;
  snprintf(l->lasterr, sizeof l->lasterr, "%s", why);
  l->lastcode = code;
  int was = l->state;
  if (l->s) {
    jr_stream_close(l->s);
    l->s = NULL;
  }
  if (l->state != L_CLOSED) l->state = L_DOWN;
  jr_req *list = l->head;
  l->head = l->tail = NULL;
  l->inflight = 0;
  l->unflushed = 0;
  c->busy++;
  jr_errno_t callcode = (code == JR_EPROTO || code == JR_ETLS) ? code : JR_ECONN;
  fail_requests(c, list, callcode, why);
  if (l->is_sub) jr_pubsub_fail_waiters(c, callcode, why);
  if (!c->closed) {
    if (!l->is_sub && c->connect_ref != LUA_NOREF && was == L_CONNECTING) {
      jr_errno_t cc = code == JR_ECONN ? JR_ECONNREFUSED : code;
      connect_failed(c, cc, why);
    } else {
      if (code == JR_EROLE) l->lost_failover = 1;
      link_mark_down(l, level, why);
      link_schedule(l);
    }
  }
  c->busy--;
  jr_conn_maybe_free(c);
}

/* link_lost_ex with a formatted reason, logged at warn level. */
void jr_link_lost(jr_link *l, jr_errno_t code, const char *fmt, ...) {
  char why[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  link_lost_ex(l, code, 2, why);
}

/* l got a real answer (a call's reply, a subscription): the outage it was
 * part of is over for it, and its next failure starts the backoff anew. */
void jr_link_healthy(jr_link *l) {
  l->backoff = 0;
  l->lost_failover = 0;
  if (l->down) link_mark_up(l, 1);
}

/* The stream of a link failed (could not connect, or was lost). */
static void link_on_failed(jr_stream *s, jr_errno_t code, const char *msg) {
  jr_link *l = jr_stream_owner(s);
  if (l->s != s) return;
  l->s = NULL;                   /* the stream closes itself after this */
  jr_link_lost(l, code, "%s", msg);
}

/* The link answered its setup: it is up. */
static void link_up(jr_link *l) {
  jr_conn *c = l->c;
  l->state = L_UP;
  jr_stream_ready(l->s);
  if (!l->lost_failover) {      /* after a failover, a real answer is the proof (jr_link_healthy) */
    l->backoff = 0;
    link_mark_up(l, 1);
  }
  l->ups++;
  if (l->is_sub) {
    jr_pubsub_up(c);
    l->ever_up = 1;
    return;
  }
  l->ever_up = 1;
  if (c->connect_ref != LUA_NOREF) {
    lua_State *co = jr_unref_thread(c->connect_ref);
    c->connect_ref = LUA_NOREF;
    lua_pushboolean(co, 1);
    jr_resume(co, 1);
  }
}

/* Redis is loading its dataset: expected after a restart. Says so once (at
 * info level) and tries again with backoff. */
static void link_loading(jr_link *l) {
  outage *o = link_mark_down(l, -1, "loading");
  if (o && !o->loading) {
    jr_log(1, "redis at %s is loading its dataset into memory (replaying its AOF or RDB after a "
              "restart): waiting for it", o->addr);
    o->loading = 1;
  }
}

/* A setup command was refused. LOADING and a replica where a primary is
 * wanted are retried; anything else is a configuration error: the first
 * connect fails with it, a reconnect logs it (once) and keeps trying, since
 * the server's configuration may be fixed meanwhile. */
static void setup_refused(jr_link *l, int step, const char *msg, size_t len) {
  jr_conn *c = l->c;
  char why[600];
  jr_errno_t code = JR_EAUTH;
  if (err_is(msg, len, "LOADING")) {
    if (l->s) {
      jr_stream_close(l->s);
      l->s = NULL;
    }
    jr_req *list = l->head;
    l->head = l->tail = NULL;
    fail_requests(c, list, JR_ECONN, "loading");
    l->state = L_DOWN;
    l->lost_failover = 1;
    snprintf(l->lasterr, sizeof l->lasterr, "the server is loading its dataset");
    l->lastcode = JR_ECONN;
    link_loading(l);
    link_schedule(l);
    return;
  }
  if (step == STEP_AUTH)
    snprintf(why, sizeof why, "redis at %s refused the connection setup: %.*s (check the user and "
             "password of the address: redis://USER:PASSWORD@host:port, or redis://:PASSWORD@... "
             "without an ACL user)", c->addr, (int)len, msg);
  else if (step == STEP_SELECT)
    snprintf(why, sizeof why, "redis at %s refused the connection setup: %.*s (check the database "
             "of the address: redis://host:port/DB)", c->addr, (int)len, msg);
  else if (err_is(msg, len, "NOAUTH"))
    snprintf(why, sizeof why, "redis at %s refused the connection setup: %.*s (it wants a "
             "password: redis://:PASSWORD@host:port, or redis://USER:PASSWORD@... for an ACL "
             "user)", c->addr, (int)len, msg);
  else if (err_is(msg, len, "NOPERM"))
    snprintf(why, sizeof why, "redis at %s refused the connection setup: %.*s (the ACL user "
             "needs +ping%s%s)", c->addr, (int)len, msg, c->db ? " +select" : "",
             c->want_master ? " +role" : "");
  else
    snprintf(why, sizeof why, "redis at %s refused the connection setup: %.*s", c->addr, (int)len,
             msg);
  jr_link_lost(l, code, "%s", why);
}

/* A reply to a setup command (on top of l's stage). */
static void setup_reply(jr_link *l, jr_req *q) {
  jr_reader *rd = &l->rd;
  int step = q->step;
  jr_req_free(q);
  if (rd->type == REDIS_REPLY_ERROR) {
    char msg[300];
    size_t len = rd->len < sizeof msg ? rd->len : sizeof msg - 1;
    memcpy(msg, rd->str, len);
    msg[len] = '\0';
    lua_settop(rd->stage, 0);
    setup_refused(l, step, msg, len);
    return;
  }
  if (step == STEP_ROLE) {
    char role[32] = "";
    if (rd->type == REDIS_REPLY_ARRAY && rd->elements >= 1) {
      lua_rawgeti(rd->stage, -1, 1);
      const char *r = lua_tostring(rd->stage, -1);
      if (r) snprintf(role, sizeof role, "%s", r);
    }
    lua_settop(rd->stage, 0);
    if (strcmp(role, "master") != 0) {
      jr_conn *c = l->c;
      jr_link_lost(l, JR_EROLE, "redis at %s is not the primary%s%s%s (ROLE answered '%s'): a "
                   "failover is under way", c->addr, c->label ? " of '" : "",
                   c->label ? c->label : "", c->label ? "'" : "", role);
    }
    return;
  }
  lua_settop(rd->stage, 0);
  if (step == STEP_PING) link_up(l);
}

/* Drops both links of c (pending calls get nil, "ECONN: ...") and
 * reconnects them, through the resolver when there is one: the node is not
 * the primary any more, or Sentinel announced a new one. The outage is
 * logged at level (-1: as loading, at info level). The links count as back
 * only once the node answers a call (or a subscription): a replica that
 * accepts the connection and then answers READONLY again is one outage. */
static void conn_failover(jr_conn *c, int level, const char *why) {
  jr_link *ls[] = {&c->cmd, &c->sub};
  for (int i = 0; i < 2; i++) {
    jr_link *l = ls[i];
    if (c->closed) return;
    if (l->state == L_UP || l->state == L_CONNECTING) {
      l->lost_failover = 1;
      link_lost_ex(l, JR_ECONN, level, why);
      if (level < 0 && !c->closed) link_loading(l);
    }
  }
}

/* Whether the calls on l may be written early: see count_call. */
static int link_on_our_cpu(jr_link *l) {
#ifdef SO_INCOMING_CPU
  uint64_t now = uv_now(jr_H.loop);
  if (now != l->cpu_asked_at) {
    int cpu = -1;
    socklen_t len = sizeof cpu;
    int fd = jr_stream_fd(l->s);
    l->cpu_asked_at = now;
    l->same_cpu = fd >= 0 && getsockopt(fd, SOL_SOCKET, SO_INCOMING_CPU, &cpu, &len) == 0 &&
                  cpu >= 0 && cpu == sched_getcpu();
  }
  return l->same_cpu;
#else
  (void)l;
  return 0;
#endif
}

/* Holding a turn's calls back until its end would make client and server
 * take turns: when one read resumes fifty callers, Redis would idle while
 * all fifty run, and they would idle while Redis answers. So calls are also
 * written in groups as they are made, and Redis works on one group while
 * the callers of the next run: with fifty coroutines on one connection,
 * bench/ping.lua goes 1.5 to 2 times faster on two cores. The calls in
 * flight are cut into equal groups of at most EARLY_WRITE_CALLS (fifty into
 * five of ten, thirty-two into four of eight): a short group left over would
 * cost a write and a read of its own on every round trip. That pays only
 * when Redis runs on another CPU; on ours each early write wakes it to
 * preempt us for a handful of commands (half the throughput there), so
 * early writes are skipped while the socket's data last came from our own
 * CPU (the kernel notes which CPU delivered it). */
enum { EARLY_WRITE_CALLS = 10 };

/* A call was queued on l: writes its group early when it is complete. */
static void count_call(jr_link *l) {
  int n = l->inflight, groups = (n + EARLY_WRITE_CALLS - 1) / EARLY_WRITE_CALLS;
  if (groups < 2 || ++l->unflushed < (n + groups - 1) / groups) return;
  l->unflushed = 0;
  if (!link_on_our_cpu(l)) jr_stream_flush(l->s);
}

/* A short description of the reply on l's stage, for messages. */
static void describe_reply(jr_reader *rd, char *out, size_t n) {
  switch (rd->type) {
  case REDIS_REPLY_STATUS:
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_ERROR:
    snprintf(out, n, "'%s%.*s%s'", rd->type == REDIS_REPLY_ERROR ? "-" : "",
             (int)(rd->len < 60 ? rd->len : 60), rd->str ? rd->str : "", rd->len > 60 ? "..." : "");
    break;
  case REDIS_REPLY_INTEGER:
    snprintf(out, n, "the integer %lld", rd->integer);
    break;
  case REDIS_REPLY_ARRAY:
    snprintf(out, n, "an array of %zu", rd->elements);
    break;
  default:
    snprintf(out, n, "a nil");
    break;
  }
}

/* A reply with nothing waiting for it: the server broke the protocol. */
static void unasked_reply(jr_link *l) {
  char what[120];
  describe_reply(&l->rd, what, sizeof what);
  lua_settop(l->rd.stage, 0);
  jr_link_lost(l, JR_EPROTO, "redis at %s sent a reply nobody asked for (%s): closing the "
               "connection", l->c->addr, what);
}

/* The reply to the call at the head of l's FIFO (on top of stage): resumes
 * its caller with it. READONLY and LOADING mean this node cannot serve us
 * now: the links are dropped and reconnected (the caller gets its error
 * after that, so its next call fails fast instead of going to this node). */
static void call_reply(jr_link *l) {
  jr_conn *c = l->c;
  jr_reader *rd = &l->rd;
  jr_req *q = link_pop(l);
  l->inflight--;
  int had_deadline = q->deadline != 0;
  dl_unlink(c, q);
  int failover = 0;
  if (rd->type == REDIS_REPLY_ERROR) {
    if (err_is(rd->str, rd->len, "READONLY")) failover = 1;
    else if (err_is(rd->str, rd->len, "LOADING")) failover = 2;
  } else {
    if (l->backoff != 0 || l->down) jr_link_healthy(l);
    if (q->step >= 0 && rd->type == REDIS_REPLY_STATUS) c->db = q->step;   /* SELECT n */
  }
  lua_State *co = NULL;
  int n = 0;
  if (q->co_ref != LUA_NOREF) {
    co = jr_unref_thread(q->co_ref);
    if (rd->type == REDIS_REPLY_ERROR) {
      n = jr_push_redis_err(co, rd->stage, rd->str, rd->len);
    } else {
      lua_xmove(rd->stage, co, 1);
      n = 1;
    }
  } else {
    lua_settop(rd->stage, 0);           /* its caller gave up after its deadline */
  }
  jr_req_free(q);
  if (failover) {
    c->busy++;
    if (failover == 1)
      conn_failover(c, 2, c->resolver_ref != LUA_NOREF
                              ? "it answered READONLY: it is a replica now; asking the sentinels "
                                "for the primary"
                              : "it answered READONLY: it is a replica now (a failover?)");
    else
      conn_failover(c, -1, "it answered LOADING: it is loading its dataset");
    if (had_deadline) dl_arm(c);
    if (co) jr_resume(co, n);
    c->busy--;
    jr_conn_maybe_free(c);
    return;
  }
  if (had_deadline) dl_arm(c);
  if (co) jr_resume(co, n);
}

/* Bytes from a link's stream: read every complete reply and give each to
 * the request at the head of the FIFO (or to pub/sub). */
static void link_on_data(jr_stream *s, const char *buf, size_t len) {
  jr_link *l = jr_stream_owner(s);
  jr_conn *c = l->c;
  if (jr_reader_feed(&l->rd, buf, len) != 0) {
    jr_link_lost(l, JR_ENOMEM, "out of memory reading a reply");
    return;
  }
  c->busy++;
  while (l->s == s) {
    int r = jr_reader_next(&l->rd);
    if (r == 0) break;
    if (r < 0) {
      jr_link_lost(l, JR_EPROTO, "redis at %s sent bytes that are not a RESP2 reply (%s): %s",
                   c->addr, jr_reader_error(&l->rd),
                   l->state == L_UP ? "closing the connection" : "is that a Redis server?");
      break;
    }
    jr_req *q = l->head;
    if (q && q->kind == REQ_SETUP) setup_reply(l, link_pop(l));
    else if (l->is_sub) jr_pubsub_reply(l);
    else if (q == NULL) unasked_reply(l);
    else call_reply(l);
  }
  c->busy--;
  jr_conn_maybe_free(c);
}

/* ---- resolver (Sentinel) -------------------------------------------------- */

/* Asks the resolver for the address to connect to: calls resolver(conn) in
 * a new coroutine, which answers through conn:_target(). One question at a
 * time; every link waiting gets the answer. */
static void conn_resolve(jr_conn *c) {
  if (c->closed || c->resolver_ref == LUA_NOREF || jr_H.shutting_down) return;
  if (c->resolving && (double)uv_now(jr_H.loop) - c->resolve_at < RESOLVE_TIMEOUT_MS) return;
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->resolver_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, objs_ref);
  lua_pushlightuserdata(L, c);
  lua_rawget(L, -2);
  lua_remove(L, -2);
  if (lua_isnil(L, -1)) {          /* the object is being collected */
    lua_pop(L, 2);
    return;
  }
  c->resolving = 1;
  c->resolve_at = (double)uv_now(jr_H.loop);
  jr_sched_spawn(L, 1);
  lua_pop(L, 1);
}

/* ---- lifecycle ------------------------------------------------------------ */

/* Close callbacks of the deadline timer and of the links' retry timers. */
static void timer_closed(uv_handle_t *h) {
  jr_conn *c = h->data;
  c->handles_open--;
  jr_conn_maybe_free(c);
}

static void retry_closed(uv_handle_t *h) {
  jr_link *l = h->data;
  l->c->handles_open--;
  jr_conn_maybe_free(l->c);
}

/* Frees c once nothing refers to it any more: closed, its timers closed,
 * no callback of it running, and the Lua object collected. */
void jr_conn_maybe_free(jr_conn *c) {
  if (!c->closed || c->handles_open > 0 || !c->collected || c->busy > 0) return;
  jr_conn **pp = &all_conns;
  while (*pp && *pp != c) pp = &(*pp)->next_conn;
  if (*pp) *pp = c->next_conn;
  jr_reader_free(&c->cmd.rd);
  jr_reader_free(&c->sub.rd);
  if (!jr_H.lua_closing) {
    luaL_unref(jr_H.L, LUA_REGISTRYINDEX, c->subs_ref);
    luaL_unref(jr_H.L, LUA_REGISTRYINDEX, c->subwait_ref);
    luaL_unref(jr_H.L, LUA_REGISTRYINDEX, c->resub_ref);
    if (c->resolver_ref != LUA_NOREF) luaL_unref(jr_H.L, LUA_REGISTRYINDEX, c->resolver_ref);
  }
  free(c->host);
  free(c->path);
  free(c->user);
  if (c->password) {
    memset(c->password, 0, strlen(c->password));
    free(c->password);
  }
  free(c->server_name);
  free(c->label);
  free(c);
}

/* Closes one link for good: its pending calls get ECLOSED. */
static void link_close(jr_link *l) {
  jr_conn *c = l->c;
  if (l->s) {
    jr_stream_close(l->s);
    l->s = NULL;
  }
  l->state = L_CLOSED;
  link_mark_up(l, 0);
  jr_req *list = l->head;
  l->head = l->tail = NULL;
  l->inflight = 0;
  fail_requests(c, list, JR_ECLOSED, "closed");
  if (!uv_is_closing((uv_handle_t *)&l->retry_t))
    uv_close((uv_handle_t *)&l->retry_t, retry_closed);
}

/* Closes c: stops reconnecting, closes both links (pending calls end with
 * nil, "ECLOSED: ..."), closes the timers. Idempotent. */
static void conn_close(jr_conn *c) {
  if (c->closed) {
    jr_conn_maybe_free(c);
    return;
  }
  c->closed = 1;
  c->busy++;
  link_close(&c->cmd);
  link_close(&c->sub);
  if (!jr_H.lua_closing) jr_pubsub_fail_waiters(c, JR_ECLOSED, "closed");
  if (c->connect_ref != LUA_NOREF) {
    if (jr_H.lua_closing) {
      c->connect_ref = LUA_NOREF;
    } else {
      lua_State *co = jr_unref_thread(c->connect_ref);
      c->connect_ref = LUA_NOREF;
      jr_push_err(co, JR_ECLOSED, "connection to redis at %s closed while connecting", c->addr);
      jr_resume(co, 3);
    }
  }
  if (!uv_is_closing((uv_handle_t *)&c->deadline_t))
    uv_close((uv_handle_t *)&c->deadline_t, timer_closed);
  c->busy--;
  jr_conn_maybe_free(c);
}

/* Closes every connection, stream and listener; called once when the host
 * shuts down. */
void jr_redis_shutdown(void) {
  jr_conn *c = all_conns;
  while (c) {
    jr_conn *next = c->next_conn;
    conn_close(c);
    c = next;
  }
  jr_stream_shutdown();
  jr_net_shutdown();
}

/* ---- Lua API -------------------------------------------------------------- */

/* The connection object at index 1. Compares the metatable by address:
 * luaL_checkudata looks it up by name, hashing the name on every call. */
static jr_conn *check_conn(lua_State *L) {
  jr_conn_ud *u = lua_touserdata(L, 1);
  int ok = 0;
  if (u && lua_getmetatable(L, 1)) {
    ok = lua_topointer(L, -1) == conn_mt;
    lua_pop(L, 1);
  }
  if (!ok) u = luaL_checkudata(L, 1, CONN_MT);   /* raises the usual error */
  if (u->c == NULL) luaL_error(L, "redis: connection object is closed");
  return u->c;
}

/* A copy of string field k of table t (malloc'd), or NULL when absent. */
static char *opt_strdup(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *s = lua_tostring(L, -1);
  char *r = s ? strdup(s) : NULL;
  lua_pop(L, 1);
  return r;
}

/* How messages name the current target: "host:port", "[v6]:port", "unix:///path". */
static void set_addr(jr_conn *c) {
  if (c->path) snprintf(c->addr, sizeof c->addr, "unix://%s", c->path);
  else if (strchr(c->host, ':')) snprintf(c->addr, sizeof c->addr, "[%s]:%d", c->host, c->port);
  else snprintf(c->addr, sizeof c->addr, "%s:%d", c->host, c->port);
}

/* A link at rest (down, never connected), with its retry timer. */
static void link_init(jr_conn *c, jr_link *l, int is_sub) {
  l->c = c;
  l->is_sub = is_sub;
  l->state = L_DOWN;
  uv_timer_init(jr_H.loop, &l->retry_t);
  uv_unref((uv_handle_t *)&l->retry_t);
  l->retry_t.data = l;
}

/* core.new{host=, port=, path=, user=, password=, db=, timeout=,
 * connect_timeout=, tls=, tls_ca=, tls_cert=, tls_key=, tls_insecure=,
 * tls_server_name=, want_master=, resolver=, label=} -> conn, not connected
 * yet (call conn:_connect()). Options are checked by jobrt.redis; here a
 * TLS context that cannot be made returns nil, "ETLS: ...", "ETLS". */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (jr_H.shutting_down) return jr_push_err(L, JR_ECLOSED, "the process is shutting down");
  jr_tls *tls = NULL;
  lua_getfield(L, 1, "tls");
  int want_tls = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (want_tls) {
    char *ca = opt_strdup(L, 1, "tls_ca"), *cert = opt_strdup(L, 1, "tls_cert"),
         *key = opt_strdup(L, 1, "tls_key");
    lua_getfield(L, 1, "tls_insecure");
    int insecure = lua_toboolean(L, -1);
    lua_pop(L, 1);
    char err[900];
    tls = jr_tls_get(ca, cert, key, insecure, err, sizeof err);
    free(ca);
    free(cert);
    free(key);
    if (tls == NULL) return jr_push_err(L, JR_ETLS, "%s", err);
  }
  jr_conn *c = calloc(1, sizeof *c);
  if (c == NULL) return luaL_error(L, "redis: out of memory");
  c->tls = tls;
  c->host = opt_strdup(L, 1, "host");
  c->path = opt_strdup(L, 1, "path");
  c->user = opt_strdup(L, 1, "user");
  c->password = opt_strdup(L, 1, "password");
  c->server_name = opt_strdup(L, 1, "tls_server_name");
  c->label = opt_strdup(L, 1, "label");
  lua_getfield(L, 1, "port");
  c->port = (int)luaL_optinteger(L, -1, 6379);
  lua_getfield(L, 1, "db");
  c->db = (int)luaL_optinteger(L, -1, 0);
  lua_getfield(L, 1, "timeout");
  c->timeout = luaL_optnumber(L, -1, 0);
  lua_getfield(L, 1, "connect_timeout");
  c->connect_timeout = luaL_optnumber(L, -1, 10);
  lua_getfield(L, 1, "want_master");
  c->want_master = lua_toboolean(L, -1);
  lua_pop(L, 5);
  if (c->host == NULL) c->host = strdup("127.0.0.1");
  set_addr(c);
  c->connect_ref = LUA_NOREF;
  c->resolver_ref = LUA_NOREF;
  lua_getfield(L, 1, "resolver");
  if (lua_isfunction(L, -1)) c->resolver_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  else lua_pop(L, 1);
  lua_newtable(L);
  c->subs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  c->subwait_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  c->resub_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (jr_reader_init(&c->cmd.rd) != 0 || jr_reader_init(&c->sub.rd) != 0) {
    jr_reader_free(&c->cmd.rd);
    jr_reader_free(&c->sub.rd);
    free(c->host);
    free(c->path);
    free(c->user);
    free(c->password);
    free(c->server_name);
    free(c->label);
    free(c);
    return luaL_error(L, "redis: out of memory");
  }
  link_init(c, &c->cmd, 0);
  link_init(c, &c->sub, 1);
  jr_reader_reuse_root(&c->sub.rd);         /* pushed messages never reach Lua as tables */
  uv_timer_init(jr_H.loop, &c->deadline_t);
  uv_unref((uv_handle_t *)&c->deadline_t);
  c->deadline_t.data = c;
  c->handles_open = 3;
  c->next_conn = all_conns;
  all_conns = c;
  jr_conn_ud *u = lua_newuserdata(L, sizeof *u);
  u->c = c;
  luaL_getmetatable(L, CONN_MT);
  lua_setmetatable(L, -2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, objs_ref);
  lua_pushlightuserdata(L, c);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return 1;
}

/* conn:_connect() -> true | nil, message, code (yields). A refused
 * connection, a TLS failure or refused credentials end it; LOADING is
 * waited out. */
static int c_connect(lua_State *L) {
  jr_conn *c = check_conn(L);
  if (c->closed || c->cmd.s || c->cmd.ever_up || c->connect_ref != LUA_NOREF)
    return jr_push_err(L, JR_ECLOSED, "redis: connect() called twice");
  jr_check_park(L, "redis.connect");
  link_connect(&c->cmd);
  if (c->closed) return jr_push_err(L, JR_ECONNREFUSED, "cannot connect to redis at %s: %s", c->addr,
                                    c->cmd.lasterr);
  c->connect_ref = jr_ref_thread(L);
  return jr_park(L);
}

/* Why command argv cannot go through call (NULL: it can). These turn the
 * link into a stream of replies nobody asked for, or undo its setup. */
static const char *refused(int argc, const char **argv, const size_t *lens) {
  const char *cmd = argv[0];
  size_t n = lens[0];
#define IS(lit) (n == sizeof(lit) - 1 && !strcasecmp(cmd, lit))
  switch (toupper((unsigned char)cmd[0])) {
  case 'S':
    if (IS("SUBSCRIBE") || IS("SSUBSCRIBE"))
      return "cannot go through call: use conn:subscribe(channel, fn) for pub/sub (it makes the "
             "connection a stream of pushed messages, which a call cannot carry)";
    if (IS("SUNSUBSCRIBE"))
      return "cannot go through call: use conn:unsubscribe(channel)";
    if (IS("SYNC"))
      return "cannot go through call: it turns the connection into a replication stream";
    break;
  case 'P':
    if (IS("PSUBSCRIBE"))
      return "cannot go through call: use conn:subscribe(channel, fn) for pub/sub (patterns are "
             "not supported)";
    if (IS("PUNSUBSCRIBE"))
      return "cannot go through call: use conn:unsubscribe(channel)";
    if (IS("PSYNC"))
      return "cannot go through call: it turns the connection into a replication stream";
    break;
  case 'U':
    if (IS("UNSUBSCRIBE"))
      return "cannot go through call: use conn:unsubscribe(channel)";
    break;
  case 'M':
    if (IS("MONITOR"))
      return "cannot go through call: use conn:subscribe(channel, fn) for pub/sub; MONITOR wants "
             "a connection of its own (e.g. redis-cli monitor)";
    break;
  case 'C':
    if (IS("CLIENT") && argc >= 3 && !strcasecmp(argv[1], "REPLY") &&
        (!strcasecmp(argv[2], "OFF") || !strcasecmp(argv[2], "SKIP")))
      return "cannot go through call: every call waits for its reply";
    break;
  case 'H':
    if (IS("HELLO") && argc >= 2 && strcmp(argv[1], "2") != 0)
      return "cannot go through call with a protocol other than 2: jobrt speaks RESP2 (HELLO 2 "
             "is fine)";
    break;
  case 'R':
    if (IS("RESET"))
      return "cannot go through call: it would drop the connection's login and database (close "
             "the connection and connect again)";
    break;
  case 'Q':
    if (IS("QUIT")) return "cannot go through call: use conn:close()";
    break;
  }
  return NULL;
#undef IS
}

/* Collects call arguments from index `first` (at most 64 on the C stack,
 * more on the heap), sends them and parks the caller. Raises on a
 * non-string argument and on a command that cannot go through call. */
static int do_call(lua_State *L, jr_conn *c, double timeout, int first) {
  int argc = lua_gettop(L) - first + 1;
  if (argc < 1) return luaL_error(L, "redis: call needs a command name");
  const char *sargv[64];
  size_t slens[64];
  const char **argv = sargv;
  size_t *lens = slens;
  if (argc > 64) {
    argv = lua_newuserdata(L, sizeof(char *) * (size_t)argc);
    lens = lua_newuserdata(L, sizeof(size_t) * (size_t)argc);
  }
  for (int i = 0; i < argc; i++) {
    int t = lua_type(L, first + i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      return luaL_error(L, "redis: argument %d of %s must be a string or number, got %s", i + 1,
                        lua_tostring(L, first) ? lua_tostring(L, first) : "call",
                        lua_typename(L, t));
    argv[i] = lua_tolstring(L, first + i, &lens[i]);
  }
  const char *why = refused(argc, argv, lens);
  if (why) return luaL_error(L, "redis: %s %s", argv[0], why);
  if (c->closed) return jr_push_err(L, JR_ECLOSED, "redis connection to %s is closed", c->addr);
  jr_link *l = &c->cmd;
  if (l->state != L_UP)
    return jr_push_err(L, JR_ECONN, "not connected to redis at %s (reconnecting: %s)", c->addr,
                       l->lasterr[0] ? l->lasterr : "connection lost");
  jr_check_park(L, "redis call");
  jr_req *q = jr_link_request(l, REQ_CALL, argc, argv, lens);
  if (q == NULL) return jr_push_err(L, JR_ENOMEM, "redis: out of memory");
  if (argc == 2 && lens[0] == 6 && !strcasecmp(argv[0], "SELECT")) {
    char *end;
    long db = strtol(argv[1], &end, 10);
    if (*end == '\0' && db >= 0 && db < 1 << 20) q->step = (int)db;   /* kept for reconnects */
  }
  q->co_ref = jr_ref_thread(L);
  l->inflight++;
  count_call(l);
  if (timeout > 0) {
    q->deadline = (double)uv_now(jr_H.loop) + timeout * 1000.0;
    if (q->deadline == 0) q->deadline = 1;
    q->dl_next = c->dl_head;
    if (c->dl_head) c->dl_head->dl_prev = q;
    c->dl_head = q;
    dl_arm(c);
  }
  return jr_park(L);
}

/* conn:call(cmd, ...) -> reply | nil, message, code[, redis error word] (yields) */
static int c_call(lua_State *L) {
  jr_conn *c = check_conn(L);
  return do_call(L, c, c->timeout, 2);
}

/* conn:call_timeout(seconds, cmd, ...) -> as call (yields) */
static int c_call_timeout(lua_State *L) {
  jr_conn *c = check_conn(L);
  double t = luaL_checknumber(L, 2);
  luaL_argcheck(L, t > 0, 2, "timeout must be > 0 seconds");
  return do_call(L, c, t, 3);
}

/* conn:subscribe(channel, fn) -> true | nil, message, code (yields until confirmed) */
static int c_subscribe(lua_State *L) {
  jr_conn *c = check_conn(L);
  return jr_pubsub_subscribe(L, c);
}

/* conn:unsubscribe(channel) */
static int c_unsubscribe(lua_State *L) {
  jr_conn *c = check_conn(L);
  return jr_pubsub_unsubscribe(L, c);
}

/* conn:_target(host, port) | conn:_target(nil, message, code): the
 * resolver's answer. Links waiting for it connect there, or retry later. */
static int c_target(lua_State *L) {
  jr_conn *c = check_conn(L);
  c->resolving = 0;
  if (c->closed) return 0;
  jr_link *ls[] = {&c->cmd, &c->sub};
  if (lua_type(L, 2) == LUA_TSTRING) {
    const char *host = lua_tostring(L, 2);
    int port = (int)luaL_checkinteger(L, 3);
    char *h = strdup(host);
    if (h == NULL) return luaL_error(L, "redis: out of memory");
    free(c->host);
    c->host = h;
    c->port = port;
    set_addr(c);
    for (int i = 0; i < 2; i++) {
      if (!ls[i]->waiting_target) continue;
      ls[i]->waiting_target = 0;
      if (ls[i]->state == L_DOWN && ls[i]->s == NULL) link_connect(ls[i]);
    }
    return 0;
  }
  const char *msg = luaL_optstring(L, 3, "no address");
  for (int i = 0; i < 2; i++) {
    if (!ls[i]->waiting_target) continue;
    ls[i]->waiting_target = 0;
    snprintf(ls[i]->lasterr, sizeof ls[i]->lasterr, "%s", msg);
    link_mark_down(ls[i], 2, msg);
    link_schedule(ls[i]);
  }
  return 0;
}

/* conn:_reset(reason): the node is not the one to talk to any more (e.g.
 * Sentinel announced a new primary): drop both links and reconnect at once,
 * through the resolver. */
static int c_reset(lua_State *L) {
  jr_conn *c = check_conn(L);
  const char *why = luaL_optstring(L, 2, "reset");
  if (c->closed) return 0;
  c->cmd.backoff = c->sub.backoff = 0;
  conn_failover(c, 2, why);
  return 0;
}

/* conn:_up() -> true when the command link is up: a call made now (in the
 * same run of the calling coroutine) is sent to the node. A router above
 * asks before a call, so that an ECONN error afterwards always means "sent,
 * and the reply never came" (the command may have run), never "not sent". */
static int c_up(lua_State *L) {
  jr_conn *c = check_conn(L);
  lua_pushboolean(L, !c->closed && c->cmd.state == L_UP);
  return 1;
}

/* conn:_inject(bytes): writes bytes as they are, with no request waiting
 * for what they cause. For tests of replies nobody asked for. */
static int c_inject(lua_State *L) {
  jr_conn *c = check_conn(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  if (c->cmd.state != L_UP) return jr_push_err(L, JR_ECONN, "not connected to redis at %s", c->addr);
  char *p = jr_stream_reserve(c->cmd.s, n);
  if (p == NULL) return jr_push_err(L, JR_ENOMEM, "redis: out of memory");
  memcpy(p, s, n);
  jr_stream_commit(c->cmd.s, n);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:close(): pending calls end with nil, "ECLOSED: ...", "ECLOSED" */
static int c_close(lua_State *L) {
  jr_conn_ud *u = luaL_checkudata(L, 1, CONN_MT);
  if (u->c) conn_close(u->c);
  return 0;
}

/* The object is collected: the connection closes (nothing can wait on it:
 * a waiting coroutine would hold the object) and is freed once idle. */
static int c_gc(lua_State *L) {
  jr_conn_ud *u = luaL_checkudata(L, 1, CONN_MT);
  if (u->c == NULL) return 0;
  jr_conn *c = u->c;
  u->c = NULL;
  c->collected = 1;
  conn_close(c);      /* frees c at once when it was closed already */
  return 0;
}

static const char *const link_states[] = {"down", "connecting", "up", "closed"};

/* conn:info() -> { addr=, state=, sub_state=, tls=, user=, db=, label=,
 * inflight=, error= } (never the password) */
static int c_info(lua_State *L) {
  jr_conn *c = check_conn(L);
  lua_createtable(L, 0, 9);
  lua_pushstring(L, c->addr);
  lua_setfield(L, -2, "addr");
  lua_pushstring(L, c->closed ? "closed" : link_states[c->cmd.state]);
  lua_setfield(L, -2, "state");
  lua_pushstring(L, c->closed ? "closed" : link_states[c->sub.state]);
  lua_setfield(L, -2, "sub_state");
  lua_pushboolean(L, c->tls != NULL);
  lua_setfield(L, -2, "tls");
  if (c->user) {
    lua_pushstring(L, c->user);
    lua_setfield(L, -2, "user");
  }
  lua_pushinteger(L, c->db);
  lua_setfield(L, -2, "db");
  if (c->label) {
    lua_pushstring(L, c->label);
    lua_setfield(L, -2, "label");
  }
  lua_pushinteger(L, c->cmd.inflight);
  lua_setfield(L, -2, "inflight");
  if (c->cmd.state != L_UP && c->cmd.lasterr[0]) {
    lua_pushstring(L, c->cmd.lasterr);
    lua_setfield(L, -2, "error");
  }
  return 1;
}

/* The module jobrt.core.redis: { new, null, codes } and the object's metatable. */
int jr_open_redis(lua_State *L) {
  static const luaL_Reg meths[] = {{"_connect", c_connect},     {"call", c_call},
                                   {"call_timeout", c_call_timeout},
                                   {"subscribe", c_subscribe},   {"unsubscribe", c_unsubscribe},
                                   {"close", c_close},           {"info", c_info},
                                   {"_target", c_target},        {"_reset", c_reset},
                                   {"_inject", c_inject},        {"_up", c_up},
                                   {NULL, NULL}};
  luaL_newmetatable(L, CONN_MT);
  conn_mt = lua_topointer(L, -1);              /* the registry keeps it alive */
  lua_newtable(L);
  luaL_register(L, NULL, meths);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, c_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_newtable(L);                             /* objs: weak values */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  objs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  lua_pushcfunction(L, l_new);
  lua_setfield(L, -2, "new");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_newtable(L);                             /* codes: name -> description */
#define JR_ERR_FIELD(name, msg) \
  lua_pushliteral(L, msg);      \
  lua_setfield(L, -2, #name);
  JR_ERRNO_MAP(JR_ERR_FIELD)
#undef JR_ERR_FIELD
  lua_setfield(L, -2, "codes");
  return 1;
}
