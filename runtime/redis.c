/* redis.c - the Redis client: hiredis async contexts on the libuv loop.
 *
 * A connection object owns up to two hiredis contexts: `ac` for commands
 * and `sub` for pub/sub (created on the first subscribe). Lua calls yield
 * the running coroutine; the reply callback resumes it with the reply as Lua
 * values. On `ac`, hiredis' reader builds those values directly (see "replies
 * as Lua values") rather than redisReply trees to be copied and freed.
 * Calls made by many coroutines in one loop turn leave in one write (see
 * "write coalescing"), so they are pipelined without any work here.
 *
 * Lost connections: hiredis calls every pending callback with a NULL reply,
 * which resumes the waiting coroutines with nil, "ECONN: ...". The object
 * then reconnects with exponential backoff and restores its subscriptions;
 * calls made while no context exists fail at once with "ECONN: ...".
 *
 * Deadlines: hiredis 0.14 has no command timeouts. Calls with a deadline are
 * kept on a list; one timer per connection fires at the earliest deadline
 * and resumes the late callers with nil, "ETIMEDOUT: ...". Their replies,
 * when they come, are dropped.
 *
 * Memory: the C struct lives outside Lua. It is freed when the Lua object
 * has been collected (or the host shuts down) and both contexts and all
 * three timers are closed.
 */
#define _GNU_SOURCE                /* sched_getcpu */
#include "private.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libuv.h>

enum { ST_CONNECTING, ST_UP, ST_DOWN, ST_CLOSED };

typedef struct jr_req jr_req;
typedef struct jr_conn jr_conn;

struct jr_req {
  jr_conn *c;
  int co_ref;          /* LUA_NOREF once abandoned (deadline passed) */
  double deadline;     /* uv_now ms; 0 = none */
  jr_req *prev, *next; /* deadline list */
  char cmd[24];        /* command name, for messages */
};

struct jr_conn {
  redisAsyncContext *ac, *sub;
  int state, sub_state;
  char *host, *path, *password;
  int port, db;
  char addr[300];
  double timeout;                  /* default per-call deadline, seconds; 0 none */
  uv_timer_t reconnect_t, sub_reconnect_t, deadline_t;
  int handles_open;                /* of the three timers */
  double backoff, sub_backoff;     /* ms */
  jr_req *dl_head;                 /* requests with a deadline */
  int subs_ref;                    /* registry table channel -> fn */
  int subwait_ref;                 /* registry table channel -> waiting coroutine */
  int resub_ref;                   /* registry table channel -> true: resubscribed, not yet confirmed */
  int connect_ref;                 /* coroutine waiting in connect(), or LUA_NOREF */
  int collected;                   /* Lua object gone */
  int down_logged;
  char lasterr[256];
  jr_conn *next_conn;              /* list of all connections, for shutdown */
  unsigned flush_want;             /* deferred writes: FLUSH_AC | FLUSH_SUB; listed iff != 0 */
  jr_conn *flush_next;             /* list of connections with deferred writes */
  int unflushed;                   /* calls queued on ac since its last write */
  int inflight;                    /* calls sent on ac and not answered yet */
  int same_cpu;                    /* see redis_on_our_cpu */
  uint64_t cpu_asked_at;           /* uv_now of the last look */
  lua_State *stage;                /* where ac's reader builds the reply being read */
  int stage_ref;                   /* registry ref of stage */
  redisReply top;                  /* what hiredis sees of the reply on stage */
};

enum { FLUSH_AC = 1, FLUSH_SUB = 2 };

typedef struct {
  jr_conn *c;
} jr_conn_ud;

static const char CONN_MT[] = "jobrt.redis.conn";
static jr_conn *all_conns;

/* Free requests kept for reuse: a pipelined call costs no malloc/free. */
static jr_req *req_pool;
static int req_pool_n;

static jr_req *req_new(void) {
  jr_req *q = req_pool;
  if (q) {
    req_pool = q->next;
    req_pool_n--;
    return q;
  }
  return malloc(sizeof *q);
}

static void req_free(jr_req *q) {
  if (req_pool_n >= 1024 || jr_H.lua_closing) {
    free(q);
    return;
  }
  q->next = req_pool;
  req_pool = q;
  req_pool_n++;
}

/* Frees the pool (at exit, for leak checkers). */
void jr_redis_pool_free(void) {
  while (req_pool) {
    jr_req *q = req_pool;
    req_pool = q->next;
    free(q);
  }
  req_pool_n = 0;
}

static void conn_maybe_free(jr_conn *c);
static void start_sub(jr_conn *c);
static void conn_close(jr_conn *c);
static void fail_subwaiters(jr_conn *c, jr_errno_t code);

/* ---- replies as Lua values ---------------------------------------------- */

/* The command context's reader calls these instead of hiredis' defaults,
 * which build a redisReply tree (a calloc and a malloc per element) that
 * would then be copied into Lua and freed: here each element goes straight
 * onto the connection's `stage` thread. Strings and statuses become strings,
 * integers numbers, nil lightuserdata NULL (cjson.null), arrays tables, and
 * errors nested in arrays { err = msg }.
 *
 * The reader builds one reply at a time, depth first. stage holds the reply's
 * root and, above it, the arrays still being filled, innermost on top; a
 * finished element is stored into the array right below it. When the root is
 * finished it is alone on stage, and the reply callback moves it to the
 * caller. hiredis nests arrays at most 7 deep, so stage never holds more
 * than a dozen values (a new thread has 40 slots). A reply half read when
 * its context goes away stays on stage until the next reply or the
 * connection replaces it.
 *
 * What hiredis itself sees of a reply is c->top: its type and, for an error,
 * the message (read by on_connect_step, on_reconnect_step, and async.c for
 * an error that answers no call). Every element returns &c->top: never NULL
 * (which hiredis takes for out of memory), and freeObject has nothing to
 * free. */

/* The element of task t is complete on top of stage: stores it in its
 * parent array, and goes on up while that completes the parent. */
static void *stage_done(const redisReadTask *t) {
  jr_conn *c = t->privdata;
  while (t->parent) {
    lua_rawseti(c->stage, -2, t->idx + 1);
    if (t->idx != t->parent->elements - 1) break;
    t = t->parent;
  }
  return &c->top;
}

/* Returns t's connection; for a reply's root, first drops whatever an
 * earlier reply left on stage and describes the new one in c->top. */
static jr_conn *stage_begin(const redisReadTask *t, int type) {
  jr_conn *c = t->privdata;
  if (t->parent == NULL) {
    lua_settop(c->stage, 0);
    memset(&c->top, 0, sizeof c->top);
    c->top.type = type;
  }
  return c;
}

static void *rd_string(const redisReadTask *t, char *str, size_t len) {
  jr_conn *c = stage_begin(t, t->type);
  if (t->parent == NULL) {
    lua_pushlstring(c->stage, str, len);
    if (t->type == REDIS_REPLY_ERROR)
      c->top.str = (char *)lua_tolstring(c->stage, -1, &c->top.len);
    return &c->top;
  }
  if (t->type == REDIS_REPLY_ERROR) {
    lua_createtable(c->stage, 0, 1);
    lua_pushlstring(c->stage, str, len);
    lua_setfield(c->stage, -2, "err");
  } else {
    lua_pushlstring(c->stage, str, len);
  }
  return stage_done(t);
}

static void *rd_array(const redisReadTask *t, int n) {
  jr_conn *c = stage_begin(t, REDIS_REPLY_ARRAY);
  lua_createtable(c->stage, n < 4096 ? n : 4096, 0);   /* grows past that */
  if (t->parent == NULL) c->top.elements = (size_t)n;
  return n > 0 ? &c->top : stage_done(t);   /* an empty array is complete at once */
}

static void *rd_integer(const redisReadTask *t, long long v) {
  jr_conn *c = stage_begin(t, REDIS_REPLY_INTEGER);
  lua_pushnumber(c->stage, (lua_Number)v);
  if (t->parent == NULL) c->top.integer = v;
  return stage_done(t);
}

static void *rd_nil(const redisReadTask *t) {
  jr_conn *c = stage_begin(t, REDIS_REPLY_NIL);
  lua_pushlightuserdata(c->stage, NULL);
  return stage_done(t);
}

static void rd_free(void *obj) { (void)obj; }

static redisReplyObjectFunctions lua_replies = {rd_string, rd_array, rd_integer, rd_nil, rd_free};

/* Makes ac's reader build its replies on c's stage (before ac reads any). */
static void use_lua_replies(jr_conn *c, redisAsyncContext *ac) {
  ac->c.reader->fn = &lua_replies;
  ac->c.reader->privdata = c;
}

/* Pushes nil, "CODE: text" and returns 2. */
static int push_err(lua_State *L, jr_errno_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int push_err(lua_State *L, jr_errno_t code, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", jr_err_name(code), buf);
  return 2;
}

/* ---- deadline list ------------------------------------------------------ */

static void dl_unlink(jr_req *q) {
  if (q->deadline == 0) return;
  if (q->prev) q->prev->next = q->next; else q->c->dl_head = q->next;
  if (q->next) q->next->prev = q->prev;
  q->prev = q->next = NULL;
  q->deadline = 0;
}

static void dl_arm(jr_conn *c);

static void on_deadline(uv_timer_t *t) {
  jr_conn *c = t->data;
  double now = (double)uv_now(jr_H.loop);
  /* Resuming a caller may run anything (even close the connection, which
   * frees the other requests), so find the next late one from the head
   * each time. c itself stays valid: its timers are not closed yet. */
  for (;;) {
    jr_req *q = c->dl_head;
    while (q && q->deadline > now) q = q->next;
    if (q == NULL) break;
    dl_unlink(q);
    lua_State *co = jr_unref_thread(q->co_ref);
    q->co_ref = LUA_NOREF;            /* reply arrives later: dropped */
    push_err(co, JR_ETIMEDOUT, "redis at %s did not answer %s in time", c->addr, q->cmd);
    jr_resume(co, 2);
    if (c->state == ST_CLOSED) return;
  }
  dl_arm(c);
}

/* Arms the deadline timer for the earliest deadline on the list. */
static void dl_arm(jr_conn *c) {
  if (c->state == ST_CLOSED || uv_is_closing((uv_handle_t *)&c->deadline_t)) return;
  double first = 0;
  for (jr_req *q = c->dl_head; q; q = q->next)
    if (first == 0 || q->deadline < first) first = q->deadline;
  if (first == 0) {
    uv_timer_stop(&c->deadline_t);
    return;
  }
  double now = (double)uv_now(jr_H.loop);
  uv_timer_start(&c->deadline_t, on_deadline, first > now ? (uint64_t)(first - now) : 0, 0);
}

/* ---- contexts ----------------------------------------------------------- */

static void ac_lost(jr_conn *c);
static void sub_lost(jr_conn *c);

/* Our cleanup hook around the libuv adapter's: tells the connection that a
 * context is gone for good. hiredis 0.14 may call the cleanup hook twice
 * (from __redisAsyncDisconnect and again from __redisAsyncFree), and may
 * call it before the pending callbacks get their NULL replies, so this
 * clears itself on first use and decides nothing that callbacks need. */
static void ctx_cleanup(void *privdata) {
  redisLibuvEvents *p = privdata;
  redisAsyncContext *ac = p->context;
  if (ac == NULL) return;
  ac->ev.cleanup = NULL;
  jr_conn *c = ac->data;
  redisLibuvCleanup(privdata);
  if (c == NULL) return;
  int is_sub = (ac == c->sub);
  if (is_sub) c->sub = NULL; else if (ac == c->ac) c->ac = NULL; else return;
  if (ac->err && ac->errstr[0]) snprintf(c->lasterr, sizeof c->lasterr, "%s", ac->errstr);
  if (c->state == ST_CLOSED || jr_H.shutting_down) {
    conn_maybe_free(c);
    return;
  }
  if (is_sub) sub_lost(c);
  else if (c->connect_ref == LUA_NOREF) ac_lost(c);   /* else: connect() reports it */
}

static void on_reconnect_timer(uv_timer_t *t);
static void on_sub_reconnect_timer(uv_timer_t *t);

/* The context whose input on_poll is handling, and whether conn_close asked
 * to free it meanwhile. Building a reply on stage allocates, so the
 * collector may run a finalizer (c_gc) in the middle of hiredis' parsing;
 * hiredis defers a free asked from inside a reply callback, but not one
 * asked between callbacks, so conn_close leaves that one to on_poll. */
static redisAsyncContext *reading;
static int reading_free;

/* Frees a context, unless hiredis is parsing its input right now. */
static void ctx_free(redisAsyncContext *ac) {
  if (ac == reading && !(ac->c.flags & REDIS_IN_CALLBACK)) reading_free = 1;
  else redisAsyncFree(ac);
}

/* Poll callback replacing the adapter's: hiredis 0.14's libuv adapter
 * ignores a poll error (status < 0, e.g. a refused connect), which leaves
 * the context waiting forever. Here an error lets hiredis handle the
 * pending events, so it reads the socket error and fails the context. */
static void on_poll(uv_poll_t *h, int status, int events) {
  redisLibuvEvents *p = h->data;
  if (p->context == NULL) return;
  if (status != 0) {
    /* libuv stopped the handle itself (e.g. EPOLLERR after a reset with
     * unread data): forget what it polled, so that hiredis' next request
     * restarts it instead of being skipped as a no-op by ev_update. */
    events = p->events ? p->events : UV_WRITABLE;
    p->events = 0;
  }
  if (events & UV_READABLE) {
    reading = p->context;
    redisAsyncHandleRead(p->context);
    reading = NULL;
    if (reading_free) {                /* p->context is NULL if hiredis freed it since */
      reading_free = 0;
      if (p->context) redisAsyncFree(p->context);
    }
  }
  if (p->context != NULL && (events & UV_WRITABLE)) redisAsyncHandleWrite(p->context);
}

static void ev_update(redisLibuvEvents *p, int add, int ev) {
  int old = p->events;
  if (add) p->events |= ev; else p->events &= ~ev;
  if (p->events == old) return;
  if (p->events) uv_poll_start(&p->handle, p->events, on_poll);
  else uv_poll_stop(&p->handle);
}

/* ---- write coalescing --------------------------------------------------- */

/* hiredis asks for a write event on every command. Polling for it costs, per
 * batch of commands, an epoll_ctl to arm it, an epoll_wait that returns at
 * once and another epoll_ctl to disarm it (libuv re-adds the fd on every
 * uv_poll_start). Instead, a connected context's writes are deferred to a
 * prepare handle, which runs once per loop turn just before the loop polls:
 * the commands of a whole turn leave in one write(2), as Redis flushes its
 * replies in beforeSleep(). Only a write the socket does not take whole
 * makes the context poll for writability.
 *
 * Holding a turn's calls back until its end would make client and server
 * take turns: when one read resumes fifty callers, Redis would idle while
 * all fifty run, and they would idle while Redis answers. So calls are also
 * written in groups as they are made (count_call), and Redis works on one
 * group while the callers of the next run: with fifty coroutines on one
 * connection, bench/ping.lua goes 1.5 to 2 times faster on two cores. That
 * pays only when Redis runs on another CPU; on ours each early write wakes
 * it to preempt us for a handful of commands (half the throughput there),
 * so early writes are skipped while the socket's data last came from our
 * own CPU. */
enum { EARLY_WRITE_CALLS = 10 };

static uv_prepare_t flush_prep;
static int flush_inited;
static jr_conn *flush_head;                 /* connections with deferred writes */
static redisAsyncContext *flushing;         /* context being written by on_flush */

static void on_flush(uv_prepare_t *h) {
  while (flush_head) {
    jr_conn *c = flush_head;
    redisAsyncContext *ac;
    if (c->flush_want & FLUSH_AC) {
      c->flush_want &= ~(unsigned)FLUSH_AC;
      c->unflushed = 0;
      ac = c->ac;
    } else {
      c->flush_want = 0;
      ac = c->sub;
    }
    if (c->flush_want == 0) flush_head = c->flush_next;
    /* A failed write frees the context and runs its callbacks, which may
     * close or free c (conn_maybe_free takes it off the list) or defer more
     * writes (added to the list): c is not used after this. */
    if (ac && (ac->c.flags & REDIS_CONNECTED)) {
      flushing = ac;
      redisAsyncHandleWrite(ac);
      flushing = NULL;
    }
  }
  uv_prepare_stop(h);
}

/* Takes c off the deferred-write list (c is about to be freed). */
static void flush_forget(jr_conn *c) {
  if (c->flush_want == 0) return;
  jr_conn **pp = &flush_head;
  while (*pp && *pp != c) pp = &(*pp)->flush_next;
  if (*pp) *pp = c->flush_next;
  c->flush_want = 0;
}

/* Whether Redis seems to run on our CPU: the kernel notes which CPU last
 * delivered data to the socket, and for a local server that is the CPU on
 * which Redis wrote it (for a remote one, where its packets came in: at
 * worst, early writes are skipped). Asked at most once per loop millisecond. */
static int redis_on_our_cpu(jr_conn *c) {
#ifdef SO_INCOMING_CPU
  uint64_t now = uv_now(jr_H.loop);
  if (now != c->cpu_asked_at) {
    int cpu = -1;
    socklen_t len = sizeof cpu;
    c->cpu_asked_at = now;
    c->same_cpu = getsockopt(c->ac->c.fd, SOL_SOCKET, SO_INCOMING_CPU, &cpu, &len) == 0 &&
                  cpu >= 0 && cpu == sched_getcpu();
  }
  return c->same_cpu;
#else
  (void)c;
  return 0;
#endif
}

/* A call was queued on c->ac. Once a group's worth of calls is queued,
 * writes them ahead of the end-of-turn flush. The calls in flight are cut
 * into equal groups of at most EARLY_WRITE_CALLS (fifty into five of ten,
 * thirty-two into four of eight): a short group left over would cost a
 * write and a read of its own on every round trip. Safe inside a reply
 * callback, since redisBufferWrite frees nothing: a failed write leaves its
 * error on the context, and the flush scheduled for it (outside any
 * callback) reports it through redisAsyncHandleWrite. */
static void count_call(jr_conn *c) {
  int n = c->inflight, groups = (n + EARLY_WRITE_CALLS - 1) / EARLY_WRITE_CALLS;
  if (groups < 2 || ++c->unflushed < (n + groups - 1) / groups) return;
  c->unflushed = 0;
  redisAsyncContext *ac = c->ac;
  if (!(c->flush_want & FLUSH_AC) || !(ac->c.flags & REDIS_CONNECTED) || redis_on_our_cpu(c))
    return;
  int done;
  redisBufferWrite(&ac->c, &done);
}

static void ev_add_read(void *priv) { ev_update(priv, 1, UV_READABLE); }
static void ev_del_read(void *priv) { ev_update(priv, 0, UV_READABLE); }
static void ev_del_write(void *priv) { ev_update(priv, 0, UV_WRITABLE); }

/* hiredis wants to write: defers it to on_flush, or polls for writability
 * while connecting (hiredis learns of the connect from that event), after a
 * partial write from on_flush, and once the loop is shutting down. */
static void ev_add_write(void *priv) {
  redisLibuvEvents *p = priv;
  redisAsyncContext *ac = p->context;
  jr_conn *c = ac ? ac->data : NULL;
  if (c == NULL || (ac != c->ac && ac != c->sub) || !(ac->c.flags & REDIS_CONNECTED) ||
      ac == flushing || !flush_inited || uv_is_closing((uv_handle_t *)&flush_prep)) {
    ev_update(p, 1, UV_WRITABLE);
    return;
  }
  if (c->flush_want == 0) {
    c->flush_next = flush_head;
    flush_head = c;
    uv_prepare_start(&flush_prep, on_flush);
  }
  c->flush_want |= ac == c->ac ? FLUSH_AC : FLUSH_SUB;
}

/* Creates a hiredis context for c, attached to the loop. NULL on error,
 * with the reason in c->lasterr. */
static redisAsyncContext *new_ctx(jr_conn *c) {
  redisAsyncContext *ac = c->path ? redisAsyncConnectUnix(c->path)
                                  : redisAsyncConnect(c->host, c->port);
  if (ac == NULL) {
    snprintf(c->lasterr, sizeof c->lasterr, "out of memory");
    return NULL;
  }
  if (ac->err) {
    snprintf(c->lasterr, sizeof c->lasterr, "%s", ac->errstr);
    redisAsyncFree(ac);
    return NULL;
  }
  if (redisLibuvAttach(ac, jr_H.loop) != REDIS_OK) {
    snprintf(c->lasterr, sizeof c->lasterr, "cannot attach to the event loop");
    redisAsyncFree(ac);
    return NULL;
  }
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  ac->ev.cleanup = ctx_cleanup;
  ac->data = c;
  return ac;
}

/* Sends AUTH and SELECT if configured (before anything else on ac). */
static void send_setup(jr_conn *c, redisAsyncContext *ac, redisCallbackFn *fn, void *priv) {
  char dbs[16];
  if (c->password) {
    const char *argv[] = {"AUTH", c->password};
    redisAsyncCommandArgv(ac, fn, priv, 2, argv, NULL);
  }
  if (c->db) {
    snprintf(dbs, sizeof dbs, "%d", c->db);
    const char *argv[] = {"SELECT", dbs};
    redisAsyncCommandArgv(ac, fn, priv, 2, argv, NULL);
  }
}

/* Setup replies during connect(): the first error or NULL decides. */
static void on_connect_step(redisAsyncContext *ac, void *r, void *priv) {
  jr_conn *c = ac->data;
  redisReply *reply = r;
  int last = priv != NULL;
  if (c == NULL || c->connect_ref == LUA_NOREF) return;
  if (reply && reply->type != REDIS_REPLY_ERROR && !last) return;
  lua_State *co = jr_unref_thread(c->connect_ref);
  c->connect_ref = LUA_NOREF;
  if (reply == NULL) {
    push_err(co, JR_ECONNREFUSED, "cannot connect to redis at %s: %s", c->addr,
             c->lasterr[0] ? c->lasterr : (ac->errstr[0] ? ac->errstr : "connection closed"));
    conn_close(c);                    /* no reconnecting from a failed first connect */
    jr_resume(co, 2);
    return;
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    push_err(co, JR_EAUTH, "redis at %s refused the connection setup: %s (check the password and database in the URL: redis://:PASSWORD@host:port/DB)",
             c->addr, reply->str);
    conn_close(c);
    jr_resume(co, 2);
    return;
  }
  c->state = ST_UP;
  lua_pushboolean(co, 1);
  jr_resume(co, 1);
}

static void on_connect_cb(const redisAsyncContext *ac, int status) {
  jr_conn *c = ac->data;
  if (c && status != REDIS_OK)
    snprintf(c->lasterr, sizeof c->lasterr, "%s", ac->errstr[0] ? ac->errstr : "connect failed");
}

/* Reconnect setup replies: on success the connection is up again. */
static void on_reconnect_step(redisAsyncContext *ac, void *r, void *priv) {
  jr_conn *c = ac->data;
  redisReply *reply = r;
  if (c == NULL || priv == NULL || reply == NULL) return;
  if (reply->type == REDIS_REPLY_ERROR) {   /* AUTH/SELECT refused: drop it, retry later */
    jr_log(3, "redis at %s refused the connection setup: %s (retrying)", c->addr, reply->str);
    redisAsyncFree(ac);
    return;
  }
  c->state = ST_UP;
  c->backoff = 0;
  if (c->down_logged) jr_log(1, "reconnected to redis at %s", c->addr);
  c->down_logged = 0;
}

static void on_reconnect_timer(uv_timer_t *t) {
  jr_conn *c = t->data;
  if (c->state == ST_CLOSED || c->ac) return;
  c->ac = new_ctx(c);
  if (c->ac == NULL) {   /* could not even start: try again later */
    c->backoff = c->backoff ? c->backoff * 2 : 50;
    if (c->backoff > 5000) c->backoff = 5000;
    uv_timer_start(&c->reconnect_t, on_reconnect_timer, (uint64_t)c->backoff, 0);
    return;
  }
  use_lua_replies(c, c->ac);
  c->state = ST_CONNECTING;
  redisAsyncSetConnectCallback(c->ac, on_connect_cb);
  send_setup(c, c->ac, on_reconnect_step, NULL);
  const char *argv[] = {"PING"};
  redisAsyncCommandArgv(c->ac, on_reconnect_step, c, 1, argv, NULL);
}

/* The command context is gone and we are not closing: schedule a retry. */
static void ac_lost(jr_conn *c) {
  c->state = ST_DOWN;
  if (!c->down_logged) {
    jr_log(2, "lost connection to redis at %s (%s); reconnecting", c->addr,
           c->lasterr[0] ? c->lasterr : "closed");
    c->down_logged = 1;
  }
  c->backoff = c->backoff ? c->backoff * 2 : 50;
  if (c->backoff > 5000) c->backoff = 5000;
  uv_timer_start(&c->reconnect_t, on_reconnect_timer, (uint64_t)c->backoff, 0);
}

/* ---- subscriber context ----------------------------------------------- */

/* Calls subs[channel](channel, message) in a new coroutine; message nil
 * means "resubscribed after a reconnect: messages may have been missed". */
static void dispatch(jr_conn *c, const char *ch, size_t chlen, const char *msg, size_t msglen) {
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->subs_ref);
  lua_pushlstring(L, ch, chlen);
  lua_rawget(L, -2);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 2);
    return;
  }
  lua_pushlstring(L, ch, chlen);
  if (msg) lua_pushlstring(L, msg, msglen); else lua_pushnil(L);
  jr_sched_spawn(L, 2);
  lua_pop(L, 2);
}

/* Resumes the coroutine waiting for the confirmation of channel, if any. */
static void confirm(jr_conn *c, const char *ch, size_t chlen, int ok, const char *err) {
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->subwait_ref);
  lua_pushlstring(L, ch, chlen);
  lua_rawget(L, -2);
  lua_State *co = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (co == NULL) {
    lua_pop(L, 1);
    return;
  }
  lua_pushlstring(L, ch, chlen);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  if (ok) {
    lua_pushboolean(co, 1);
    jr_resume(co, 1);
  } else {
    push_err(co, JR_ECONN, "subscribe on redis at %s failed: %s", c->addr, err);
    jr_resume(co, 2);
  }
}

static void on_sub_reply(redisAsyncContext *ac, void *r, void *priv) {
  (void)priv;
  jr_conn *c = ac->data;
  redisReply *reply = r;
  if (c == NULL) return;
  if (reply == NULL) return;               /* context going away: ctx_cleanup handles it */
  if (reply->type == REDIS_REPLY_ERROR) {
    jr_log(3, "redis at %s (subscriber): %s", c->addr, reply->str);
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) return;
  redisReply *kind = reply->element[0], *ch = reply->element[1], *msg = reply->element[2];
  if (kind->type != REDIS_REPLY_STRING || ch->type != REDIS_REPLY_STRING) return;
  if (strcmp(kind->str, "message") == 0 && msg->type == REDIS_REPLY_STRING) {
    dispatch(c, ch->str, ch->len, msg->str, msg->len);
  } else if (strcmp(kind->str, "subscribe") == 0) {
    if (c->sub_state != ST_UP && c->sub_backoff > 0)
      jr_log(1, "subscriber reconnected to redis at %s", c->addr);
    c->sub_state = ST_UP;
    c->sub_backoff = 0;
    confirm(c, ch->str, ch->len, 1, NULL);
    /* After a reconnect, tell the channel's function only now that the
     * subscription is live again (messages published before this point were
     * missed; anything after it will arrive). */
    lua_State *L = jr_H.L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->resub_ref);
    lua_pushlstring(L, ch->str, ch->len);
    lua_rawget(L, -2);
    int pending = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (pending) {
      lua_pushlstring(L, ch->str, ch->len);
      lua_pushnil(L);
      lua_rawset(L, -3);
    }
    lua_pop(L, 1);
    if (pending) dispatch(c, ch->str, ch->len, NULL, 0);
  }
}

/* Subscriber setup replies; on a reconnect, each restored channel's
 * function is told (message nil) that messages may have been missed. */
static void on_sub_setup(redisAsyncContext *ac, void *r, void *priv) {
  (void)ac; (void)r; (void)priv;
}

static void subscribe_on(jr_conn *c, const char *ch, size_t len) {
  const char *argv[] = {"SUBSCRIBE", ch};
  size_t lens[] = {9, len};
  redisAsyncCommandArgv(c->sub, on_sub_reply, NULL, 2, argv, lens);
}

/* (Re)creates the subscriber context and subscribes every channel in subs.
 * On a reconnect (resubscribe != 0) every channel's function is called once
 * with a nil message: whatever was published while the subscriber was down
 * is lost, so the function should re-check the state it watches. */
static void start_sub_ex(jr_conn *c, int resubscribe) {
  c->sub = new_ctx(c);
  if (c->sub == NULL) {
    c->sub_state = ST_DOWN;
    c->sub_backoff = c->sub_backoff ? c->sub_backoff * 2 : 50;
    if (c->sub_backoff > 5000) c->sub_backoff = 5000;
    uv_timer_start(&c->sub_reconnect_t, on_sub_reconnect_timer, (uint64_t)c->sub_backoff, 0);
    return;
  }
  c->sub_state = ST_CONNECTING;
  redisAsyncSetConnectCallback(c->sub, on_connect_cb);
  send_setup(c, c->sub, on_sub_setup, NULL);
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->subs_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    size_t len;
    const char *ch = lua_tolstring(L, -2, &len);
    subscribe_on(c, ch, len);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (resubscribe) {
    /* Each channel's function is told once its subscription is confirmed
     * (on_sub_reply): mark them all as pending. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->subs_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->resub_ref);
    lua_pushnil(L);
    while (lua_next(L, -3)) {
      lua_pop(L, 1);
      lua_pushvalue(L, -1);
      lua_pushboolean(L, 1);
      lua_rawset(L, -4);
    }
    lua_pop(L, 2);
  }
}

static void start_sub(jr_conn *c) { start_sub_ex(c, 0); }

/* Fails every coroutine still waiting for a subscription confirmation. */
static void fail_subwaiters(jr_conn *c, jr_errno_t code) {
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->subwait_ref);
  int t = lua_gettop(L);
  lua_newtable(L);
  lua_rawseti(L, LUA_REGISTRYINDEX, c->subwait_ref);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_State *co = lua_tothread(L, -1);
    lua_pop(L, 1);
    if (co) {
      push_err(co, code, "subscriber connection to redis at %s %s (%s)", c->addr,
               code == JR_ECLOSED ? "closed" : "lost", c->lasterr[0] ? c->lasterr : "closed");
      jr_resume(co, 2);
    }
  }
  lua_pop(L, 1);
}

/* The subscriber context is gone and we are not closing: retry later. */
static void sub_lost(jr_conn *c) {
  c->sub_state = ST_DOWN;
  c->sub_backoff = c->sub_backoff ? c->sub_backoff * 2 : 50;
  if (c->sub_backoff > 5000) c->sub_backoff = 5000;
  uv_timer_start(&c->sub_reconnect_t, on_sub_reconnect_timer, (uint64_t)c->sub_backoff, 0);
  fail_subwaiters(c, JR_ECONN);
}


static void on_sub_reconnect_timer(uv_timer_t *t) {
  jr_conn *c = t->data;
  if (c->state == ST_CLOSED || c->sub) return;
  start_sub_ex(c, 1);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void timer_closed(uv_handle_t *h) {
  jr_conn *c = h->data;
  c->handles_open--;
  conn_maybe_free(c);
}

/* Frees c once nothing refers to it any more: closed, both contexts gone,
 * the three timers closed, and the Lua object collected. */
static void conn_maybe_free(jr_conn *c) {
  if (c->state != ST_CLOSED || c->ac || c->sub || c->handles_open > 0 || !c->collected) return;
  jr_conn **pp = &all_conns;
  while (*pp && *pp != c) pp = &(*pp)->next_conn;
  if (*pp) *pp = c->next_conn;
  flush_forget(c);
  if (!jr_H.lua_closing) {
    luaL_unref(jr_H.L, LUA_REGISTRYINDEX, c->subs_ref);
    luaL_unref(jr_H.L, LUA_REGISTRYINDEX, c->subwait_ref);
    luaL_unref(jr_H.L, LUA_REGISTRYINDEX, c->resub_ref);
    luaL_unref(jr_H.L, LUA_REGISTRYINDEX, c->stage_ref);
  }
  free(c->host);
  free(c->path);
  free(c->password);
  free(c);
}

/* Closes c: stops reconnecting, frees both contexts (pending calls get
 * nil, "ECONN: ..."), closes the timers. Idempotent. */
static void conn_close(jr_conn *c) {
  if (c->state == ST_CLOSED && uv_is_closing((uv_handle_t *)&c->deadline_t)) {
    conn_maybe_free(c);
    return;
  }
  c->state = ST_CLOSED;
  if (!jr_H.lua_closing) fail_subwaiters(c, JR_ECLOSED);
  if (c->connect_ref != LUA_NOREF && c->ac == NULL) {
    jr_drop_thread(jr_H.L, c->connect_ref);
    c->connect_ref = LUA_NOREF;
  }
  if (c->ac) ctx_free(c->ac);
  if (c->sub) ctx_free(c->sub);
  uv_handle_t *hs[] = {(uv_handle_t *)&c->reconnect_t, (uv_handle_t *)&c->sub_reconnect_t,
                       (uv_handle_t *)&c->deadline_t};
  for (int i = 0; i < 3; i++)
    if (!uv_is_closing(hs[i])) uv_close(hs[i], timer_closed);
}

/* Closes every connection; called once when the host shuts down. */
void jr_redis_shutdown(void) {
  jr_conn *c = all_conns;
  while (c) {
    jr_conn *next = c->next_conn;
    conn_close(c);
    c = next;
  }
}

/* ---- Lua API ------------------------------------------------------------ */

static const void *conn_mt;   /* the metatable of connection objects */

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

static char *opt_strdup(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *s = lua_tostring(L, -1);
  char *r = s ? strdup(s) : NULL;
  lua_pop(L, 1);
  return r;
}

/* core.new{host=, port=, path=, password=, db=, timeout=} -> conn (not
 * connected yet; call conn:_connect()). */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (jr_H.shutting_down) return push_err(L, JR_ECLOSED, "the process is shutting down");
  jr_conn *c = calloc(1, sizeof *c);
  if (c == NULL) return luaL_error(L, "redis: out of memory");
  c->host = opt_strdup(L, 1, "host");
  c->path = opt_strdup(L, 1, "path");
  c->password = opt_strdup(L, 1, "password");
  lua_getfield(L, 1, "port");
  c->port = (int)luaL_optinteger(L, -1, 6379);
  lua_getfield(L, 1, "db");
  c->db = (int)luaL_optinteger(L, -1, 0);
  lua_getfield(L, 1, "timeout");
  c->timeout = luaL_optnumber(L, -1, 0);
  lua_pop(L, 3);
  if (c->host == NULL) c->host = strdup("127.0.0.1");
  if (c->path) snprintf(c->addr, sizeof c->addr, "unix://%s", c->path);
  else snprintf(c->addr, sizeof c->addr, "%s:%d", c->host, c->port);
  c->state = ST_DOWN;
  c->sub_state = ST_DOWN;
  c->connect_ref = LUA_NOREF;
  lua_newtable(L);
  c->subs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  c->subwait_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  c->resub_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  c->stage = lua_newthread(L);
  c->stage_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  uv_timer_t *ts[] = {&c->reconnect_t, &c->sub_reconnect_t, &c->deadline_t};
  for (int i = 0; i < 3; i++) {
    uv_timer_init(jr_H.loop, ts[i]);
    ts[i]->data = c;
    uv_unref((uv_handle_t *)ts[i]);
  }
  c->handles_open = 3;
  c->next_conn = all_conns;
  all_conns = c;
  jr_conn_ud *u = lua_newuserdata(L, sizeof *u);
  u->c = c;
  luaL_getmetatable(L, CONN_MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* conn:_connect() -> true | nil, "ECONNREFUSED: ..." (yields) */
static int c_connect(lua_State *L) {
  jr_conn *c = check_conn(L);
  jr_check_park(L, "redis.connect");
  if (c->ac || c->state == ST_CLOSED) return push_err(L, JR_ECLOSED, "redis: connect() called twice");
  c->ac = new_ctx(c);
  if (c->ac == NULL) {
    c->state = ST_CLOSED;
    return push_err(L, JR_ECONNREFUSED, "cannot connect to redis at %s: %s", c->addr, c->lasterr);
  }
  use_lua_replies(c, c->ac);
  c->state = ST_CONNECTING;
  redisAsyncSetConnectCallback(c->ac, on_connect_cb);
  send_setup(c, c->ac, on_connect_step, NULL);
  const char *argv[] = {"PING"};
  redisAsyncCommandArgv(c->ac, on_connect_step, c, 1, argv, NULL);
  c->connect_ref = jr_ref_thread(L);
  return jr_park(L);
}

/* Reply callback of a call: resumes the caller with the reply (on stage),
 * nil and the Redis error, or nil, "ECONN: ..." when r is NULL. */
static void on_reply(redisAsyncContext *ac, void *r, void *priv) {
  jr_req *q = priv;
  jr_conn *c = q->c;
  (void)ac;
  c->inflight--;
  int had_deadline = q->deadline != 0;
  dl_unlink(q);
  if (q->co_ref == LUA_NOREF) {       /* abandoned after its deadline */
    if (r) lua_settop(c->stage, 0);
    req_free(q);
    return;
  }
  lua_State *co = jr_unref_thread(q->co_ref);
  int n;
  redisReply *reply = r;
  if (reply == NULL) {
    n = push_err(co, c->state == ST_CLOSED ? JR_ECLOSED : JR_ECONN,
                 "connection to redis at %s lost before it answered %s (%s)", c->addr, q->cmd,
                 c->lasterr[0] ? c->lasterr : "closed");
  } else if (reply->type == REDIS_REPLY_ERROR) {
    lua_pushnil(co);
    lua_xmove(c->stage, co, 1);
    n = 2;
  } else {
    lua_xmove(c->stage, co, 1);
    n = 1;
  }
  req_free(q);
  if (had_deadline) dl_arm(c);
  jr_resume(co, n);
}

/* Writes n as decimal at p; returns the number of bytes written. */
static size_t put_uint(char *p, size_t n) {
  char tmp[24];
  size_t k = 0;
  do { tmp[k++] = (char)('0' + n % 10); n /= 10; } while (n);
  for (size_t i = 0; i < k; i++) p[i] = tmp[k - 1 - i];
  return k;
}

/* Sends argv as one RESP command. hiredis' own argv formatting goes through
 * sdscatfmt and was the largest cost of a pipelined call; this formats into
 * one buffer and hands it over with redisAsyncFormattedCommand. */
static int send_argv(redisAsyncContext *ac, redisCallbackFn *fn, void *priv, int argc,
                     const char **argv, const size_t *lens) {
  size_t total = 1 + 20 + 2;
  for (int i = 0; i < argc; i++) total += 1 + 20 + 2 + lens[i] + 2;
  char stackbuf[4096];
  char *buf = total <= sizeof stackbuf ? stackbuf : malloc(total);
  if (buf == NULL) return REDIS_ERR;
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
  int rc = redisAsyncFormattedCommand(ac, fn, priv, buf, (size_t)(p - buf));
  if (buf != stackbuf) free(buf);
  return rc;
}

/* Collects call arguments from index `first` into argv/lens (at most 64 on
 * the C stack, more on the heap). Raises on a non-string argument. */
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
  if (c->state == ST_CLOSED)
    return push_err(L, JR_ECLOSED, "redis connection to %s is closed", c->addr);
  if (c->ac == NULL || c->state == ST_DOWN)
    return push_err(L, JR_ECONN, "not connected to redis at %s (reconnecting: %s)", c->addr,
                    c->lasterr[0] ? c->lasterr : "connection lost");
  jr_check_park(L, "redis call");
  /* These turn the connection into a stream of pushed messages, which a
   * call (one reply per command) cannot carry. */
  if (!strcasecmp(argv[0], "SUBSCRIBE") || !strcasecmp(argv[0], "PSUBSCRIBE") ||
      !strcasecmp(argv[0], "MONITOR"))
    return luaL_error(L, "redis: %s cannot go through call: use conn:subscribe(channel, fn) for "
                      "pub/sub (MONITOR wants a connection of its own, e.g. redis-cli monitor)", argv[0]);
  jr_req *q = req_new();
  if (q == NULL) return push_err(L, JR_ENOMEM, "redis: out of memory");
  q->c = c;
  q->prev = q->next = NULL;
  q->deadline = 0;
  size_t cl = lens[0] < sizeof q->cmd - 1 ? lens[0] : sizeof q->cmd - 1;
  memcpy(q->cmd, argv[0], cl);
  q->cmd[cl] = '\0';
  if (send_argv(c->ac, on_reply, q, argc, argv, lens) != REDIS_OK) {
    req_free(q);
    return push_err(L, JR_ECONN, "redis at %s: cannot send %s", c->addr, argv[0]);
  }
  q->co_ref = jr_ref_thread(L);
  c->inflight++;
  count_call(c);
  if (timeout > 0) {
    q->deadline = (double)uv_now(jr_H.loop) + timeout * 1000.0;
    if (q->deadline == 0) q->deadline = 1;
    q->next = c->dl_head;
    if (c->dl_head) c->dl_head->prev = q;
    c->dl_head = q;
    dl_arm(c);
  }
  return jr_park(L);
}

/* conn:call(cmd, ...) -> reply | nil, err (yields) */
static int c_call(lua_State *L) {
  jr_conn *c = check_conn(L);
  return do_call(L, c, c->timeout, 2);
}

/* conn:call_timeout(seconds, cmd, ...) -> reply | nil, err (yields) */
static int c_call_timeout(lua_State *L) {
  jr_conn *c = check_conn(L);
  double t = luaL_checknumber(L, 2);
  luaL_argcheck(L, t > 0, 2, "timeout must be > 0 seconds");
  return do_call(L, c, t, 3);
}

/* conn:subscribe(channel, fn) -> true | nil, err (yields until confirmed) */
static int c_subscribe(lua_State *L) {
  jr_conn *c = check_conn(L);
  size_t len;
  const char *ch = luaL_checklstring(L, 2, &len);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  if (c->state == ST_CLOSED) return push_err(L, JR_ECLOSED, "redis connection to %s is closed", c->addr);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->subs_ref);
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  int already = !lua_isnil(L, -1);
  lua_pop(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  if (already) {                 /* replaced the function; still subscribed */
    lua_pushboolean(L, 1);
    return 1;
  }
  if (c->sub == NULL) {
    if (c->sub_state == ST_DOWN && uv_is_active((uv_handle_t *)&c->sub_reconnect_t)) {
      lua_pushboolean(L, 1);     /* restored with the others when it reconnects */
      return 1;
    }
    start_sub(c);                /* subscribes everything in subs, incl. this one */
    if (c->sub == NULL) return push_err(L, JR_ECONNREFUSED, "cannot connect to redis at %s: %s", c->addr, c->lasterr);
  } else {
    subscribe_on(c, ch, len);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->subwait_ref);
  lua_pushvalue(L, 2);
  lua_pushthread(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return jr_park(L);
}

/* conn:unsubscribe(channel) */
static int c_unsubscribe(lua_State *L) {
  jr_conn *c = check_conn(L);
  size_t len;
  const char *ch = luaL_checklstring(L, 2, &len);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->subs_ref);
  lua_pushvalue(L, 2);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  if (c->sub && c->state != ST_CLOSED) {
    const char *argv[] = {"UNSUBSCRIBE", ch};
    size_t lens[] = {11, len};
    redisAsyncCommandArgv(c->sub, on_sub_reply, NULL, 2, argv, lens);
  }
  return 0;
}

/* conn:close(): pending calls end with nil, "ECLOSED: ..." */
static int c_close(lua_State *L) {
  jr_conn_ud *u = luaL_checkudata(L, 1, CONN_MT);
  if (u->c) conn_close(u->c);
  return 0;
}

static int c_gc(lua_State *L) {
  jr_conn_ud *u = luaL_checkudata(L, 1, CONN_MT);
  if (u->c == NULL) return 0;
  jr_conn *c = u->c;
  u->c = NULL;
  c->collected = 1;
  conn_close(c);      /* frees c at once when it was closed already */
  return 0;
}

/* conn:info() -> { addr=, state=, subscribed=bool } */
static int c_info(lua_State *L) {
  jr_conn *c = check_conn(L);
  static const char *const st[] = {"connecting", "up", "down", "closed"};
  lua_createtable(L, 0, 3);
  lua_pushstring(L, c->addr);
  lua_setfield(L, -2, "addr");
  lua_pushstring(L, st[c->state]);
  lua_setfield(L, -2, "state");
  lua_pushstring(L, st[c->sub_state]);
  lua_setfield(L, -2, "sub_state");
  return 1;
}

int jr_open_redis(lua_State *L) {
  if (!flush_inited) {
    uv_prepare_init(jr_H.loop, &flush_prep);   /* closed by the shutdown walk */
    uv_unref((uv_handle_t *)&flush_prep);
    flush_inited = 1;
  }
  static const luaL_Reg meths[] = {{"_connect", c_connect},   {"call", c_call},
                                   {"call_timeout", c_call_timeout},
                                   {"subscribe", c_subscribe}, {"unsubscribe", c_unsubscribe},
                                   {"close", c_close},        {"info", c_info},
                                   {NULL, NULL}};
  luaL_newmetatable(L, CONN_MT);
  conn_mt = lua_topointer(L, -1);              /* the registry keeps it alive */
  lua_newtable(L);
  luaL_register(L, NULL, meths);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, c_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_new);
  lua_setfield(L, -2, "new");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  return 1;
}
