/* tcp.c - a plain TCP client on the loop (jobrt.core.tcp), for tests and tools.
 *
 *   local c, err = tcp.connect(host, port)   -- yields until connected; err "ECONNREFUSED: ..."
 *   c:write(bytes) -> true | nil, err         -- yields until handed to the kernel
 *   c:read([timeout_s]) -> bytes | nil (the peer closed) | nil, "ETIMEDOUT" | nil, err
 *   c:close()                                 -- also on collection
 * Bytes arriving while nobody reads are kept for the next read. The specs of
 * `jobrt web` speak HTTP through it byte for byte (malformed requests, slow
 * senders), which a real client library would not let them do.
 *
 * Memory: the struct is malloc'd, freed when its handles are closed; the Lua
 * object only points at it.
 */
#include "private.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_connect_t conn;
  char *buf;                  /* received, not yet read */
  size_t len, cap;
  int eof, err;               /* peer closed; last error (libuv code) */
  int waiter;                 /* coroutine in connect/read/write, or LUA_NOREF */
  int open_handles, closing, connected;
  int self_ref;               /* the Lua object while connect() waits, to return it */
  void *prev, *next;          /* all connections, for the shutdown */
} jr_tcp;

static jr_tcp *all_tcp;

typedef struct {
  jr_tcp *t;
} jr_tcp_ud;

static const char TCP_MT[] = "jobrt.tcp";

static void closed(uv_handle_t *h) {
  jr_tcp *t = h->data;
  if (--t->open_handles > 0) return;
  if (t->prev) ((jr_tcp *)t->prev)->next = t->next; else all_tcp = t->next;
  if (t->next) ((jr_tcp *)t->next)->prev = t->prev;
  free(t->buf);
  free(t);
}

/* Resumes the waiting coroutine with what was pushed by push(co). */
static void wake(jr_tcp *t, int (*push)(jr_tcp *, lua_State *)) {
  if (t->waiter == LUA_NOREF) return;
  lua_State *co = jr_unref_thread(t->waiter);
  t->waiter = LUA_NOREF;
  uv_timer_stop(&t->timer);
  jr_resume(co, push(t, co));
}

static void tcp_close(jr_tcp *t) {
  if (t->closing) return;
  t->closing = 1;
  if (t->waiter != LUA_NOREF && !jr_H.lua_closing) {
    jr_drop_thread(jr_H.L, t->waiter);
    t->waiter = LUA_NOREF;
  }
  if (t->self_ref != LUA_NOREF && !jr_H.lua_closing) luaL_unref(jr_H.L, LUA_REGISTRYINDEX, t->self_ref);
  t->self_ref = LUA_NOREF;
  uv_close((uv_handle_t *)&t->tcp, closed);
  uv_close((uv_handle_t *)&t->timer, closed);
}

static int push_read(jr_tcp *t, lua_State *co) {
  if (t->len > 0) {
    lua_pushlstring(co, t->buf, t->len);
    t->len = 0;
    return 1;
  }
  lua_pushnil(co);
  if (t->err) {
    lua_pushfstring(co, "%s: %s", uv_err_name(t->err), uv_strerror(t->err));
    return 2;
  }
  if (t->eof) return 1;
  lua_pushliteral(co, "ETIMEDOUT");
  return 2;
}

static int push_connected(jr_tcp *t, lua_State *co) {
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->self_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, t->self_ref);
  t->self_ref = LUA_NOREF;
  if (t->err) {
    lua_pop(L, 1);
    lua_pushnil(co);
    lua_pushfstring(co, "%s: %s", uv_err_name(t->err), uv_strerror(t->err));
    return 2;
  }
  lua_xmove(L, co, 1);
  return 1;
}

static int push_status(jr_tcp *t, lua_State *co) {
  if (t->err) {
    lua_pushnil(co);
    lua_pushfstring(co, "%s: %s", uv_err_name(t->err), uv_strerror(t->err));
    return 2;
  }
  lua_pushboolean(co, 1);
  return 1;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  jr_tcp *t = h->data;
  if (t->cap - t->len < 65536) {
    size_t cap = t->cap ? t->cap * 2 : 65536;
    while (cap - t->len < 65536) cap *= 2;
    char *p = realloc(t->buf, cap);
    if (p == NULL) {
      *b = uv_buf_init(NULL, 0);
      return;
    }
    t->buf = p;
    t->cap = cap;
  }
  (void)suggested;
  *b = uv_buf_init(t->buf + t->len, (unsigned)(t->cap - t->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  jr_tcp *t = s->data;
  (void)b;
  if (n == UV_EOF) {
    t->eof = 1;
  } else if (n < 0) {
    t->err = (int)n;
  } else {
    t->len += (size_t)n;
  }
  if (n < 0) uv_read_stop(s);
  if (n != 0) wake(t, push_read);
}

static void on_timer(uv_timer_t *h) { wake(h->data, push_read); }

static void on_connect(uv_connect_t *req, int status) {
  jr_tcp *t = req->data;
  if (t->closing) return;
  if (status < 0) {
    t->err = status;
  } else {
    t->connected = 1;
    uv_read_start((uv_stream_t *)&t->tcp, on_alloc, on_read);
  }
  wake(t, push_connected);
}

static jr_tcp *check(lua_State *L) {
  jr_tcp_ud *u = luaL_checkudata(L, 1, TCP_MT);
  if (u->t == NULL || u->t->closing) luaL_error(L, "tcp: connection closed");
  if (u->t->waiter != LUA_NOREF) luaL_error(L, "tcp: another coroutine is using this connection");
  return u->t;
}

/* tcp.connect(host, port) -> connection | nil, err. Yields. */
static int l_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  struct sockaddr_storage addr;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "EINVAL: '%s' is not an IP address", host);
    return 2;
  }
  jr_check_park(L, "tcp.connect");
  jr_tcp *t = calloc(1, sizeof *t);
  if (t == NULL) return luaL_error(L, "tcp.connect: out of memory");
  uv_tcp_init(jr_H.loop, &t->tcp);
  uv_timer_init(jr_H.loop, &t->timer);
  t->tcp.data = t->timer.data = t->conn.data = t;
  t->open_handles = 2;
  t->waiter = LUA_NOREF;
  t->self_ref = LUA_NOREF;
  t->next = all_tcp;
  if (all_tcp) all_tcp->prev = t;
  all_tcp = t;
  jr_tcp_ud *u = lua_newuserdata(L, sizeof *u);
  u->t = t;
  luaL_getmetatable(L, TCP_MT);
  lua_setmetatable(L, -2);
  int rc = uv_tcp_connect(&t->conn, &t->tcp, (struct sockaddr *)&addr, on_connect);
  if (rc != 0) {
    u->t = NULL;
    tcp_close(t);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", uv_err_name(rc), uv_strerror(rc));
    return 2;
  }
  t->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);     /* returned by the resume */
  t->waiter = jr_ref_thread(L);
  return jr_park(L);
}

typedef struct {
  uv_write_t w;
  jr_tcp *t;
  char data[];
} jr_tcp_w;

static void on_write(uv_write_t *w, int status) {
  jr_tcp_w *q = (jr_tcp_w *)w;
  jr_tcp *t = q->t;
  free(q);
  if (t->closing) return;
  if (status < 0) t->err = status;
  wake(t, push_status);
}

/* c:write(bytes) -> true | nil, err. Yields until written. */
static int c_write(lua_State *L) {
  jr_tcp *t = check(L);
  jr_check_park(L, "tcp write");
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  if (t->err) return push_status(t, L);
  jr_tcp_w *q = malloc(sizeof *q + n);
  if (q == NULL) return luaL_error(L, "tcp: out of memory");
  memcpy(q->data, s, n);
  q->t = t;
  uv_buf_t b = uv_buf_init(q->data, (unsigned)n);
  int rc = uv_write(&q->w, (uv_stream_t *)&t->tcp, &b, 1, on_write);
  if (rc != 0) {
    free(q);
    t->err = rc;
    return push_status(t, L);
  }
  t->waiter = jr_ref_thread(L);
  return jr_park(L);
}

/* c:read([timeout]) -> bytes | nil (closed by the peer) | nil, err. Yields. */
static int c_read(lua_State *L) {
  jr_tcp *t = check(L);
  jr_check_park(L, "tcp read");
  double timeout = luaL_optnumber(L, 2, 0);
  if (t->len > 0 || t->eof || t->err) return push_read(t, L);
  t->waiter = jr_ref_thread(L);
  if (timeout > 0) uv_timer_start(&t->timer, on_timer, (uint64_t)(timeout * 1000), 0);
  return jr_park(L);
}

/* c:close() */
static int c_close(lua_State *L) {
  jr_tcp_ud *u = luaL_checkudata(L, 1, TCP_MT);
  if (u->t == NULL) return 0;
  if (!jr_H.shutting_down) tcp_close(u->t);
  u->t = NULL;
  return 0;
}

/* Closes every connection (the host is shutting down). */
void jr_tcp_shutdown(void) {
  for (jr_tcp *t = all_tcp; t; t = t->next) tcp_close(t);
}

int jr_open_tcp(lua_State *L) {
  luaL_newmetatable(L, TCP_MT);
  lua_newtable(L);
  lua_pushcfunction(L, c_write);
  lua_setfield(L, -2, "write");
  lua_pushcfunction(L, c_read);
  lua_setfield(L, -2, "read");
  lua_pushcfunction(L, c_close);
  lua_setfield(L, -2, "close");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, c_close);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "connect");
  return 1;
}
