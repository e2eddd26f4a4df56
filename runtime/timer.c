/* timer.c - jobrt.sleep and re-armable timers on the libuv loop.
 *
 * jobrt.sleep(s) parks the running coroutine on a one-shot uv_timer_t that
 * resumes it. jobrt.timer() returns a timer object whose callback runs in a
 * fresh coroutine each time it fires; it can be re-armed and stopped, which
 * is what the worker uses for "next job falls due" and lease renewal.
 *
 * The uv handles are malloc'd, never inside Lua userdata: Lua may collect a
 * timer object while libuv still owns the handle, so memory is freed in the
 * close callback only (luv's rule). Each handle's data points at its own
 * malloc'd block, which is what the shutdown walk in sched.c frees.
 */
#include "private.h"

#include <stdlib.h>

typedef struct {
  uv_timer_t t;
  int co_ref;
  uint64_t due_ns;  /* uv_hrtime() at which the sleep may end */
} jr_sleep;

/* libuv's loop time is whole milliseconds, and a timer is due once that time
 * reaches its timeout: when the loop time was refreshed between arming and
 * polling, a timer can fire up to 1 ms before the time asked (a 30 ms sleep
 * measured 29.4 ms). The precise instant is kept, and a timer that fires
 * before it is armed again for the rest (rounded up to 1 ms): the rare early
 * case becomes slightly late, the usual case is unchanged. Returns the ms to
 * wait again, or 0 when due_ns has passed. */
static uint64_t early_by_ms(uint64_t due_ns) {
  uint64_t now = uv_hrtime();
  if (now >= due_ns) return 0;
  return (due_ns - now + 999999) / 1000000;
}

static void sleep_closed(uv_handle_t *h) { free(h->data); }

static void on_sleep(uv_timer_t *t) {
  jr_sleep *s = t->data;
  uint64_t again = early_by_ms(s->due_ns);
  if (again > 0 && !jr_H.shutting_down) {
    uv_timer_start(t, on_sleep, again, 0);
    return;
  }
  lua_State *co = jr_unref_thread(s->co_ref);
  uv_close((uv_handle_t *)t, sleep_closed);
  jr_resume(co, 0);
}

/* Converts seconds (>= 0) to whole milliseconds, rounding up so a sleep
 * never ends early. */
static uint64_t to_ms(lua_State *L, int idx, const char *fname) {
  double s = luaL_checknumber(L, idx);
  if (!(s >= 0) || s > 1e9)
    luaL_error(L, "%s: seconds must be a number between 0 and 1e9, got %f", fname, s);
  double ms = s * 1000.0;
  uint64_t whole = (uint64_t)ms;
  if ((double)whole < ms) whole++;
  return whole;
}

/* jobrt.sleep(seconds): parks the coroutine for at least that long. */
static int l_sleep(lua_State *L) {
  uint64_t ms = to_ms(L, 1, "jobrt.sleep");
  jr_check_park(L, "jobrt.sleep");
  jr_sleep *s = malloc(sizeof *s);
  if (s == NULL) return luaL_error(L, "jobrt.sleep: out of memory");
  uv_timer_init(jr_H.loop, &s->t);
  s->t.data = s;
  s->co_ref = jr_ref_thread(L);
  s->due_ns = uv_hrtime() + (uint64_t)(luaL_checknumber(L, 1) * 1e9);
  uv_update_time(jr_H.loop);          /* the cached loop time may be stale */
  uv_timer_start(&s->t, on_sleep, ms, 0);
  return jr_park(L);
}

/* ---- timer objects -------------------------------------------------- */

typedef struct {
  uv_timer_t t;
  int fn_ref;       /* callback, LUA_NOREF when stopped */
  int self_ref;     /* pins the Lua object while armed, LUA_NOREF otherwise */
  uint64_t due_ns;  /* uv_hrtime() of the first expiry (see early_by_ms); 0 once fired */
} jr_timer_h;

typedef struct {
  jr_timer_h *h;    /* NULL once closed */
} jr_timer_ud;

static const char TIMER_MT[] = "jobrt.timer";

static void timer_closed(uv_handle_t *h) { free(h->data); }

static jr_timer_ud *check_timer(lua_State *L) {
  jr_timer_ud *u = luaL_checkudata(L, 1, TIMER_MT);
  if (u->h == NULL) luaL_error(L, "timer: already closed");
  return u;
}

static void on_timer(uv_timer_t *t) {
  jr_timer_h *h = t->data;
  if (h->fn_ref == LUA_NOREF || jr_H.shutting_down) return;
  if (h->due_ns) {
    uint64_t again = early_by_ms(h->due_ns);
    if (again > 0) {                      /* early: the rest, then the repeats as asked */
      uv_timer_start(t, on_timer, again, uv_timer_get_repeat(t));
      return;
    }
    h->due_ns = 0;
  }
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->fn_ref);
  int self_ref = LUA_NOREF;
  if (uv_timer_get_repeat(t) == 0) {      /* one-shot: disarmed now */
    luaL_unref(L, LUA_REGISTRYINDEX, h->fn_ref);
    h->fn_ref = LUA_NOREF;
    self_ref = h->self_ref;               /* unpinned after the callback started */
    h->self_ref = LUA_NOREF;
  }
  jr_sched_spawn(L, 0);
  lua_pop(L, 1);
  if (self_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, self_ref);
}

/* jobrt.timer() -> timer object (unarmed). */
static int l_timer(lua_State *L) {
  jr_timer_ud *u = lua_newuserdata(L, sizeof *u);
  u->h = malloc(sizeof *u->h);
  if (u->h == NULL) return luaL_error(L, "jobrt.timer: out of memory");
  uv_timer_init(jr_H.loop, &u->h->t);
  u->h->t.data = u->h;
  u->h->fn_ref = LUA_NOREF;
  u->h->self_ref = LUA_NOREF;
  u->h->due_ns = 0;
  luaL_getmetatable(L, TIMER_MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* t:start(seconds, fn[, repeat_seconds]): (re)arms the timer. */
static int t_start(lua_State *L) {
  jr_timer_ud *u = check_timer(L);
  uint64_t ms = to_ms(L, 2, "timer:start");
  luaL_checktype(L, 3, LUA_TFUNCTION);
  uint64_t rep = lua_isnoneornil(L, 4) ? 0 : to_ms(L, 4, "timer:start");
  if (u->h->fn_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, u->h->fn_ref);
  lua_pushvalue(L, 3);
  u->h->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (u->h->self_ref == LUA_NOREF) {      /* an armed timer is not garbage */
    lua_pushvalue(L, 1);
    u->h->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  u->h->due_ns = uv_hrtime() + (uint64_t)(luaL_checknumber(L, 2) * 1e9);
  uv_update_time(jr_H.loop);
  uv_timer_start(&u->h->t, on_timer, ms, rep);
  return 0;
}

static void timer_disarm(lua_State *L, jr_timer_h *h) {
  uv_timer_stop(&h->t);
  if (h->fn_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, h->fn_ref);
  h->fn_ref = LUA_NOREF;
  if (h->self_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, h->self_ref);
  h->self_ref = LUA_NOREF;
}

/* t:stop() */
static int t_stop(lua_State *L) {
  jr_timer_ud *u = check_timer(L);
  timer_disarm(L, u->h);
  return 0;
}

/* t:active() -> boolean */
static int t_active(lua_State *L) {
  jr_timer_ud *u = check_timer(L);
  lua_pushboolean(L, uv_is_active((uv_handle_t *)&u->h->t));
  return 1;
}

/* t:due_in() -> seconds until it fires, or nil when stopped */
static int t_due_in(lua_State *L) {
  jr_timer_ud *u = check_timer(L);
  if (!uv_is_active((uv_handle_t *)&u->h->t)) return 0;
  uint64_t due = u->h->t.timeout;
  uint64_t now = uv_now(jr_H.loop);
  lua_pushnumber(L, due > now ? (double)(due - now) / 1000.0 : 0.0);
  return 1;
}

/* t:close() (also on collection) */
static int t_close(lua_State *L) {
  jr_timer_ud *u = luaL_checkudata(L, 1, TIMER_MT);
  if (u->h == NULL) return 0;
  if (jr_H.shutting_down) {       /* the shutdown walk closes and frees it */
    u->h = NULL;
    return 0;
  }
  timer_disarm(L, u->h);
  uv_close((uv_handle_t *)&u->h->t, timer_closed);
  u->h = NULL;
  return 0;
}

int jr_open_timer(lua_State *L) {
  static const luaL_Reg meths[] = {{"start", t_start}, {"stop", t_stop},
                                   {"active", t_active}, {"due_in", t_due_in},
                                   {"close", t_close}, {NULL, NULL}};
  luaL_newmetatable(L, TIMER_MT);
  lua_newtable(L);
  luaL_register(L, NULL, meths);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, t_close);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_sleep);
  lua_setfield(L, -2, "sleep");
  lua_pushcfunction(L, l_timer);
  lua_setfield(L, -2, "timer");
  return 1;
}
