/* net.c - a plain TCP listener on the libuv loop (module jobrt.core.net):
 * for tests that need a server of their own, such as a fake Redis that
 * sends what a real one never would (garbage, unasked replies, pushes).
 *
 *   local net = require 'jobrt.core.net'
 *   local srv = net.listen("127.0.0.1", 0, function(client) ... end)
 *       -- port 0: any free port (srv:port() tells which); fn runs in a new
 *       -- coroutine for each connection
 *   client:read()  -> bytes, or nil once the peer closed (yields until data)
 *   client:write(bytes) -> true | nil, message
 *   client:close();  srv:close()
 *
 * Handles live outside Lua (luv's rule): a Lua object points at its handle
 * and the handle back at the object; whichever goes first tells the other.
 * Memory is freed in the close callback. jr_net_shutdown closes what is
 * left when the host stops.
 */
#include "private.h"

#include <stdlib.h>
#include <string.h>

typedef struct net_ud net_ud;

typedef struct net_h {
  uv_tcp_t tcp;
  int is_server;
  net_ud *ud;            /* the Lua object, NULL once collected */
  int fn_ref;            /* server: the connection function */
  int reader_ref;        /* client: coroutine parked in read() */
  char *buf;             /* client: bytes read and not yet taken */
  size_t len, cap;
  int eof;
  struct net_h *next, **prevp;
} net_h;

struct net_ud {
  net_h *h;              /* NULL once closed */
};

static const char SRV_MT[] = "jobrt.net.server";
static const char CLI_MT[] = "jobrt.net.client";
static net_h *all_handles;

static void on_closed(uv_handle_t *uh) {
  net_h *h = uh->data;
  free(h->buf);
  free(h);
}

/* Closes h: a reader still parked gets nil; the Lua object is detached. */
static void net_close(net_h *h) {
  if (uv_is_closing((uv_handle_t *)&h->tcp)) return;
  *h->prevp = h->next;
  if (h->next) h->next->prevp = h->prevp;
  if (h->ud) h->ud->h = NULL;
  h->ud = NULL;
  if (!jr_H.lua_closing) {
    if (h->fn_ref != LUA_NOREF) luaL_unref(jr_H.L, LUA_REGISTRYINDEX, h->fn_ref);
    if (h->reader_ref != LUA_NOREF) {
      lua_State *co = jr_unref_thread(h->reader_ref);
      h->reader_ref = LUA_NOREF;
      lua_pushnil(co);
      jr_resume(co, 1);
    }
  }
  uv_close((uv_handle_t *)&h->tcp, on_closed);
}

static net_h *net_new(int is_server) {
  net_h *h = calloc(1, sizeof *h);
  if (h == NULL) return NULL;
  uv_tcp_init(jr_H.loop, &h->tcp);
  h->tcp.data = h;
  h->is_server = is_server;
  h->fn_ref = LUA_NOREF;
  h->reader_ref = LUA_NOREF;
  h->next = all_handles;
  if (all_handles) all_handles->prevp = &h->next;
  h->prevp = &all_handles;
  all_handles = h;
  return h;
}

/* Pushes a Lua object for h with metatable mt. */
static void push_ud(lua_State *L, net_h *h, const char *mt) {
  net_ud *u = lua_newuserdata(L, sizeof *u);
  u->h = h;
  h->ud = u;
  luaL_getmetatable(L, mt);
  lua_setmetatable(L, -2);
}

static void on_alloc(uv_handle_t *uh, size_t suggested, uv_buf_t *buf) {
  net_h *h = uh->data;
  if (h->cap - h->len < 65536) {
    size_t cap = h->cap ? h->cap * 2 : 65536;
    while (cap - h->len < 65536) cap *= 2;
    char *p = realloc(h->buf, cap);
    if (p == NULL) {
      *buf = uv_buf_init(NULL, 0);
      return;
    }
    h->buf = p;
    h->cap = cap;
  }
  (void)suggested;
  *buf = uv_buf_init(h->buf + h->len, (unsigned)(h->cap - h->len));
}

/* Resumes the parked reader with what was read (or nil at the end). */
static void wake_reader(net_h *h) {
  if (h->reader_ref == LUA_NOREF) return;
  lua_State *co = jr_unref_thread(h->reader_ref);
  h->reader_ref = LUA_NOREF;
  if (h->len > 0) {
    lua_pushlstring(co, h->buf, h->len);
    h->len = 0;
  } else {
    lua_pushnil(co);
  }
  jr_resume(co, 1);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  net_h *h = st->data;
  (void)buf;
  if (n > 0) h->len += (size_t)n;
  else if (n < 0) h->eof = 1;
  if (n != 0) wake_reader(h);
}

static void on_connection(uv_stream_t *server, int status) {
  net_h *s = server->data;
  if (status < 0 || s->fn_ref == LUA_NOREF) return;
  net_h *h = net_new(0);
  if (h == NULL) return;
  if (uv_accept(server, (uv_stream_t *)&h->tcp) != 0) {
    net_close(h);
    return;
  }
  uv_read_start((uv_stream_t *)&h->tcp, on_alloc, on_read);
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->fn_ref);
  push_ud(L, h, CLI_MT);
  jr_sched_spawn(L, 1);
  lua_pop(L, 1);
}

/* net.listen(host, port, fn) -> server | nil, message */
static int l_listen(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  struct sockaddr_storage sa;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&sa) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&sa) != 0)
    return luaL_error(L, "net.listen: '%s' is not an IP address", host);
  net_h *h = net_new(1);
  if (h == NULL) return luaL_error(L, "net.listen: out of memory");
  int rc = uv_tcp_bind(&h->tcp, (struct sockaddr *)&sa, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&h->tcp, 64, on_connection);
  if (rc != 0) {
    net_close(h);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
    return 2;
  }
  lua_pushvalue(L, 3);
  h->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  push_ud(L, h, SRV_MT);
  return 1;
}

static net_h *check(lua_State *L, const char *mt) {
  net_ud *u = luaL_checkudata(L, 1, mt);
  if (u->h == NULL) luaL_error(L, "net: already closed");
  return u->h;
}

/* srv:port() -> the port it listens on */
static int s_port(lua_State *L) {
  net_h *h = check(L, SRV_MT);
  struct sockaddr_storage sa;
  int len = sizeof sa;
  if (uv_tcp_getsockname(&h->tcp, (struct sockaddr *)&sa, &len) != 0) return 0;
  int port = sa.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&sa)->sin6_port)
                                      : ntohs(((struct sockaddr_in *)&sa)->sin_port);
  lua_pushinteger(L, port);
  return 1;
}

/* client:read() -> bytes | nil (yields until some arrive) */
static int c_read(lua_State *L) {
  net_h *h = check(L, CLI_MT);
  if (h->len > 0) {
    lua_pushlstring(L, h->buf, h->len);
    h->len = 0;
    return 1;
  }
  if (h->eof) {
    lua_pushnil(L);
    return 1;
  }
  if (h->reader_ref != LUA_NOREF) return luaL_error(L, "net: another coroutine is reading");
  h->reader_ref = jr_ref_thread(L);
  return jr_park(L);
}

static void on_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

/* client:write(bytes) -> true | nil, message */
static int c_write(lua_State *L) {
  net_h *h = check(L, CLI_MT);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  uv_write_t *req = malloc(sizeof *req + n);
  if (req == NULL) return luaL_error(L, "net: out of memory");
  char *copy = (char *)(req + 1);
  memcpy(copy, s, n);
  uv_buf_t b = uv_buf_init(copy, (unsigned)n);
  int rc = uv_write(req, (uv_stream_t *)&h->tcp, &b, 1, on_written);
  if (rc != 0) {
    free(req);
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* x:close() (also on collection) */
static int x_close(lua_State *L) {
  net_ud *u = lua_touserdata(L, 1);
  if (u == NULL) return luaL_argerror(L, 1, "net object expected");
  if (u->h) net_close(u->h);
  u->h = NULL;
  return 0;
}

/* Closes every listener and connection (the host is stopping). */
void jr_net_shutdown(void) {
  while (all_handles) net_close(all_handles);
}

int jr_open_net(lua_State *L) {
  static const luaL_Reg smeths[] = {{"port", s_port}, {"close", x_close}, {NULL, NULL}};
  static const luaL_Reg cmeths[] = {{"read", c_read}, {"write", c_write}, {"close", x_close},
                                    {NULL, NULL}};
  luaL_newmetatable(L, SRV_MT);
  lua_newtable(L);
  luaL_register(L, NULL, smeths);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, x_close);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, CLI_MT);
  lua_newtable(L);
  luaL_register(L, NULL, cmeths);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, x_close);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_listen);
  lua_setfield(L, -2, "listen");
  return 1;
}
