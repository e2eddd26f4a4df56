/* proc.c - child processes (spawn, wait, kill, captured output, heartbeat)
 * and the few file-system calls jobrt needs at start-up: finding job files,
 * and making and checking the private directory of the embedded Redis
 * (lstat, mkdir, chmod, getuid).
 *
 * Used by the --procs supervisor (children are `jobrt` itself) and by the
 * tests (run a jobrt command, read its output and exit status). A child may
 * be given a heartbeat pipe on fd 3: the child calls proc.heartbeat(3, s)
 * to write a byte every s seconds from its loop, and the parent sees how
 * long ago the last byte came (p:beat_age()) and whether one came at all
 * (p:beats(): a worker child beats once it serves); a child whose loop is
 * stuck in a handler stops beating.
 *
 * The process struct is malloc'd and freed when its handle and pipes are
 * closed and the Lua object is gone, so an exit that arrives after the Lua
 * object was collected is still safe.
 */
#include "private.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

typedef struct {
  char *data;
  size_t len, cap;
} jr_buf;

typedef struct jr_proc {
  uv_process_t p;
  uv_pipe_t pipes[4];   /* 0 stdin, 1 stdout, 2 stderr, 3 heartbeat */
  int piped[4];
  int open;             /* handles not yet closed */
  int exited, exit_status, term_signal;
  int waiter_ref;       /* coroutine in p:wait() */
  int collected;
  jr_buf out[3];        /* captured stdout (1) and stderr (2) */
  char *stdin_data;
  size_t stdin_len;
  uv_write_t wreq;
  uint64_t last_beat;   /* uv_now ms */
  uint64_t beats;       /* heartbeat bytes read so far */
  struct jr_proc *next;
} jr_proc;

typedef struct {
  jr_proc *p;
} jr_proc_ud;

static jr_proc *all_procs;   /* live process structs, for shutdown */

static const char PROC_MT[] = "jobrt.proc";

static void proc_maybe_free(jr_proc *p) {
  if (p->open > 0 || !p->collected) return;
  jr_proc **pp = &all_procs;
  while (*pp && *pp != p) pp = &(*pp)->next;
  if (*pp) *pp = p->next;
  for (int i = 0; i < 3; i++) free(p->out[i].data);
  free(p->stdin_data);
  free(p);
}

static void handle_closed(uv_handle_t *h) {
  jr_proc *p = h->data;
  p->open--;
  proc_maybe_free(p);
}

static void close_all(jr_proc *p) {
  for (int i = 0; i < 4; i++)
    if (p->piped[i] && !uv_is_closing((uv_handle_t *)&p->pipes[i]))
      uv_close((uv_handle_t *)&p->pipes[i], handle_closed);
  if (!uv_is_closing((uv_handle_t *)&p->p)) uv_close((uv_handle_t *)&p->p, handle_closed);
}

/* Resumes the waiter once the process exited and its output pipes hit EOF. */
static void maybe_finish(jr_proc *p) {
  if (!p->exited) return;
  for (int i = 1; i <= 2; i++)
    if (p->piped[i] && !uv_is_closing((uv_handle_t *)&p->pipes[i])) return;
  if (p->waiter_ref != LUA_NOREF) {
    lua_State *co = jr_unref_thread(p->waiter_ref);
    p->waiter_ref = LUA_NOREF;
    lua_pushinteger(co, p->exit_status);
    if (p->term_signal) lua_pushinteger(co, p->term_signal); else lua_pushnil(co);
    jr_resume(co, 2);
  }
}

static void on_exit_cb(uv_process_t *h, int64_t status, int sig) {
  jr_proc *p = h->data;
  p->exited = 1;
  p->exit_status = (int)status;
  p->term_signal = sig;
  /* The heartbeat pipe may stay open in grandchildren: stop reading it. */
  if (p->piped[3] && !uv_is_closing((uv_handle_t *)&p->pipes[3]))
    uv_close((uv_handle_t *)&p->pipes[3], handle_closed);
  maybe_finish(p);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  static char slab[65536];
  (void)hint;
  buf->base = slab;
  buf->len = sizeof slab;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  jr_proc *p = s->data;
  int idx = (uv_pipe_t *)s - p->pipes;
  if (n > 0) {
    if (idx == 3) {
      p->last_beat = uv_now(jr_H.loop);
      p->beats += (uint64_t)n;
      return;
    }
    jr_buf *b = &p->out[idx];
    if (b->len + (size_t)n + 1 > b->cap) {
      size_t cap = b->cap ? b->cap * 2 : 4096;
      while (cap < b->len + (size_t)n + 1) cap *= 2;
      char *nd = realloc(b->data, cap);
      if (nd == NULL) return;
      b->data = nd;
      b->cap = cap;
    }
    memcpy(b->data + b->len, buf->base, (size_t)n);
    b->len += (size_t)n;
    return;
  }
  if (n < 0) {
    uv_close((uv_handle_t *)s, handle_closed);
    maybe_finish(p);
  }
}

static void on_stdin_written(uv_write_t *w, int status) {
  (void)status;
  jr_proc *p = w->data;
  if (!uv_is_closing((uv_handle_t *)&p->pipes[0])) uv_close((uv_handle_t *)&p->pipes[0], handle_closed);
}

/* Fills out[0..n-1] with the strings of list[1..n] (the table at index
 * `list`, field `what` for messages). Numbers are converted, and every
 * string is stored in the anchor table at index `anchor`, which stays on the
 * stack until uv_spawn has copied them: a number converted by lua_tolstring
 * on a copy popped afterwards would be a new string nothing refers to, that
 * the collector may free (and did: garbage argv) before uv_spawn reads it.
 * Raises naming the entry when one is neither a string nor a number. */
static void string_list(lua_State *L, int list, int anchor, const char *what, char **out, int n) {
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, list, i + 1);
    int t = lua_type(L, -1);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      luaL_error(L, "proc.spawn: %s[%d] must be a string or a number, got %s", what, i + 1, lua_typename(L, t));
    out[i] = (char *)lua_tostring(L, -1);       /* a string now, in place on the stack */
    lua_rawseti(L, anchor, i + 1);              /* anchored: alive until l_spawn returns */
  }
}

/* proc.spawn{ file=, args={...}, env={ "K=V", ... } | nil (inherit),
 *             cwd=, stdin=string|nil, capture=true|false, heartbeat=bool,
 *             detached=bool }
 * -> process object, or nil, err. args[1] is argv[0]; args and env entries
 * are strings or numbers. With capture, the child's stdout and stderr are
 * collected (p:output()); otherwise they are inherited. Strings read here
 * stay referenced from the stack (index 1's table, or the anchor tables)
 * until uv_spawn has copied them. */
static int l_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (jr_H.shutting_down) {
    lua_pushnil(L);
    lua_pushliteral(L, "cannot start a process: jobrt is shutting down");
    return 2;
  }
  lua_getfield(L, 1, "file");                                   /* 2 */
  if (lua_type(L, 2) != LUA_TSTRING) return luaL_error(L, "proc.spawn: file must be a string");
  const char *file = lua_tostring(L, 2);
  lua_getfield(L, 1, "args");                                   /* 3 */
  if (!lua_istable(L, 3)) return luaL_error(L, "proc.spawn: args must be a table of strings");
  int nargs = (int)lua_objlen(L, 3);
  char **args = lua_newuserdata(L, sizeof(char *) * (size_t)(nargs + 2));   /* 4 */
  lua_createtable(L, nargs, 0);                                 /* 5: anchors args */
  string_list(L, 3, 5, "args", args, nargs);
  if (nargs == 0) {
    args[0] = (char *)file;
    nargs = 1;
  }
  args[nargs] = NULL;
  char **env = NULL;
  lua_getfield(L, 1, "env");                                    /* 6 */
  if (lua_istable(L, 6)) {
    int n = (int)lua_objlen(L, 6);
    env = lua_newuserdata(L, sizeof(char *) * (size_t)(n + 1)); /* 7 */
    lua_createtable(L, n, 0);                                   /* 8: anchors env */
    string_list(L, 6, 8, "env", env, n);
    env[n] = NULL;
  } else if (!lua_isnil(L, 6)) {
    return luaL_error(L, "proc.spawn: env must be a table of \"K=V\" strings, or nil to inherit");
  }
  lua_getfield(L, 1, "cwd");
  if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "proc.spawn: cwd must be a string");
  const char *cwd = lua_tostring(L, -1);
  lua_getfield(L, 1, "capture");
  int capture = lua_toboolean(L, -1);
  lua_getfield(L, 1, "heartbeat");
  int heartbeat = lua_toboolean(L, -1);
  lua_getfield(L, 1, "detached");
  int detached = lua_toboolean(L, -1);
  lua_getfield(L, 1, "stdin");
  if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "proc.spawn: stdin must be a string");
  size_t inlen = 0;
  const char *in = lua_tolstring(L, -1, &inlen);
  char *in_copy = NULL;
  if (in) {
    in_copy = malloc(inlen ? inlen : 1);
    if (in_copy == NULL) return luaL_error(L, "proc.spawn: out of memory");
    memcpy(in_copy, in, inlen);
  }

  jr_proc *p = calloc(1, sizeof *p);
  if (p == NULL) {
    free(in_copy);
    return luaL_error(L, "proc.spawn: out of memory");
  }
  p->stdin_data = in_copy;          /* freed with p, whatever happens next */
  p->stdin_len = inlen;
  p->waiter_ref = LUA_NOREF;
  p->last_beat = uv_now(jr_H.loop);
  p->next = all_procs;
  all_procs = p;
  uv_stdio_container_t stdio[4];
  memset(stdio, 0, sizeof stdio);
  for (int i = 0; i < 4; i++) p->pipes[i].data = p;
  if (in) {
    uv_pipe_init(jr_H.loop, &p->pipes[0], 0);
    p->piped[0] = 1;
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&p->pipes[0];
  } else {
    stdio[0].flags = UV_INHERIT_FD;
    stdio[0].data.fd = 0;
  }
  for (int i = 1; i <= 2; i++) {
    if (capture) {
      uv_pipe_init(jr_H.loop, &p->pipes[i], 0);
      p->piped[i] = 1;
      stdio[i].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
      stdio[i].data.stream = (uv_stream_t *)&p->pipes[i];
    } else {
      stdio[i].flags = UV_INHERIT_FD;
      stdio[i].data.fd = i;
    }
  }
  int nstdio = 3;
  if (heartbeat) {
    uv_pipe_init(jr_H.loop, &p->pipes[3], 0);
    p->piped[3] = 1;
    stdio[3].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[3].data.stream = (uv_stream_t *)&p->pipes[3];
    nstdio = 4;
  }
  uv_process_options_t o;
  memset(&o, 0, sizeof o);
  o.file = file;
  o.args = args;
  o.env = env;
  o.cwd = cwd;
  o.exit_cb = on_exit_cb;
  o.stdio = stdio;
  o.stdio_count = nstdio;
  if (detached) o.flags |= UV_PROCESS_DETACHED;
  p->p.data = p;
  int rc = uv_spawn(jr_H.loop, &p->p, &o);
  p->open = 1;
  for (int i = 0; i < 4; i++) p->open += p->piped[i];
  if (rc != 0) {
    p->collected = 1;
    close_all(p);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot start %s: %s", file, uv_strerror(rc));
    return 2;
  }
  for (int i = 1; i <= 3; i++)
    if (p->piped[i]) uv_read_start((uv_stream_t *)&p->pipes[i], on_alloc, on_read);
  if (in) {
    uv_buf_t b = uv_buf_init(p->stdin_data, (unsigned)inlen);
    p->wreq.data = p;
    uv_write(&p->wreq, (uv_stream_t *)&p->pipes[0], &b, 1, on_stdin_written);
  }
  jr_proc_ud *u = lua_newuserdata(L, sizeof *u);
  u->p = p;
  luaL_getmetatable(L, PROC_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static jr_proc *check_proc(lua_State *L) {
  jr_proc_ud *u = luaL_checkudata(L, 1, PROC_MT);
  return u->p;
}

/* p:pid() */
static int p_pid(lua_State *L) {
  lua_pushinteger(L, check_proc(L)->p.pid);
  return 1;
}

/* p:kill([signal number or name]) -> true | nil, err */
static int p_kill(lua_State *L) {
  jr_proc *p = check_proc(L);
  int sig = SIGTERM;
  if (lua_type(L, 2) == LUA_TNUMBER) sig = (int)lua_tointeger(L, 2);
  else if (lua_type(L, 2) == LUA_TSTRING) {
    const char *s = lua_tostring(L, 2);
    if (strcmp(s, "SIGKILL") == 0 || strcmp(s, "KILL") == 0) sig = SIGKILL;
    else if (strcmp(s, "SIGINT") == 0 || strcmp(s, "INT") == 0) sig = SIGINT;
    else if (strcmp(s, "SIGSTOP") == 0 || strcmp(s, "STOP") == 0) sig = SIGSTOP;
    else if (strcmp(s, "SIGCONT") == 0 || strcmp(s, "CONT") == 0) sig = SIGCONT;
    else if (strcmp(s, "SIGHUP") == 0 || strcmp(s, "HUP") == 0) sig = SIGHUP;
    else if (strcmp(s, "SIGTERM") != 0 && strcmp(s, "TERM") != 0)
      return luaL_argerror(L, 2, "signal name expected (SIGTERM, SIGINT, SIGKILL, SIGSTOP, SIGCONT, SIGHUP)");
  }
  if (p->exited) {
    lua_pushnil(L);
    lua_pushliteral(L, "process already exited");
    return 2;
  }
  int rc = uv_process_kill(&p->p, sig);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* p:wait() -> exit_status, term_signal|nil (yields until exit and EOF) */
static int p_wait(lua_State *L) {
  jr_proc *p = check_proc(L);
  jr_check_park(L, "proc wait");
  if (p->waiter_ref != LUA_NOREF) return luaL_error(L, "proc: wait() already in progress");
  int done = p->exited;
  for (int i = 1; i <= 2; i++)
    if (p->piped[i] && !uv_is_closing((uv_handle_t *)&p->pipes[i])) done = 0;
  if (done) {
    lua_pushinteger(L, p->exit_status);
    if (p->term_signal) lua_pushinteger(L, p->term_signal); else lua_pushnil(L);
    return 2;
  }
  p->waiter_ref = jr_ref_thread(L);
  return jr_park(L);
}

/* p:exited() -> bool, status, signal */
static int p_exited(lua_State *L) {
  jr_proc *p = check_proc(L);
  lua_pushboolean(L, p->exited);
  lua_pushinteger(L, p->exit_status);
  lua_pushinteger(L, p->term_signal);
  return 3;
}

/* p:output() -> stdout, stderr (captured so far) */
static int p_output(lua_State *L) {
  jr_proc *p = check_proc(L);
  for (int i = 1; i <= 2; i++) lua_pushlstring(L, p->out[i].data ? p->out[i].data : "", p->out[i].len);
  return 2;
}

/* p:beat_age() -> seconds since the last heartbeat byte (or spawn) */
static int p_beat_age(lua_State *L) {
  jr_proc *p = check_proc(L);
  lua_pushnumber(L, (double)(uv_now(jr_H.loop) - p->last_beat) / 1000.0);
  return 1;
}

/* p:beats() -> how many heartbeat bytes came so far (0 until the child's first beat: a jobrt
 * worker child starts beating once it serves) */
static int p_beats(lua_State *L) {
  jr_proc *p = check_proc(L);
  lua_pushnumber(L, (lua_Number)p->beats);
  return 1;
}

static int p_gc(lua_State *L) {
  jr_proc_ud *u = luaL_checkudata(L, 1, PROC_MT);
  jr_proc *p = u->p;
  if (p == NULL) return 0;
  u->p = NULL;
  p->collected = 1;
  if (jr_H.lua_closing) {            /* handles were closed by jr_proc_shutdown */
    proc_maybe_free(p);
    return 0;
  }
  if (p->waiter_ref != LUA_NOREF) jr_drop_thread(L, p->waiter_ref);
  p->waiter_ref = LUA_NOREF;
  close_all(p);
  return 0;
}

/* Closes the handles of every process (the children keep running). */
void jr_proc_shutdown(void) {
  for (jr_proc *p = all_procs; p; p = p->next) close_all(p);
}

/* ---- child side: heartbeat ------------------------------------------- */

typedef struct {
  uv_timer_t t;
  int fd;
} jr_beat;

/* Writes one heartbeat byte. When the parent is gone (EPIPE) the child stops
 * beating and sends itself SIGTERM, so an orphaned worker shuts down
 * gracefully instead of serving on unsupervised. */
static void on_beat(uv_timer_t *t) {
  jr_beat *b = t->data;
  ssize_t w = write(b->fd, ".", 1);
  if (w < 0 && errno == EPIPE) {
    uv_timer_stop(t);
    kill(getpid(), SIGTERM);
  }
}

/* proc.heartbeat(fd, seconds): write a byte to fd every `seconds`; SIGTERM
 * to this process once nobody reads them any more. */
static int l_heartbeat(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  double s = luaL_checknumber(L, 2);
  luaL_argcheck(L, s > 0, 2, "interval must be > 0");
  if (fcntl(fd, F_GETFD) == -1) {
    lua_pushnil(L);
    lua_pushfstring(L, "fd %d is not open", fd);
    return 2;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  signal(SIGPIPE, SIG_IGN);
  jr_beat *b = malloc(sizeof *b);
  if (b == NULL) return luaL_error(L, "proc.heartbeat: out of memory");
  b->fd = fd;
  uv_timer_init(jr_H.loop, &b->t);
  b->t.data = b;
  uv_unref((uv_handle_t *)&b->t);
  uv_timer_start(&b->t, on_beat, 0, (uint64_t)(s * 1000));
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- in-process watchdog ------------------------------------------- */

/* A loop timer stamps `last_tick` ten times a second. A thread checks the
 * stamp; when the loop has not ticked for `limit` seconds (a handler that
 * never yields), it signals the main thread, whose signal handler sets a
 * Lua count hook (the pattern luajit.c uses for Ctrl-C): the next Lua
 * instruction that runs in the interpreter raises an error in the stuck
 * coroutine, so only that job fails. Code running inside a JIT-compiled
 * loop never sees the hook; if the loop is still stuck after another
 * `limit` seconds the process says why and exits (status 70), so that a
 * supervisor restarts it rather than it stalling silently.
 *
 * The same thread enforces job deadlines (a handler's timeout, the end of
 * its confirmed lease) from the handler's first instruction: the scheduler
 * publishes the deadline of the job whose coroutine runs now
 * (jr_run_deadline_ns); once it has passed and that code is still running,
 * the hook ends the job's scope (sched.c: jr_scope_interrupt) and raises an
 * error at every instruction until the coroutine has unwound, so a pcall
 * of the handler's own cannot swallow it. With limit 0 only deadlines are
 * watched. */
#include <pthread.h>
#include <stdatomic.h>

static _Atomic uint64_t last_tick;
static _Atomic int hooked;
static _Atomic int deadline_hooked;      /* a job ran past its deadline without yielding */
static double wd_limit;
static pthread_t main_thread;
static uv_timer_t *wd_timer;

static const char WD_HANDLERS[] = "jobrt.watchdog.handlers";  /* weak set of handler coroutines */

static void wd_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  if (atomic_load(&deadline_hooked)) {
    if (jr_scope_interrupt(L))
      luaL_error(L, "interrupted: the job's deadline passed while its handler ran without yielding");
    if (!atomic_load(&hooked)) {         /* that job's code has unwound: nothing more to do */
      atomic_store(&deadline_hooked, 0);
      lua_sethook(L, NULL, 0, 0);
      return;
    }
  }
  /* Only a job handler's coroutine is interrupted; anything else (the
   * worker's own code, stalled in C for a moment) is left alone and the
   * hook stays armed until a handler runs or the loop ticks again. */
  lua_getfield(L, LUA_REGISTRYINDEX, WD_HANDLERS);
  int is_handler = 0;
  if (lua_istable(L, -1)) {
    lua_pushthread(L);
    lua_rawget(L, -2);
    is_handler = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (!is_handler) return;
  lua_sethook(L, NULL, 0, 0);
  atomic_store(&hooked, 0);
  luaL_error(L, "interrupted by the watchdog: the event loop was blocked for more than %g s by code "
             "that never yields (yield in long loops, e.g. jobrt.sleep(0), or run with --procs N)", wd_limit);
}

static void wd_signal(int sig) {
  (void)sig;
  if (jr_H.L && !jr_H.shutting_down && (atomic_load(&hooked) || atomic_load(&deadline_hooked)))
    lua_sethook(jr_H.L, wd_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void wd_tick(uv_timer_t *t) {
  (void)t;
  atomic_store(&last_tick, uv_hrtime());
  int was = atomic_exchange(&hooked, 0);
  if (atomic_exchange(&deadline_hooked, 0) || was) lua_sethook(jr_H.L, NULL, 0, 0);  /* unstuck */
}

static void *wd_thread(void *arg) {
  (void)arg;
  uint64_t limit_ns = (uint64_t)(wd_limit * 1e9);
  uint64_t hooked_at = 0;
  for (;;) {
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    if (jr_H.shutting_down) return NULL;
    uint64_t now = uv_hrtime(), last = atomic_load(&last_tick);
    /* the coroutine running now belongs to a job whose deadline has passed: it was resumed
     * before the deadline (else the scheduler would not have resumed it) and has not yielded
     * since, so it is running past it */
    uint64_t deadline = atomic_load(&jr_run_deadline_ns);
    if (deadline != 0 && now > deadline + 10 * 1000 * 1000 && !atomic_load(&deadline_hooked)) {
      atomic_store(&deadline_hooked, 1);
      pthread_kill(main_thread, SIGALRM);
    }
    if (limit_ns == 0) continue;          /* deadlines only */
    if (now - last < limit_ns) {
      hooked_at = 0;
      continue;
    }
    if (hooked_at == 0) {
      hooked_at = now;
      atomic_store(&hooked, 1);
      pthread_kill(main_thread, SIGALRM);
    } else if (now - hooked_at > limit_ns) {
      char msg[256];
      snprintf(msg, sizeof msg,
               "the event loop has been blocked for %.0f s by code that never "
               "yields and could not be interrupted (a JIT-compiled loop); exiting with status 70 "
               "so it can be restarted (run with --procs N to have jobrt do that)",
               (double)(now - last) / 1e9);
      jr_log_direct(3, msg);
      _exit(70);
    }
  }
  return NULL;
}

/* proc.watch_handler(co): co is a job handler the watchdog may interrupt. */
static int l_watch_handler(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTHREAD);
  lua_getfield(L, LUA_REGISTRYINDEX, WD_HANDLERS);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, WD_HANDLERS);
  }
  lua_pushvalue(L, 1);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return 0;
}

/* proc.watchdog(seconds): start the in-process watchdog (once). seconds: how long the loop
 * may stop ticking before a handler is interrupted (>= 0.2), or 0 to enforce only job
 * deadlines (a --procs child, whose supervisor watches its loop). */
static int l_watchdog(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s == 0 || s >= 0.2, 1, "0, or at least 0.2 seconds");
  if (wd_timer) return 0;
  wd_limit = s;
  main_thread = pthread_self();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = wd_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGALRM, &sa, NULL);
  wd_timer = malloc(sizeof *wd_timer);
  if (wd_timer == NULL) return luaL_error(L, "proc.watchdog: out of memory");
  uv_timer_init(jr_H.loop, wd_timer);
  wd_timer->data = wd_timer;
  uv_unref((uv_handle_t *)wd_timer);
  atomic_store(&last_tick, uv_hrtime());
  uv_timer_start(wd_timer, wd_tick, 100, 100);
  pthread_t th;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&th, &attr, wd_thread, NULL) != 0) return luaL_error(L, "proc.watchdog: cannot start its thread");
  pthread_attr_destroy(&attr);
  return 0;
}

/* proc.exepath() -> absolute path of the running executable */
static int l_exepath(lua_State *L) {
  char buf[4096];
  size_t n = sizeof buf;
  if (uv_exepath(buf, &n) != 0) return 0;
  lua_pushlstring(L, buf, n);
  return 1;
}

/* proc.scandir(path) -> { {name=, type="file"|"dir"|"link"|"other"}... } | nil, err
 * (synchronous: used once at start-up to find job files) */
static int l_scandir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  uv_fs_t req;
  int rc = uv_fs_scandir(NULL, &req, path, 0, NULL);
  if (rc < 0) {
    uv_fs_req_cleanup(&req);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, uv_strerror(rc));
    return 2;
  }
  lua_newtable(L);
  uv_dirent_t ent;
  int i = 0;
  while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, ent.name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, ent.type == UV_DIRENT_FILE ? "file" : ent.type == UV_DIRENT_DIR ? "dir"
                      : ent.type == UV_DIRENT_LINK ? "link" : "other");
    lua_setfield(L, -2, "type");
    lua_rawseti(L, -2, ++i);
  }
  uv_fs_req_cleanup(&req);
  return 1;
}

/* proc.stat(path) -> "file" | "dir" | "other" | nil, err */
static int l_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  uv_fs_t req;
  int rc = uv_fs_stat(NULL, &req, path, NULL);
  if (rc < 0) {
    uv_fs_req_cleanup(&req);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, uv_strerror(rc));
    return 2;
  }
  uint64_t m = req.statbuf.st_mode;
  uv_fs_req_cleanup(&req);
  lua_pushstring(L, S_ISDIR(m) ? "dir" : S_ISREG(m) ? "file" : "other");
  return 1;
}

/* proc.lstat(path) -> { kind = "file"|"dir"|"link"|"socket"|"other",
 * mode = permission bits (number), uid = owner } | nil, err
 * (synchronous; a symbolic link is reported as "link", not followed) */
static int l_lstat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  uv_fs_t req;
  int rc = uv_fs_lstat(NULL, &req, path, NULL);
  if (rc < 0) {
    uv_fs_req_cleanup(&req);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, uv_strerror(rc));
    lua_pushstring(L, uv_err_name(rc));
    return 3;
  }
  uint64_t m = req.statbuf.st_mode, uid = req.statbuf.st_uid;
  uv_fs_req_cleanup(&req);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, S_ISDIR(m) ? "dir" : S_ISREG(m) ? "file" : S_ISLNK(m) ? "link" : S_ISSOCK(m) ? "socket" : "other");
  lua_setfield(L, -2, "kind");
  lua_pushnumber(L, (lua_Number)(m & 07777));
  lua_setfield(L, -2, "mode");
  lua_pushnumber(L, (lua_Number)uid);
  lua_setfield(L, -2, "uid");
  return 1;
}

/* proc.mkdir(path, mode) -> true | nil, err, code ("EEXIST" when it exists) */
static int l_mkdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int mode = (int)luaL_checkinteger(L, 2);
  uv_fs_t req;
  int rc = uv_fs_mkdir(NULL, &req, path, mode, NULL);
  uv_fs_req_cleanup(&req);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, uv_strerror(rc));
    lua_pushstring(L, uv_err_name(rc));
    return 3;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* proc.rmdir(path) -> true | nil, err */
static int l_rmdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  uv_fs_t req;
  int rc = uv_fs_rmdir(NULL, &req, path, NULL);
  uv_fs_req_cleanup(&req);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, uv_strerror(rc));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* proc.chmod(path, mode) -> true | nil, err */
static int l_chmod(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int mode = (int)luaL_checkinteger(L, 2);
  uv_fs_t req;
  int rc = uv_fs_chmod(NULL, &req, path, mode, NULL);
  uv_fs_req_cleanup(&req);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, uv_strerror(rc));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* proc.getuid() -> the real user id of this process */
static int l_getuid(lua_State *L) {
  lua_pushnumber(L, (lua_Number)getuid());
  return 1;
}

/* proc.kill(pid, sig) -> true | nil, err */
static int l_kill(lua_State *L) {
  int rc = uv_kill((int)luaL_checkinteger(L, 1), (int)luaL_optinteger(L, 2, SIGTERM));
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

int jr_open_proc(lua_State *L) {
  static const luaL_Reg meths[] = {{"pid", p_pid},       {"kill", p_kill},
                                   {"wait", p_wait},     {"exited", p_exited},
                                   {"output", p_output}, {"beat_age", p_beat_age},
                                   {"beats", p_beats},
                                   {NULL, NULL}};
  luaL_newmetatable(L, PROC_MT);
  lua_newtable(L);
  luaL_register(L, NULL, meths);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, p_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"spawn", l_spawn}, {"heartbeat", l_heartbeat},
                                 {"exepath", l_exepath}, {"kill", l_kill},
                                 {"scandir", l_scandir}, {"stat", l_stat},
                                 {"watchdog", l_watchdog}, {"watch_handler", l_watch_handler},
                                 {"lstat", l_lstat}, {"mkdir", l_mkdir}, {"rmdir", l_rmdir},
                                 {"chmod", l_chmod}, {"getuid", l_getuid},
                                 {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  return 1;
}
