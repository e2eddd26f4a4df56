/* signal.c - jobrt.on_signal: run a Lua function when a signal arrives.
 *
 * Each handler is a uv_signal_t (malloc'd, freed in its close callback) that
 * does not keep the loop alive. The function runs in a fresh coroutine each
 * time the signal arrives, with the signal's name as its argument.
 */
#include "private.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  uv_signal_t s;
  int fn_ref;
} jr_sig_h;

typedef struct {
  jr_sig_h *h;
} jr_sig_ud;

static const char SIG_MT[] = "jobrt.signal";

static const struct {
  const char *name;
  int num;
} signals[] = {{"SIGINT", SIGINT},   {"SIGTERM", SIGTERM}, {"SIGHUP", SIGHUP},
               {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2}, {"SIGQUIT", SIGQUIT},
               {"SIGCHLD", SIGCHLD}, {"SIGWINCH", SIGWINCH}, {NULL, 0}};

static const char *sig_name(int num) {
  for (int i = 0; signals[i].name; i++)
    if (signals[i].num == num) return signals[i].name;
  return "SIGUNKNOWN";
}

static void on_sig(uv_signal_t *s, int num) {
  jr_sig_h *h = s->data;
  if (h->fn_ref == LUA_NOREF || jr_H.shutting_down) return;
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->fn_ref);
  lua_pushstring(L, sig_name(num));
  jr_sched_spawn(L, 1);
  lua_pop(L, 1);
}

static void sig_closed(uv_handle_t *h) { free(h->data); }

/* jobrt.on_signal(name, fn) -> handle with :close() */
static int l_on_signal(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int num = 0;
  for (int i = 0; signals[i].name; i++)
    if (strcmp(signals[i].name, name) == 0 || strcmp(signals[i].name + 3, name) == 0)
      num = signals[i].num;
  if (num == 0)
    return luaL_error(L, "jobrt.on_signal: unknown signal '%s' (use SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGQUIT, SIGCHLD or SIGWINCH)", name);
  jr_sig_ud *u = lua_newuserdata(L, sizeof *u);
  u->h = malloc(sizeof *u->h);
  if (u->h == NULL) return luaL_error(L, "jobrt.on_signal: out of memory");
  uv_signal_init(jr_H.loop, &u->h->s);
  u->h->s.data = u->h;
  lua_pushvalue(L, 2);
  u->h->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  uv_signal_start(&u->h->s, on_sig, num);
  uv_unref((uv_handle_t *)&u->h->s);
  luaL_getmetatable(L, SIG_MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* handle:close(): stop handling the signal (default action returns). */
static int sig_close(lua_State *L) {
  jr_sig_ud *u = luaL_checkudata(L, 1, SIG_MT);
  if (u->h == NULL) return 0;
  if (!jr_H.shutting_down) {
    luaL_unref(L, LUA_REGISTRYINDEX, u->h->fn_ref);
    u->h->fn_ref = LUA_NOREF;
    uv_close((uv_handle_t *)&u->h->s, sig_closed);
  }
  u->h = NULL;
  return 0;
}

int jr_open_signal(lua_State *L) {
  luaL_newmetatable(L, SIG_MT);
  lua_newtable(L);
  lua_pushcfunction(L, sig_close);
  lua_setfield(L, -2, "close");
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_on_signal);
  lua_setfield(L, -2, "on_signal");
  return 1;
}
