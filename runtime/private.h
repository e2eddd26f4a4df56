/* private.h - declarations shared by the files of the jobrt host.
 *
 * The host is one process, one libuv loop and one Lua state. Every piece of Lua
 * runs inside a coroutine that the scheduler (sched.c) owns; C primitives that
 * wait (timers, Redis replies, terminal input) park the running coroutine and
 * resume it from the loop when their event arrives.
 */
#ifndef JR_PRIVATE_H
#define JR_PRIVATE_H

#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <uv.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#define JR_VERSION "0.1.0"

/* Error codes. They reach Lua as luv does it: nil, "CODE: message", "CODE"
 * (a Redis error reply is nil, the message as Redis sent it, "EREDIS", and
 * its first word, e.g. "NOSCRIPT"). */
#define JR_ERRNO_MAP(X)                                                   \
  X(ECONNREFUSED, "cannot connect")                                       \
  X(ECONN, "connection lost")                                             \
  X(ETIMEDOUT, "deadline passed")                                         \
  X(ECLOSED, "connection closed")                                         \
  X(EAUTH, "authentication or database selection failed")                 \
  X(ETLS, "TLS failed (certificate, handshake or configuration)")         \
  X(EREDIS, "Redis answered with an error reply")                         \
  X(EPROTO, "the server broke the protocol (bad bytes, an unasked reply)") \
  X(EROLE, "the server is not the primary")                               \
  X(EINVAL, "bad address or option")                                      \
  X(ENOMEM, "out of memory")

typedef enum {
#define JR_ERR_ENUM(name, msg) JR_##name,
  JR_ERRNO_MAP(JR_ERR_ENUM)
#undef JR_ERR_ENUM
  JR_ERR_MAX
} jr_errno_t;

const char *jr_err_name(jr_errno_t e);

/* The one host per process. */
typedef struct jr_host {
  lua_State *L;          /* main state; never runs user code directly */
  uv_loop_t *loop;
  int live;              /* spawned coroutines that have not finished */
  int exit_code;         /* process exit status */
  int shutting_down;     /* set once live reached zero (or jobrt.exit was called) */
  int exiting;           /* jobrt.exit called: shut down even with coroutines alive */
  int parked;            /* set by a primitive just before it yields */
  int main_ref;          /* registry ref of the main coroutine */
  int log_level;         /* 0 debug, 1 info, 2 warn, 3 error */
  int lua_closing;       /* lua_close() running: finalizers must not touch the registry */
} jr_host;

extern jr_host jr_H;

/* sched.c */
void jr_sched_init(lua_State *L, uv_loop_t *loop);
void jr_sched_close(void);
void jr_sched_free(void);                         /* after lua_close */
void jr_sched_abort(void);
void jr_sched_dump(void);
int jr_sched_spawn(lua_State *L, int nargs);      /* fn and args on top of L */
void jr_resume(lua_State *co, int nargs);
int jr_park(lua_State *L);                        /* return jr_park(L) from a C function */
void jr_check_park(lua_State *L, const char *fname); /* raises unless L may be parked */
int jr_ref_thread(lua_State *L);                  /* ref the running thread */
lua_State *jr_unref_thread(int ref);              /* get thread back, drop the ref */
void jr_drop_thread(lua_State *L, int ref);       /* drop the ref, thread not resumed */
void jr_report_error(lua_State *co, const char *what);
extern _Atomic uint64_t jr_run_deadline_ns;       /* job deadline of the running coroutine */
extern lua_State *jr_running_co;                  /* the coroutine jr_resume runs now */
int jr_scope_interrupt(lua_State *L);             /* for the watchdog hook (proc.c) */
int jr_open_core(lua_State *L);

/* log.c: levels 0 debug, 1 info, 2 warn, 3 error (jr_H.log_level filters) */
typedef struct jr_log_field {
  const char *key;
  const char *value;     /* a string, or raw JSON (a number) when raw is set */
  size_t len;
  int raw;
} jr_log_field;
void jr_log_init(uv_loop_t *loop);
void jr_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void jr_log_fields(int level, const char *msg, size_t n, const jr_log_field *fields, int nf);
void jr_log_direct(int level, const char *msg);  /* unbuffered; safe from another thread */
void jr_log_flush(void);
int jr_log_set_format(const char *name);         /* "text" | "json": 0, else -1 */
const char *jr_log_format(void);
void jr_log_register(lua_State *L);              /* adds log functions to the table on top */
void jr_log_close(void);                         /* flush, close the handles */
void jr_log_free(void);                          /* after lua_close */

/* timer.c */
int jr_open_timer(lua_State *L);

/* signal.c */
int jr_open_signal(lua_State *L);

/* fswatch.c */
int jr_open_fswatch(lua_State *L);

/* redis_conn.c (the Redis client; its files share redis_private.h) */
int jr_open_redis(lua_State *L);
void jr_redis_shutdown(void);                     /* closes every connection and stream */
void jr_redis_pool_free(void);                    /* after lua_close: pools, TLS contexts */

/* net.c: a plain TCP listener (tests use it as a fake server) */
int jr_open_net(lua_State *L);
void jr_net_shutdown(void);

/* term.c */
int jr_open_term(lua_State *L);
void jr_term_shutdown(void);

/* json.c */
int jr_open_json(lua_State *L);

/* proc.c */
int jr_open_proc(lua_State *L);
void jr_proc_shutdown(void);

/* http.c */
int jr_open_http(lua_State *L);
void jr_http_shutdown(void);

/* tcp.c */
int jr_open_tcp(lua_State *L);
void jr_tcp_shutdown(void);

/* embed.c (generated in build/) */
typedef struct jr_embedded {
  const char *name;
  const unsigned char *data;
  size_t len;
} jr_embedded;
extern const jr_embedded jr_embedded_modules[];

/* Registers the embedded stdlib as a package searcher. */
void jr_stdlib_install(lua_State *L);
/* Opens every C module (jobrt.core...) and cjson into package.loaded (stdlib.c). */
void jr_preload_modules(lua_State *L);

#endif
