/* http.c - the HTTP/1.1 server of `jobrt web`: libuv TCP + http-parser.
 *
 * Module jobrt.core.http:
 *   local srv, err = http.listen{ host=, port=, handler=fn, max_header=, max_body=,
 *                                 timeout=, max_conns= }
 *   srv:address() -> host, port          srv:close()
 *   http.respond(req.handle, status, headers, body) -> true | false (client gone)
 *   http.closed(req.handle) -> true when the client went away
 * Each request runs handler(req) in a coroutine of its own, with req = { method=,
 * target= (path and query, raw), headers= { lower-case name = value }, body=,
 * peer= "ip:port", handle= }. The handler answers with http.respond; if it
 * ends (or fails) without answering, the client gets 500 when the handle is
 * collected, so a connection is never left hanging.
 *
 * One connection serves one request at a time: bytes of a next (pipelined)
 * request wait in `pending` until the response has been written. Reading goes
 * on while a handler runs, so a client that leaves is noticed at once (the
 * long-polling reserve uses http.closed). Limits: header block and body sizes
 * (431 / 413), connections (503), and `timeout` seconds for a client to send
 * a whole request, to stay idle between requests, or to take a response
 * (then 408 or a plain close). Parsing is http_request.c's.
 *
 * Memory (luv's rule): server and connection structs are malloc'd, never in
 * Lua userdata, and freed in the close callbacks of their handles. A request
 * handle (userdata) and its connection point at each other; whichever goes
 * first clears the other's pointer.
 */
#include "private.h"
#include "http_request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct jr_http_srv jr_http_srv;
typedef struct jr_http_conn jr_http_conn;

typedef struct {
  jr_http_conn *c;            /* NULL once answered or the connection is gone */
} jr_http_req_ud;

typedef struct {
  jr_http_srv *s;             /* NULL once closed */
} jr_http_srv_ud;

struct jr_http_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  jr_http_srv *s;
  jr_http_conn *prev, *next;
  jr_httpreq req;
  char *pending;              /* bytes read while busy, or left after a request */
  size_t pending_len, pending_cap;
  jr_http_req_ud *ud;         /* the request a handler is answering */
  int busy;                   /* a request was dispatched; its response is not written yet */
  int started;                /* bytes of a request arrived (the timeout now answers 408) */
  int continued;              /* 100 Continue sent for this request */
  int head_only;              /* HEAD: the response has no body */
  int closing, open_handles, reading;
  char peer[64];
};

struct jr_http_srv {
  uv_tcp_t tcp;
  int fn_ref;
  size_t max_header, max_body;
  uint64_t timeout_ms;
  int max_conns, nconns;
  jr_http_conn *conns;
  int closing, listener_open;
  jr_http_srv_ud *ud;
  jr_http_srv *next;          /* all servers, for the shutdown */
};

static const char SRV_MT[] = "jobrt.http.server";
static const char REQ_MT[] = "jobrt.http.request";
static jr_http_srv *all_srvs;
static char read_buf[65536];  /* read callbacks consume their bytes at once */

/* ---- freeing ---------------------------------------------------------- */

static void srv_unlist(jr_http_srv *s) {
  for (jr_http_srv **p = &all_srvs; *p; p = &(*p)->next)
    if (*p == s) {
      *p = s->next;
      return;
    }
}

/* Frees the server once its listener is closed and no connection is left. */
static void srv_maybe_free(jr_http_srv *s) {
  if (s->listener_open || s->nconns > 0 || !s->closing) return;
  srv_unlist(s);
  if (s->ud) s->ud->s = NULL;
  if (s->fn_ref != LUA_NOREF && !jr_H.lua_closing) luaL_unref(jr_H.L, LUA_REGISTRYINDEX, s->fn_ref);
  free(s);
}

static void conn_closed(uv_handle_t *h) {
  jr_http_conn *c = h->data;
  if (--c->open_handles > 0) return;
  jr_http_srv *s = c->s;
  jr_httpreq_free(&c->req);
  free(c->pending);
  free(c);
  s->nconns--;
  srv_maybe_free(s);
}

/* Closes a connection at once; a handler still answering it is detached
 * (its respond returns false). Safe to call twice. */
static void conn_close(jr_http_conn *c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->ud) {
    c->ud->c = NULL;
    c->ud = NULL;
  }
  if (c->prev) c->prev->next = c->next; else c->s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  uv_close((uv_handle_t *)&c->tcp, conn_closed);
  uv_close((uv_handle_t *)&c->timer, conn_closed);
}

static void listener_closed(uv_handle_t *h) {
  jr_http_srv *s = h->data;
  s->listener_open = 0;
  srv_maybe_free(s);
}

static void srv_close(jr_http_srv *s) {
  if (s->closing) return;
  s->closing = 1;
  while (s->conns) conn_close(s->conns);
  uv_close((uv_handle_t *)&s->tcp, listener_closed);
}

/* ---- writing ---------------------------------------------------------- */

typedef struct {
  uv_write_t w;
  jr_http_conn *c;
  int last;                   /* close the connection once written */
  int interim;                /* a 100 Continue: nothing follows from its callback */
  char data[];
} jr_wreq;

static void conn_continue(jr_http_conn *c);

static void on_timeout(uv_timer_t *t);

static void arm(jr_http_conn *c) {
  uv_timer_start(&c->timer, on_timeout, c->s->timeout_ms, 0);
}

static void on_written(uv_write_t *w, int status) {
  jr_wreq *q = (jr_wreq *)w;
  jr_http_conn *c = q->c;
  int last = q->last, interim = q->interim;
  free(q);
  if (c->closing) return;            /* the close callbacks run after this one: c is alive */
  if (status < 0 || last) {
    conn_close(c);
    return;
  }
  if (interim) return;
  c->busy = 0;
  c->started = 0;
  c->continued = 0;
  jr_httpreq_next(&c->req);
  arm(c);                            /* idle between requests */
  conn_continue(c);
}

/* Queues len bytes (copied). Returns 0 or -1 (the connection is then closed). */
static int conn_write(jr_http_conn *c, const char *head, size_t hlen, const char *body, size_t blen,
                      int last, int interim) {
  if (c->closing) return -1;
  jr_wreq *q = malloc(sizeof *q + hlen + blen);
  if (q == NULL) {
    conn_close(c);
    return -1;
  }
  memcpy(q->data, head, hlen);
  if (blen) memcpy(q->data + hlen, body, blen);
  q->c = c;
  q->last = last;
  q->interim = interim;
  uv_buf_t b = uv_buf_init(q->data, (unsigned)(hlen + blen));
  if (uv_write(&q->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
    free(q);
    conn_close(c);
    return -1;
  }
  if (!interim) arm(c);              /* a client that does not read its response times out */
  return 0;
}

static const char *reason_of(int status) {
  if (status == 431) return "Request Header Fields Too Large";
  const char *r = http_status_str((enum http_status)status);
  return (r && strcmp(r, "<unknown>") != 0) ? r : "Status";
}

/* Answers with a JSON error {"error": msg} (msg is static text without quotes) and closes. */
static void conn_fail(jr_http_conn *c, int status, const char *msg) {
  char head[256], body[512];
  int bl = snprintf(body, sizeof body, "{\"error\":\"%s\"}\n", msg);
  if (bl < 0 || (size_t)bl >= sizeof body) bl = (int)strlen(strcpy(body, "{\"error\":\"bad request\"}\n"));
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                    "Connection: close\r\n\r\n", status, reason_of(status), bl);
  c->busy = 1;
  uv_read_stop((uv_stream_t *)&c->tcp);
  conn_write(c, head, (size_t)hl, body, (size_t)bl, 1, 0);
}

/* ---- dispatching ------------------------------------------------------ */

/* Runs the handler for the complete request in c->req, in a new coroutine. */
static void dispatch(jr_http_conn *c) {
  lua_State *L = jr_H.L;
  jr_httpreq *r = &c->req;
  c->busy = 1;
  uv_timer_stop(&c->timer);          /* a handler may take long (long polls) */
  c->head_only = r->p.method == HTTP_HEAD;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->s->fn_ref);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, jr_httpreq_method(r));
  lua_setfield(L, -2, "method");
  lua_pushlstring(L, r->buf, r->url_len);
  lua_setfield(L, -2, "target");
  lua_createtable(L, 0, r->nhdr);
  for (int i = 0; i < r->nhdr; i++) {
    lua_pushlstring(L, JR_HTTPREQ_NAME(r, i), r->hdr[i][1]);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushlstring(L, JR_HTTPREQ_VALUE(r, i), r->hdr[i][3]);
    } else {                         /* a repeated header: values joined as RFC 9110 allows */
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, JR_HTTPREQ_VALUE(r, i), r->hdr[i][3]);
      lua_concat(L, 3);
    }
    lua_rawset(L, -3);
  }
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, r->body ? r->body : "", r->body_len);
  lua_setfield(L, -2, "body");
  lua_pushstring(L, c->peer);
  lua_setfield(L, -2, "peer");
  jr_http_req_ud *u = lua_newuserdata(L, sizeof *u);
  u->c = c;
  c->ud = u;
  luaL_getmetatable(L, REQ_MT);
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, "handle");
  jr_sched_spawn(L, 1);
  lua_pop(L, 1);
}

/* Feeds bytes to the parser; answers errors, sends 100 Continue, dispatches
 * a complete request. Returns how many bytes were used. */
static size_t conn_feed(jr_http_conn *c, const char *data, size_t len) {
  if (!c->started) {
    c->started = 1;
    arm(c);                          /* the whole request must arrive within the timeout */
  }
  size_t n = jr_httpreq_feed(&c->req, data, len);
  if (c->req.error_status) {
    conn_fail(c, c->req.error_status, c->req.error_msg);
    return len;
  }
  if (c->req.headers_done && c->req.expect_continue && !c->continued && !c->req.complete) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    c->continued = 1;
    conn_write(c, cont, sizeof cont - 1, NULL, 0, 0, 1);
  }
  if (c->req.complete) dispatch(c);
  return n;
}

static void pending_add(jr_http_conn *c, const char *data, size_t len) {
  if (c->pending_len + len > c->pending_cap) {
    size_t cap = c->pending_cap ? c->pending_cap : 4096;
    while (cap < c->pending_len + len) cap *= 2;
    char *p = realloc(c->pending, cap);
    if (p == NULL) {
      conn_close(c);
      return;
    }
    c->pending = p;
    c->pending_cap = cap;
  }
  memcpy(c->pending + c->pending_len, data, len);
  c->pending_len += len;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(read_buf, sizeof read_buf);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  jr_http_conn *c = st->data;
  if (nread < 0) {                   /* EOF or error: the client is gone */
    conn_close(c);
    return;
  }
  if (nread == 0 || c->closing) return;
  if (c->busy) {                     /* a pipelined request waits for the response */
    pending_add(c, buf->base, (size_t)nread);
    if (!c->closing && c->pending_len > c->s->max_header + c->s->max_body) {
      uv_read_stop(st);              /* enough buffered; read on after the response */
      c->reading = 0;
    }
    return;
  }
  size_t n = conn_feed(c, buf->base, (size_t)nread);
  if (c->busy && !c->closing && n < (size_t)nread) pending_add(c, buf->base + n, (size_t)nread - n);
}

/* After a response: handles what was buffered meanwhile, then reads on. */
static void conn_continue(jr_http_conn *c) {
  while (!c->closing && !c->busy && c->pending_len > 0) {
    size_t n = conn_feed(c, c->pending, c->pending_len);
    if (c->closing) return;
    memmove(c->pending, c->pending + n, c->pending_len - n);
    c->pending_len -= n;
  }
  if (!c->closing && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
      conn_close(c);
      return;
    }
    c->reading = 1;
  }
}

static void on_timeout(uv_timer_t *t) {
  jr_http_conn *c = t->data;
  if (c->closing) return;
  if (c->started && !c->busy) {
    conn_fail(c, 408, "request timeout: the request did not arrive in time");
  } else {
    conn_close(c);                   /* idle, or not reading its response */
  }
}

static void on_connection(uv_stream_t *ls, int status) {
  jr_http_srv *s = ls->data;
  if (status < 0 || s->closing) return;
  jr_http_conn *c = calloc(1, sizeof *c);
  if (c == NULL) return;
  c->s = s;
  uv_tcp_init(jr_H.loop, &c->tcp);
  uv_timer_init(jr_H.loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  jr_httpreq_init(&c->req, s->max_header, s->max_body);
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  strcpy(c->peer, "?");
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
    char ip[48] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    } else {
      uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
  }
  if (s->nconns > s->max_conns) {
    conn_fail(c, 503, "too many connections: try again later");
    return;
  }
  arm(c);
  conn_continue(c);
}

/* ---- Lua functions ---------------------------------------------------- */

static size_t opt_size(lua_State *L, const char *k, size_t def, size_t max) {
  lua_getfield(L, 1, k);
  size_t v = def;
  if (!lua_isnil(L, -1)) {
    lua_Number n = luaL_checknumber(L, -1);
    if (!(n >= 1 && n <= (lua_Number)max))
      luaL_error(L, "http.listen: %s must be between 1 and %f, got %f", k, (double)max, n);
    v = (size_t)n;
  }
  lua_pop(L, 1);
  return v;
}

/* http.listen{host=, port=, handler=, max_header= (bytes, 16384), max_body=
 * (bytes, 1 MiB), timeout= (s, 10), max_conns= (1024)} -> server, or nil,
 * "EADDRINUSE: ..." (a libuv error name and message) when it cannot listen. */
static int l_listen(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "host");
  const char *host = luaL_optstring(L, -1, "127.0.0.1");
  lua_getfield(L, 1, "port");
  int port = (int)luaL_optinteger(L, -1, 7070);
  lua_getfield(L, 1, "handler");
  luaL_argcheck(L, lua_isfunction(L, -1), 1, "handler must be a function(req)");
  luaL_argcheck(L, port >= 0 && port <= 65535, 1, "port must be 0-65535");
  size_t max_header = opt_size(L, "max_header", 16384, 1 << 20);
  size_t max_body = opt_size(L, "max_body", 1 << 20, (size_t)1 << 30);
  size_t timeout = opt_size(L, "timeout", 10, 86400);
  size_t max_conns = opt_size(L, "max_conns", 1024, 100000);
  struct sockaddr_storage addr;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "EINVAL: '%s' is not an IP address (use e.g. 127.0.0.1, 0.0.0.0 or ::1)", host);
    return 2;
  }
  jr_http_srv *s = calloc(1, sizeof *s);
  if (s == NULL) return luaL_error(L, "http.listen: out of memory");
  s->max_header = max_header;
  s->max_body = max_body;
  s->timeout_ms = (uint64_t)timeout * 1000;
  s->max_conns = (int)max_conns;
  uv_tcp_init(jr_H.loop, &s->tcp);
  s->tcp.data = s;
  s->listener_open = 1;
  int rc = uv_tcp_bind(&s->tcp, (struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->tcp, 511, on_connection);
  if (rc != 0) {
    s->fn_ref = LUA_NOREF;
    s->closing = 1;
    s->next = all_srvs;
    all_srvs = s;
    uv_close((uv_handle_t *)&s->tcp, listener_closed);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: cannot listen on %s:%d: %s", uv_err_name(rc), host, port, uv_strerror(rc));
    return 2;
  }
  lua_pushvalue(L, 4);
  s->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  s->next = all_srvs;
  all_srvs = s;
  jr_http_srv_ud *u = lua_newuserdata(L, sizeof *u);
  u->s = s;
  s->ud = u;
  luaL_getmetatable(L, SRV_MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* srv:address() -> ip, port (the port the system chose for port 0) */
static int s_address(lua_State *L) {
  jr_http_srv_ud *u = luaL_checkudata(L, 1, SRV_MT);
  if (u->s == NULL || u->s->closing) return luaL_error(L, "http server: closed");
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  char ip[48] = "?";
  int port = 0;
  if (uv_tcp_getsockname(&u->s->tcp, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    } else {
      uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
  }
  lua_pushstring(L, ip);
  lua_pushinteger(L, port);
  return 2;
}

/* srv:close() (also on collection): stops listening and closes every
 * connection; handlers still running find their clients gone. */
static int s_close(lua_State *L) {
  jr_http_srv_ud *u = luaL_checkudata(L, 1, SRV_MT);
  if (u->s == NULL) return 0;
  jr_http_srv *s = u->s;
  u->s = NULL;
  s->ud = NULL;
  if (!jr_H.shutting_down) srv_close(s);
  return 0;
}

static jr_http_req_ud *check_req(lua_State *L) {
  return luaL_checkudata(L, 1, REQ_MT);
}

/* Pushes one string: "Name: value\r\n" for each header of the table at index
 * idx; raises on a name or value that would break the response. The lines
 * are joined with lua_concat at a fixed stack slot rather than a luaL_Buffer:
 * a buffer flushes its pieces onto the top of the stack, where lua_next keeps
 * its key and value, so a long header (over the buffer's 8 KiB) mixed the
 * two up. */
static void push_headers(lua_State *L, int idx) {
  lua_pushliteral(L, "");                    /* the text so far */
  int acc = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t nl, vl;
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "http.respond: header names must be strings");
    const char *n = lua_tolstring(L, -2, &nl);
    const char *v = luaL_checklstring(L, -1, &vl);    /* a number value is converted in place */
    for (size_t i = 0; i < nl; i++)
      if (n[i] <= ' ' || n[i] == ':' || n[i] == 127) luaL_error(L, "http.respond: bad header name '%s'", n);
    for (size_t i = 0; i < vl; i++)
      if (v[i] == '\r' || v[i] == '\n' || v[i] == 0) luaL_error(L, "http.respond: header %s has a line break", n);
    lua_pushvalue(L, acc);
    lua_pushvalue(L, -3);
    lua_pushliteral(L, ": ");
    lua_pushvalue(L, -4);
    lua_pushliteral(L, "\r\n");
    lua_concat(L, 5);
    lua_replace(L, acc);
    lua_pop(L, 1);                           /* the value; the key stays for lua_next */
  }
}

/* http.respond(handle, status, headers|nil, body|nil) -> true, or false when
 * the client has gone or the request was answered already. Content-Length
 * and Connection are added here. */
static int l_respond(lua_State *L) {
  jr_http_req_ud *u = check_req(L);
  int status = (int)luaL_checkinteger(L, 2);
  luaL_argcheck(L, status >= 200 && status <= 599, 2, "status must be 200-599");
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  size_t blen = 0;
  const char *body = luaL_optlstring(L, 4, "", &blen);
  jr_http_conn *c = u->c;
  if (c == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_settop(L, 4);
  char line[128];
  snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", status, reason_of(status));
  lua_pushstring(L, line);
  if (!lua_isnoneornil(L, 3)) push_headers(L, 3); else lua_pushliteral(L, "");
  int keep = c->req.keep_alive && !c->s->closing;
  snprintf(line, sizeof line, "Content-Length: %zu\r\nConnection: %s\r\n\r\n", blen,
           keep ? "keep-alive" : "close");
  lua_pushstring(L, line);
  lua_concat(L, 3);                          /* the head; the body stays at index 4 */
  size_t hlen;
  const char *head = lua_tolstring(L, -1, &hlen);
  u->c = NULL;
  c->ud = NULL;
  if (c->head_only) blen = 0;
  conn_write(c, head, hlen, body, blen, !keep, 0);
  lua_pushboolean(L, 1);
  return 1;
}

/* http.closed(handle) -> true when the client is gone (or it was answered). */
static int l_closed(lua_State *L) {
  jr_http_req_ud *u = check_req(L);
  lua_pushboolean(L, u->c == NULL);
  return 1;
}

/* A request handle collected unanswered: 500, so the client is not left waiting. */
static int r_gc(lua_State *L) {
  jr_http_req_ud *u = check_req(L);
  jr_http_conn *c = u->c;
  if (c == NULL) return 0;
  u->c = NULL;
  c->ud = NULL;
  if (!jr_H.lua_closing && !jr_H.shutting_down)
    conn_fail(c, 500, "internal error: the handler ended without an answer");
  return 0;
}

/* Closes every server and connection (the host is shutting down). */
void jr_http_shutdown(void) {
  jr_http_srv *s = all_srvs;
  while (s) {
    jr_http_srv *next = s->next;
    if (!s->closing) srv_close(s);
    s = next;
  }
}

int jr_open_http(lua_State *L) {
  luaL_newmetatable(L, SRV_MT);
  lua_newtable(L);
  lua_pushcfunction(L, s_address);
  lua_setfield(L, -2, "address");
  lua_pushcfunction(L, s_close);
  lua_setfield(L, -2, "close");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, s_close);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, REQ_MT);
  lua_pushcfunction(L, r_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_listen);
  lua_setfield(L, -2, "listen");
  lua_pushcfunction(L, l_respond);
  lua_setfield(L, -2, "respond");
  lua_pushcfunction(L, l_closed);
  lua_setfield(L, -2, "closed");
  return 1;
}
