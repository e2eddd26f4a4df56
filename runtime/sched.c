/* sched.c - the coroutine scheduler: spawn, resume, park, wake, cancel.
 *
 * Every piece of Lua runs in a coroutine spawned here. A coroutine is
 * anchored in the registry table ANCHORS while it lives, so the collector
 * cannot take it while it waits on an event. A C primitive that waits calls
 * jr_park() as its last statement; the event side resumes it with
 * jr_resume(). A coroutine that yields without parking (a bare
 * coroutine.yield()) is put on the ready queue and resumed on the next loop
 * turn, so "yield to the loop" works everywhere.
 *
 * When the last spawned coroutine finishes the host shuts down: Redis
 * connections are freed and every handle is closed, so uv_run() returns.
 */
#include "private.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/time.h>
#include <unistd.h>
#include <stdlib.h>

jr_host jr_H;

static const char ANCHORS[] = "jobrt.anchors";     /* co -> 1 (live) | 2 (suspended) */
static const char CANCELLED[] = "jobrt.cancelled"; /* weak: co -> true */
static const char READY[] = "jobrt.ready";         /* array of {co, args...} */
static const char SCOPES[] = "jobrt.scopes";       /* weak: co -> scope userdata */
static const char SCOPE_MT[] = "jobrt.scope";

static int anchors_ref, cancelled_ref, ready_ref;  /* registry refs of the tables */
static int scopes_ref;                             /* registry ref of SCOPES */
static int n_scoped;                               /* coroutines ever put in a scope */
static uv_idle_t ready_idle;     /* runs the ready queue, then stops itself */
static uv_idle_t exit_idle;      /* checks, outside any callback, that nothing is left */
static int ready_len;

static const char *const err_names[] = {
#define JR_ERR_NAME(name, msg) #name,
    JR_ERRNO_MAP(JR_ERR_NAME)
#undef JR_ERR_NAME
};

/* Name of an error code, e.g. "ETIMEDOUT". */
const char *jr_err_name(jr_errno_t e) {
  return (e >= 0 && e < JR_ERR_MAX) ? err_names[e] : "EUNKNOWN";
}

/* Pushes registry[name], creating it (with the given __mode, if any). */
static void push_regtable(lua_State *L, const char *name, const char *mode) {
  lua_getfield(L, LUA_REGISTRYINDEX, name);
  if (!lua_isnil(L, -1)) return;
  lua_pop(L, 1);
  lua_newtable(L);
  if (mode) {
    lua_createtable(L, 0, 1);
    lua_pushstring(L, mode);
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, name);
}

/* anchors[co] = v (v == 0 removes). */
static void anchor_set(lua_State *co, int v) {
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, anchors_ref);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  if (v) lua_pushinteger(L, v); else lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

static int anchor_get(lua_State *co) {
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, anchors_ref);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_rawget(L, -2);
  int v = (int)lua_tointeger(L, -1);
  lua_pop(L, 2);
  return v;
}

static int n_cancelled;   /* cancellations so far: none, no lookup needed */

static int is_cancelled(lua_State *co) {
  if (n_cancelled == 0) return 0;
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, cancelled_ref);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_rawget(L, -2);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 2);
  return v;
}

static void begin_shutdown(void);
static void on_ready(uv_idle_t *h);

/* The last coroutine ended during some callback; shut down on a clean loop
 * turn, unless an event started a new coroutine meanwhile. */
static void on_exit_idle(uv_idle_t *h) {
  uv_idle_stop(h);
  if (jr_H.live <= 0 || jr_H.exiting) begin_shutdown();
}

/* Removes co from a weak-keyed registry table (by ref). The tables are weak, but a value may
 * reach its key (a scope whose on_expire holds the job that holds its coroutine), and Lua 5.1
 * weak tables are not ephemerons: such an entry would never go, nor anything it reaches (a
 * worker leaked its jobs this way, 1.9 KB each). Called once co has returned or raised: a
 * coroutine cancelled while parked keeps its mark until it is unreachable (its events may still
 * come), and nothing strong reaches it from those tables' values then. */
static void weak_forget(lua_State *co, int ref) {
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* A spawned coroutine ended (returned, raised, or was cancelled). */
static void finished(lua_State *co) {
  if (anchor_get(co)) {
    anchor_set(co, 0);
    jr_H.live--;
  }
  if (jr_H.live <= 0 && !jr_H.shutting_down) uv_idle_start(&exit_idle, on_exit_idle);
}

/* Reports a coroutine's error with its traceback on stderr, after `what: `
 * (none when what is NULL). The error value is on top of co's stack. */
void jr_report_error(lua_State *co, const char *what) {
  lua_State *L = jr_H.L;
  const char *msg = lua_tostring(co, -1);
  if (msg == NULL) msg = luaL_typename(co, -1);
  const char *sep = what ? ": " : "";
  if (what == NULL) what = "";
  /* An error raised with a traceback already attached is printed as is. */
  if (strstr(msg, "stack traceback:") != NULL) {
    jr_log(3, "%s%s%s", what, sep, msg);
    return;
  }
  luaL_traceback(L, co, msg, 0);
  jr_log(3, "%s%s%s", what, sep, lua_tostring(L, -1));
  lua_pop(L, 1);
}

/* Resumes co with nargs values already on its stack. On return the
 * coroutine is parked on some event, queued to run again, finished, or
 * failed (reported with its traceback). Never raises. */
static int scope_check(lua_State *co, double *deadline);

/* The coroutine jr_resume is running now (NULL: none) and the deadline of its job scope in
 * uv_hrtime nanoseconds (0: none). The watchdog thread (proc.c) reads the deadline to
 * interrupt a handler that runs past it without yielding; its hook reads the coroutine. */
_Atomic uint64_t jr_run_deadline_ns;
lua_State *jr_running_co;

void jr_resume(lua_State *co, int nargs) {
  double deadline = 0;
  if (is_cancelled(co) || (n_scoped > 0 && scope_check(co, &deadline))) {
    lua_settop(co, 0);
    return;
  }
  jr_H.parked = 0;
  uint64_t prev_deadline = atomic_load(&jr_run_deadline_ns);
  lua_State *prev_co = jr_running_co;
  atomic_store(&jr_run_deadline_ns, deadline > 0 ? (uint64_t)(deadline * 1e9) : 0);
  jr_running_co = co;
  int st = lua_resume(co, nargs);
  jr_running_co = prev_co;
  atomic_store(&jr_run_deadline_ns, prev_deadline);
  if (st == LUA_YIELD) {
    if (!jr_H.parked) {                  /* bare yield: run again next turn */
      lua_settop(co, 0);
      lua_State *L = jr_H.L;
      push_regtable(L, READY, NULL);
      lua_createtable(L, 1, 0);
      lua_pushthread(co);
      lua_xmove(co, L, 1);
      lua_rawseti(L, -2, 1);
      lua_rawseti(L, -2, ++ready_len);
      lua_pop(L, 1);
      uv_idle_start(&ready_idle, on_ready);
    }
    jr_H.parked = 0;
    return;
  }
  lua_State *L = jr_H.L;
  int is_main = 0;
  if (jr_H.main_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, jr_H.main_ref);
    is_main = lua_tothread(L, -1) == co;
    lua_pop(L, 1);
  }
  if (st == 0) {
    if (is_main && lua_gettop(co) > 0 && lua_type(co, 1) == LUA_TNUMBER)
      jr_H.exit_code = (int)lua_tointeger(co, 1);
  } else if (!is_cancelled(co)) {
    jr_report_error(co, is_main ? NULL : "coroutine failed");
    if (is_main) jr_H.exit_code = 1;
  }
  lua_settop(co, 0);
  finished(co);
  if (n_scoped > 0) weak_forget(co, scopes_ref);
  if (n_cancelled > 0) weak_forget(co, cancelled_ref);
}

/* Marks the running coroutine as parked on an event and yields it. Use as
 * `return jr_park(L);` at the end of a C function. */
int jr_park(lua_State *L) {
  jr_H.parked = 1;
  return lua_yield(L, 0);
}

/* Parked threads are held in a table of their own (slot -> thread), kept in
 * the registry, with the free slots on a C stack. luaL_ref and luaL_unref
 * keep their free list inside the registry: seven table operations per park
 * and wake, a sixth of a pipelined Redis call, where this takes three. Slots
 * start at 1, so a ref is never LUA_NOREF. */
static int threads_ref;
static int *free_slots;          /* released slots, reused first */
static int n_free, cap_free, n_slots;

static void slot_release(int slot) {
  if (jr_H.lua_closing) return;
  if (n_free == cap_free) {
    int cap = cap_free ? cap_free * 2 : 64;
    int *p = realloc(free_slots, sizeof *p * (size_t)cap);
    if (p == NULL) return;           /* the slot is not reused; nothing else is lost */
    free_slots = p;
    cap_free = cap;
  }
  free_slots[n_free++] = slot;
}

/* Holds the running thread so an event can resume it; returns its ref. */
int jr_ref_thread(lua_State *L) {
  int slot = n_free > 0 ? free_slots[--n_free] : ++n_slots;
  lua_rawgeti(L, LUA_REGISTRYINDEX, threads_ref);
  lua_pushthread(L);
  lua_rawseti(L, -2, slot);
  lua_pop(L, 1);
  return slot;
}

/* Returns the thread held by ref and releases the ref. */
lua_State *jr_unref_thread(int ref) {
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, threads_ref);
  lua_rawgeti(L, -1, ref);
  lua_State *co = lua_tothread(L, -1);
  lua_pushnil(L);
  lua_rawseti(L, -3, ref);
  lua_pop(L, 2);
  slot_release(ref);
  return co;
}

/* Frees the free-slot stack (after lua_close, for leak checkers). */
void jr_sched_free(void) {
  free(free_slots);
  free_slots = NULL;
  n_free = cap_free = 0;
}

/* Releases a ref from jr_ref_thread without resuming its thread. */
void jr_drop_thread(lua_State *L, int ref) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, threads_ref);
  lua_pushnil(L);
  lua_rawseti(L, -2, ref);
  lua_pop(L, 1);
  slot_release(ref);
}

static void scope_join(lua_State *L, int scope_idx, lua_State *co);
static int scope_push_of(lua_State *L, lua_State *co);

/* Spawns fn(args...) (fn and nargs values on top of L) in a new anchored
 * coroutine and runs it until it first parks. Leaves the coroutine on L.
 * The new coroutine joins the job scope of L (the spawning coroutine), if
 * it has one, so everything a handler starts ends with its job. */
int jr_sched_spawn(lua_State *L, int nargs) {
  lua_State *co = lua_newthread(L);
  lua_insert(L, -(nargs + 2));             /* co, fn, args */
  lua_xmove(L, co, nargs + 1);
  if (jr_H.main_ref == LUA_NOREF) {        /* the first coroutine is the main one */
    lua_pushvalue(L, -1);
    jr_H.main_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  if (n_scoped > 0 && scope_push_of(L, L)) {
    scope_join(L, lua_gettop(L), co);
    lua_pop(L, 1);
  }
  anchor_set(co, 1);
  jr_H.live++;
  jr_resume(co, nargs);
  return 1;
}

/* Runs the ready queue: coroutines that yielded bare or were woken. */
static void on_ready(uv_idle_t *h) {
  lua_State *L = jr_H.L;
  uv_idle_stop(h);
  push_regtable(L, READY, NULL);
  int n = ready_len;
  lua_newtable(L);                          /* fresh queue for what runs now */
  lua_setfield(L, LUA_REGISTRYINDEX, READY);
  ready_len = 0;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    int entry = lua_gettop(L);
    lua_rawgeti(L, entry, 1);
    lua_State *co = lua_tothread(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, entry, "n");
    int nargs = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (co != NULL && lua_status(co) == LUA_YIELD) {
      if (anchor_get(co) >= 2) anchor_set(co, 1);
      for (int a = 2; a <= nargs + 1; a++) lua_rawgeti(L, entry, a);
      lua_xmove(L, co, nargs);
      jr_resume(co, nargs);
    } else if (co != NULL && lua_status(co) == 0 && lua_gettop(co) > 0 && anchor_get(co) == 4) {
      anchor_set(co, 1);                   /* spawned later: fn and its args on its stack */
      jr_resume(co, lua_gettop(co) - 1);
    }
    lua_settop(L, entry - 1);
  }
  lua_pop(L, 1);
}

/* Handles the host mallocs keep their owning block in data (freed here);
 * static handles have data == NULL. */
static void walk_closed(uv_handle_t *h) { free(h->data); }

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, walk_closed);
}

/* Last coroutine ended: free Redis connections and close every handle. Runs
 * at most once; safe to call from inside any callback. */
static void begin_shutdown(void) {
  if (jr_H.shutting_down) return;
  jr_H.shutting_down = 1;
  jr_redis_shutdown();
  jr_proc_shutdown();
  jr_term_shutdown();
  jr_http_shutdown();
  jr_tcp_shutdown();
  /* Handles owned by other modules close themselves in their close paths;
   * whatever is still open now (timers, signals) is closed here. Their
   * memory is released by lua_close (userdata) or was static. */
  uv_walk(jr_H.loop, close_walk, NULL);
}

/* ---- Lua functions of module jobrt.core ------------------------------- */

/* jobrt.spawn(fn, ...) -> coroutine */
static int l_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (jr_H.shutting_down) return luaL_error(L, "jobrt.spawn: the loop is shutting down");
  return jr_sched_spawn(L, lua_gettop(L) - 1);
}

/* Raises a clear error unless L may be parked: it must be a coroutine that jobrt started
 * (jobrt.spawn, a handler, a timer callback...). A coroutine made with coroutine.create or
 * coroutine.wrap (inside a handler, say) cannot wait on the loop: jobrt resumes the coroutine
 * that parked, which would return to whoever resumed it last instead of to its caller, and the
 * generator would yield nothing. Call it before arming anything. fname names the call. */
void jr_check_park(lua_State *L, const char *fname) {
  if (lua_pushthread(L)) luaL_error(L, "%s: called outside a coroutine (run it inside jobrt.spawn)", fname);
  lua_pop(L, 1);
  if (anchor_get(L) == 0)
    luaL_error(L, "%s: cannot wait inside a coroutine made with coroutine.create or coroutine.wrap (jobrt resumes "
               "only coroutines it started): start it with jobrt.spawn instead, and hand results back with a "
               "jobrt.cond or jobrt.waitgroup", fname);
}

/* jobrt.suspend() -> values passed to jobrt.wake */
static int l_suspend(lua_State *L) {
  jr_check_park(L, "jobrt.suspend");
  anchor_set(L, 2);
  return jr_park(L);
}

/* jobrt.wake(co, ...) : resume a suspended coroutine on the next loop turn.
 * Returns true when co was suspended, false otherwise (nothing happens). */
static int l_wake(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argcheck(L, co != NULL, 1, "coroutine expected");
  if (anchor_get(co) != 2 || is_cancelled(co)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  anchor_set(co, 3);                        /* woken: a second wake is a no-op */
  int n = lua_gettop(L);
  push_regtable(L, READY, NULL);
  lua_createtable(L, n, 1);
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(L, i);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, n - 1);
  lua_setfield(L, -2, "n");
  lua_rawseti(L, -2, ++ready_len);
  uv_idle_start(&ready_idle, on_ready);
  lua_pushboolean(L, 1);
  return 1;
}

/* Marks co cancelled: it never runs again (a running co ends at its next
 * yield), its pending events are dropped when they arrive, and it stops
 * counting as live. Returns 1, or 0 when co had already ended or was
 * cancelled before. */
static int cancel_co(lua_State *co) {
  if (is_cancelled(co)) return 0;
  if (anchor_get(co) == 0 && lua_status(co) != LUA_YIELD) return 0;   /* ended */
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, cancelled_ref);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  n_cancelled++;
  finished(co);
  return 1;
}

/* jobrt.cancel(co): the coroutine never runs again; its pending events are
 * dropped when they arrive. Cancelling the running coroutine is an error. */
static int l_cancel(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argcheck(L, co != NULL, 1, "coroutine expected");
  luaL_argcheck(L, co != L, 1, "cannot cancel the running coroutine");
  lua_pushboolean(L, lua_status(co) == LUA_YIELD && cancel_co(co));
  return 1;
}

/* ---- job scopes -------------------------------------------------------
 *
 * A scope groups the coroutines of one job: the handler's coroutine and
 * every coroutine spawned from inside the scope (they join it). A scope has
 * a deadline on the monotonic clock; a member is never resumed once the
 * deadline has passed: at that resume the scope expires, every member is
 * cancelled (a running one ends at its next yield) and the scope's
 * on_expire(scope) runs in a new coroutine outside the scope. This is how
 * a worker stops a handler whose lease it can no longer vouch for (after
 * its process was frozen, say) before the handler does anything more, and
 * how everything a job started ends with it (OpenResty's one cancellation
 * path). The userdata's environment table holds `members` (weak-keyed set
 * of coroutines) and `cb` (on_expire). */
typedef struct {
  double deadline;   /* monotonic seconds (jobrt.monotime's clock); 0: none */
  int expired;       /* deadline passed or cancel() called: members never run */
} jr_scope;

static double mono_now(void) { return (double)uv_hrtime() / 1e9; }

/* Pushes the scope of co and returns 1, or pushes nothing and returns 0. */
static int scope_push_of(lua_State *L, lua_State *co) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, scopes_ref);
  lua_pushthread(co);
  if (co != L) lua_xmove(co, L, 1);
  lua_rawget(L, -2);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 2);
    return 0;
  }
  lua_remove(L, -2);
  return 1;
}

/* Puts co into the scope at scope_idx (a valid index of L). */
static void scope_join(lua_State *L, int scope_idx, lua_State *co) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, scopes_ref);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_pushvalue(L, scope_idx);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_getfenv(L, scope_idx);
  lua_getfield(L, -1, "members");
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 2);
  n_scoped++;
}

/* Cancels every member of the scope at idx; returns how many were live. */
static int scope_cancel_members(lua_State *L, int idx) {
  jr_scope *s = lua_touserdata(L, idx);
  int n = 0;
  s->expired = 1;
  lua_getfenv(L, idx);
  lua_getfield(L, -1, "members");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    lua_State *co = lua_tothread(L, -1);
    if (co != NULL) n += cancel_co(co);
  }
  lua_pop(L, 2);
  return n;
}

/* The end of a scope, run in a coroutine of its own (outside the scope): every function given
 * to scope:on_end, in order (an error in one is reported; the others still run), then
 * on_expire(scope) when the deadline ended the scope. Arguments: scope, expired (boolean). */
static int l_scope_finish(lua_State *L) {
  int expired = lua_toboolean(L, 2);
  lua_getfenv(L, 1);
  lua_getfield(L, -1, "ends");
  int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    lua_pushvalue(L, 1);
    if (lua_pcall(L, 1, 0, 0) != 0) {
      jr_log(3, "scope:on_end function failed: %s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "(no message)");
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  if (expired) {
    lua_getfield(L, -1, "cb");
    if (lua_isfunction(L, -1)) {
      lua_pushvalue(L, 1);
      lua_call(L, 1, 0);
    }
  }
  return 0;
}

/* Ends the scope at idx (of L) once: cancels its members, then runs its end (l_scope_finish)
 * in a new coroutine: now, or on the next loop turn when `later` (from the watchdog hook,
 * where no other coroutine may run). expired: the deadline ended it (on_expire runs). Returns
 * the number of members that were live. */
static int scope_end(lua_State *L, int idx, int expired, int later) {
  jr_scope *s = lua_touserdata(L, idx);
  if (s->expired) return 0;
  int n = scope_cancel_members(L, idx);
  if (jr_H.shutting_down) return n;
  lua_State *M = jr_H.L;
  if (!later) {
    lua_pushcfunction(M, l_scope_finish);
    lua_pushvalue(L, idx);
    lua_xmove(L, M, 1);
    lua_pushboolean(M, expired);
    jr_sched_spawn(M, 2);                    /* M is in no scope: neither is the new one */
    lua_pop(M, 1);
    return n;
  }
  lua_State *co = lua_newthread(M);          /* M: ..., thread */
  lua_pushcfunction(co, l_scope_finish);
  lua_pushvalue(L, idx);
  lua_xmove(L, co, 1);
  lua_pushboolean(co, expired);
  anchor_set(co, 4);                         /* on_ready starts it */
  jr_H.live++;
  push_regtable(M, READY, NULL);             /* M: ..., thread, READY */
  lua_createtable(M, 1, 0);
  lua_pushvalue(M, -3);
  lua_rawseti(M, -2, 1);
  lua_rawseti(M, -2, ++ready_len);
  lua_pop(M, 2);
  uv_idle_start(&ready_idle, on_ready);
  return n;
}

/* Called before resuming co (when scopes are in use): returns 1 when co
 * must not run because its scope expired (now or before). */
static int scope_check(lua_State *co, double *deadline) {
  lua_State *L = jr_H.L;
  if (!scope_push_of(L, co)) return 0;
  jr_scope *s = lua_touserdata(L, -1);
  int stop = 0;
  if (s->expired) {
    stop = 1;
  } else if (s->deadline > 0 && mono_now() >= s->deadline) {
    stop = 1;
    scope_end(L, lua_gettop(L), 1, 0);
  }
  *deadline = s->deadline;
  lua_pop(L, 1);
  return stop;
}

/* Called by the watchdog's hook (proc.c) inside the running coroutine L, on the main thread.
 * Returns 1 when the code running now must be interrupted: the coroutine jr_resume runs (L
 * itself, or the one that resumed L with coroutine.resume) belongs to a job scope whose
 * deadline has passed, or that has ended already. The first time, the scope ends: its members
 * are cancelled (they never run again once they yield or fail) and its on_expire runs on the
 * next loop turn. The caller then raises an error, and keeps raising at every instruction
 * while this returns 1, so no pcall of the handler's can swallow the interruption. */
int jr_scope_interrupt(lua_State *L) {
  lua_State *co = jr_running_co;
  if (co == NULL || n_scoped == 0) return 0;
  int top = lua_gettop(L);
  int stop = 0;
  if (scope_push_of(L, co)) {
    jr_scope *s = lua_touserdata(L, -1);
    if (s->expired) {
      stop = 1;
    } else if (s->deadline > 0 && mono_now() >= s->deadline) {
      stop = 1;
      scope_end(L, lua_gettop(L), 1, 1);       /* on_expire must not run inside the hook */
    }
  }
  lua_settop(L, top);
  return stop;
}

static jr_scope *check_scope(lua_State *L) { return luaL_checkudata(L, 1, SCOPE_MT); }

/* jobrt.scope([on_expire]) -> scope. on_expire(scope) runs (in its own
 * coroutine) when a member is about to be resumed after the deadline. */
static int l_scope(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  jr_scope *s = lua_newuserdata(L, sizeof *s);
  s->deadline = 0;
  s->expired = 0;
  luaL_getmetatable(L, SCOPE_MT);
  lua_setmetatable(L, -2);
  lua_createtable(L, 0, 2);
  lua_createtable(L, 0, 2);             /* members: weak keys */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, "members");
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "cb");
  lua_setfenv(L, -2);
  return 1;
}

/* scope:spawn(fn, ...) -> co: fn runs in a new coroutine that belongs to
 * the scope (and so does every coroutine it spawns). Raises when the scope
 * has expired or the loop is shutting down. */
static int l_scope_spawn(lua_State *L) {
  jr_scope *s = check_scope(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (s->expired) return luaL_error(L, "scope:spawn: the scope has ended");
  if (jr_H.shutting_down) return luaL_error(L, "scope:spawn: the loop is shutting down");
  int nargs = lua_gettop(L) - 2;
  lua_State *co = lua_newthread(L);
  lua_insert(L, 2);                       /* scope, co, fn, args */
  lua_xmove(L, co, nargs + 1);
  scope_join(L, 1, co);
  anchor_set(co, 1);
  jr_H.live++;
  jr_resume(co, nargs);
  return 1;                               /* co */
}

/* scope:set_deadline(t): t in monotonic seconds (jobrt.monotime()); nil or
 * 0 removes the deadline. */
static int l_scope_set_deadline(lua_State *L) {
  jr_scope *s = check_scope(L);
  s->deadline = luaL_optnumber(L, 2, 0);
  return 0;
}

/* scope:deadline() -> t | nil */
static int l_scope_deadline(lua_State *L) {
  jr_scope *s = check_scope(L);
  if (s->deadline > 0) lua_pushnumber(L, s->deadline); else lua_pushnil(L);
  return 1;
}

/* scope:cancel() -> n: ends the scope without calling on_expire; every live
 * member is cancelled (the running one, if any, at its next yield). */
static int l_scope_cancel(lua_State *L) {
  check_scope(L);
  lua_pushinteger(L, scope_end(L, 1, 0, 0));
  return 1;
}

/* scope:on_end(fn): fn(scope) runs (in a coroutine of its own) when the scope ends, by its
 * deadline or by cancel(); at once when it has ended already. For what a job started outside
 * Lua (a child process, say) that must stop with it. */
static int l_scope_on_end(lua_State *L) {
  jr_scope *s = check_scope(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (s->expired) {
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 0);
    return 0;
  }
  lua_getfenv(L, 1);
  lua_getfield(L, -1, "ends");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "ends");
  }
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
  return 0;
}

/* scope:ended() -> true once the deadline passed or cancel() was called */
static int l_scope_ended(lua_State *L) {
  jr_scope *s = check_scope(L);
  lua_pushboolean(L, s->expired);
  return 1;
}

/* scope:live() -> number of members that can still run */
static int l_scope_live(lua_State *L) {
  check_scope(L);
  int n = 0;
  lua_getfenv(L, 1);
  lua_getfield(L, -1, "members");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    lua_State *co = lua_tothread(L, -1);
    if (co != NULL && !is_cancelled(co) && anchor_get(co) != 0) n++;
  }
  lua_pop(L, 2);
  lua_pushinteger(L, n);
  return 1;
}

/* jobrt.scope_of([co]) -> the scope of co (default: the running coroutine) | nil */
static int l_scope_of(lua_State *L) {
  lua_State *co = lua_isnoneornil(L, 1) ? L : lua_tothread(L, 1);
  luaL_argcheck(L, co != NULL, 1, "coroutine expected");
  if (!scope_push_of(L, co)) lua_pushnil(L);
  return 1;
}

static void scope_register(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"spawn", l_scope_spawn},   {"set_deadline", l_scope_set_deadline},
      {"deadline", l_scope_deadline}, {"cancel", l_scope_cancel},
      {"ended", l_scope_ended},   {"live", l_scope_live},
      {"on_end", l_scope_on_end},
      {NULL, NULL}};
  luaL_newmetatable(L, SCOPE_MT);
  lua_newtable(L);
  luaL_register(L, NULL, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

/* jobrt.status(co) -> "cancelled", or what coroutine.status says. */
static int l_status(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argcheck(L, co != NULL, 1, "coroutine expected");
  if (is_cancelled(co)) {
    lua_pushliteral(L, "cancelled");
    return 1;
  }
  lua_getglobal(L, "coroutine");
  lua_getfield(L, -1, "status");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

/* jobrt.now() -> wall clock seconds with microseconds. */
static int l_now(lua_State *L) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  lua_pushnumber(L, (double)tv.tv_sec + (double)tv.tv_usec / 1e6);
  return 1;
}

/* jobrt.monotime() -> monotonic seconds (uv_hrtime). */
static int l_monotime(lua_State *L) {
  lua_pushnumber(L, (double)uv_hrtime() / 1e9);
  return 1;
}

/* jobrt.live() -> number of live coroutines. */
static int l_live(lua_State *L) {
  lua_pushinteger(L, jr_H.live);
  return 1;
}

/* jobrt.exit(code): cancel nothing, but end the process as soon as the loop
 * has closed its handles; the exit status is code. */
static int l_exit(lua_State *L) {
  jr_H.exit_code = (int)luaL_optinteger(L, 1, 0);
  jr_H.exiting = 1;
  uv_idle_start(&exit_idle, on_exit_idle);
  return 0;
}

/* jobrt.set_exit_code(code) */
static int l_set_exit_code(lua_State *L) {
  jr_H.exit_code = (int)luaL_checkinteger(L, 1);
  return 0;
}

/* jobrt.versions() -> { jobrt=, luajit=, libuv=, hiredis= } */
#include <luajit.h>
#include <hiredis/hiredis.h>
static int l_versions(lua_State *L) {
  char hv[32];
  snprintf(hv, sizeof hv, "%d.%d.%d", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
  lua_createtable(L, 0, 4);
  lua_pushstring(L, JR_VERSION);
  lua_setfield(L, -2, "jobrt");
  lua_pushstring(L, LUAJIT_VERSION);
  lua_setfield(L, -2, "luajit");
  lua_pushstring(L, uv_version_string());
  lua_setfield(L, -2, "libuv");
  lua_pushstring(L, hv);
  lua_setfield(L, -2, "hiredis");
  return 1;
}

/* jobrt.pid() */
#include <unistd.h>
static int l_pid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

/* jobrt.hostname() */
static int l_hostname(lua_State *L) {
  char buf[256];
  size_t n = sizeof buf;
  if (uv_os_gethostname(buf, &n) != 0) strcpy(buf, "unknown");
  lua_pushstring(L, buf);
  return 1;
}

/* jobrt.random_bytes(n) -> string from the OS random source */
static int l_random_bytes(lua_State *L) {
  int n = (int)luaL_checkinteger(L, 1);
  luaL_argcheck(L, n > 0 && n <= 256, 1, "between 1 and 256");
  char buf[256];
  if (uv_random(NULL, NULL, buf, (size_t)n, 0, NULL) != 0) {
    for (int i = 0; i < n; i++) buf[i] = (char)(rand() & 0xff);
  }
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

int jr_open_core(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"spawn", l_spawn},       {"suspend", l_suspend},
      {"wake", l_wake},         {"cancel", l_cancel},
      {"status", l_status},     {"now", l_now},
      {"monotime", l_monotime}, {"live", l_live},
      {"exit", l_exit},         {"set_exit_code", l_set_exit_code},
      {"versions", l_versions},
      {"pid", l_pid},           {"hostname", l_hostname},
      {"random_bytes", l_random_bytes},
      {"scope", l_scope},       {"scope_of", l_scope_of},
      {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  jr_log_register(L);
  return 1;
}

void jr_sched_init(lua_State *L, uv_loop_t *loop) {
  memset(&jr_H, 0, sizeof jr_H);
  jr_H.L = L;
  jr_H.loop = loop;
  jr_H.main_ref = LUA_NOREF;
  jr_H.log_level = 1;
  uv_idle_init(loop, &ready_idle);       /* active only while coroutines are ready */
  uv_idle_init(loop, &exit_idle);
  push_regtable(L, ANCHORS, NULL);
  anchors_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  push_regtable(L, CANCELLED, "k");
  cancelled_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_createtable(L, 64, 0);
  threads_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  push_regtable(L, SCOPES, "k");
  scopes_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  scope_register(L);
  (void)ready_ref;
}

/* Prints where each live coroutine waits (when the loop ran dry). */
void jr_sched_dump(void) {
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, anchors_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    lua_State *co = lua_tothread(L, -1);
    if (co) {
      luaL_traceback(L, co, "waiting coroutine", 0);
      fprintf(stderr, "%s\n", lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
}

/* Forces the shutdown path (used when the loop ran dry with coroutines
 * still parked: nothing can wake them). */
void jr_sched_abort(void) { begin_shutdown(); }

void jr_sched_close(void) {
  if (!uv_is_closing((uv_handle_t *)&ready_idle)) uv_close((uv_handle_t *)&ready_idle, NULL);
  if (!uv_is_closing((uv_handle_t *)&exit_idle)) uv_close((uv_handle_t *)&exit_idle, NULL);
}
