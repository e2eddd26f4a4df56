/* main.c - the jobrt executable: one Lua state, one libuv loop.
 *
 * Everything a user types is handled by the embedded Lua module jobrt.cli,
 * which runs as the main coroutine: `jobrt -e CODE`, `jobrt run FILE`, the
 * worker, the REPL and every inspect command. This file only builds the
 * state, runs the loop until the last coroutine ends, closes what is left
 * and reports handles that were left open.
 */
#include "private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>

int luaopen_cjson(lua_State *L);   /* liblua5.1-cjson.a */

/* Opens a C module and stores it in package.preload[name] form: the module
 * table is built now and returned by require. */
static void preload(lua_State *L, const char *name, lua_CFunction open) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  lua_pushcfunction(L, open);
  lua_call(L, 0, 1);
  lua_setfield(L, -2, name);
  lua_pop(L, 2);
}

static int open_cjson(lua_State *L) {
  lua_pushcfunction(L, luaopen_cjson);
  lua_call(L, 0, 1);
  return 1;
}

static void count_walk(uv_handle_t *h, void *arg) {
  int *n = arg;
  if (!uv_is_closing(h)) {
    (*n)++;
    fprintf(stderr, "jobrt: handle left open at exit: %s\n", uv_handle_type_name(h->type));
  }
}

int main(int argc, char **argv) {
  /* A write to a closed socket or pipe must be an error return, not death. */
  signal(SIGPIPE, SIG_IGN);
  uv_loop_t *loop = uv_default_loop();
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "jobrt: cannot create a Lua state (out of memory)\n");
    return 1;
  }
  luaL_openlibs(L);
  jr_sched_init(L, loop);
  jr_log_init(loop);
  jr_stdlib_install(L);
  preload(L, "cjson", open_cjson);
  preload(L, "jobrt.core", jr_open_core);
  preload(L, "jobrt.core.timer", jr_open_timer);
  preload(L, "jobrt.core.signal", jr_open_signal);
  preload(L, "jobrt.core.fswatch", jr_open_fswatch);
  preload(L, "jobrt.core.redis", jr_open_redis);
  preload(L, "jobrt.core.net", jr_open_net);
  preload(L, "jobrt.core.term", jr_open_term);
  preload(L, "jobrt.core.proc", jr_open_proc);
  preload(L, "jobrt.core.http", jr_open_http);
  preload(L, "jobrt.core.tcp", jr_open_tcp);

  /* arg: the whole command line, as the cli module sees it. */
  lua_createtable(L, argc, 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_setglobal(L, "arg");

  /* The main coroutine: require('jobrt.cli').main(arg). */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "jobrt.cli");
  if (lua_pcall(L, 1, 1, 0) != 0) {
    fprintf(stderr, "jobrt: cannot load the embedded cli: %s\n", lua_tostring(L, -1));
    return 70;
  }
  lua_getfield(L, -1, "main");
  lua_remove(L, -2);
  lua_getglobal(L, "arg");
  jr_sched_spawn(L, 1);                   /* becomes the main coroutine */
  lua_pop(L, 1);

  uv_run(loop, UV_RUN_DEFAULT);
  jr_log_flush();
  if (jr_H.live > 0 && !jr_H.exiting) {
    /* Nothing left that could wake the coroutines still waiting. */
    fprintf(stderr, "jobrt: %d coroutine(s) still waiting, but nothing is left that could wake them\n",
            jr_H.live);
    jr_sched_dump();
    if (jr_H.exit_code == 0) jr_H.exit_code = 1;
    jr_H.live = 0;
    jr_sched_abort();
    uv_run(loop, UV_RUN_DEFAULT);
  }
  jr_sched_close();
  jr_log_close();
  uv_run(loop, UV_RUN_DEFAULT);

  int open = 0;
  uv_walk(loop, count_walk, &open);
  if (open > 0 && getenv("JOBRT_CHECK_HANDLES") && jr_H.exit_code == 0) jr_H.exit_code = 3;
  jr_H.lua_closing = 1;
  lua_close(L);
  jr_redis_pool_free();
  jr_sched_free();
  jr_log_free();
  uv_run(loop, UV_RUN_DEFAULT);      /* close callbacks of handles freed by finalizers */
  if (uv_loop_close(loop) != 0 && getenv("JOBRT_CHECK_HANDLES")) {
    fprintf(stderr, "jobrt: the event loop still had handles after the Lua state closed\n");
    if (jr_H.exit_code == 0) jr_H.exit_code = 3;
  }
  fflush(stdout);
  return jr_H.exit_code;
}
