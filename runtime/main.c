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

/* Masks the password in a Redis URL in place: the part between "user:" (or
 * "//") and the last '@' of the authority, and the value of "password=" in
 * the query (unix:///path?password=...). Lengths stay the same. */
static void mask_url(char *u) {
  char *auth = strstr(u, "://");
  if (auth == NULL) return;
  auth += 3;
  size_t alen = strcspn(auth, "/?#");
  char *at = NULL;
  for (char *p = auth; p < auth + alen; p++)
    if (*p == '@') at = p;
  if (at) {
    char *colon = memchr(auth, ':', (size_t)(at - auth));
    for (char *p = colon ? colon + 1 : auth; p < at; p++) *p = '*';
  }
  for (char *q = strchr(u, '?'); q; q = strchr(q + 1, '&')) {
    char *v = strstr(q, "password=");
    if (v == NULL) break;
    for (v += 9; *v && *v != '&' && *v != '#'; v++) *v = '*';
    q = v;
    if (*q == '\0') break;
  }
}

/* Masks the password of every Redis URL given as --redis URL or --redis=URL
 * in the process's own argv. Called once Lua has its copy of the command
 * line: /proc/PID/cmdline, which ps shows to every local user, reads this
 * memory. (A password is best not typed on a command line at all: set
 * JOBRT_REDIS instead. Worker children get the address that way.) */
static void scrub_argv(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strncmp(argv[i], "--redis=", 8) == 0) mask_url(argv[i] + 8);
    else if (strcmp(argv[i], "--redis") == 0 && i + 1 < argc) mask_url(argv[++i]);
  }
}

#if defined(__SANITIZE_ADDRESS__)
/* Under ASan (make sanitize) Lua's objects live in malloc'd memory, so that
 * C code reading a Lua string the collector has freed is caught: LuaJIT's
 * own allocator would hand that memory out again unseen. (GC64 LuaJIT
 * accepts any allocator.) */
static void *asan_alloc(void *ud, void *p, size_t osize, size_t nsize) {
  (void)ud;
  (void)osize;
  if (nsize == 0) {
    free(p);
    return NULL;
  }
  return realloc(p, nsize);
}
static int asan_panic(lua_State *L) {
  fprintf(stderr, "jobrt: unprotected Lua error: %s\n", lua_tostring(L, -1));
  return 0;
}
static lua_State *new_state(void) {
  lua_State *L = lua_newstate(asan_alloc, NULL);
  if (L) lua_atpanic(L, asan_panic);
  return L;
}
#else
#define new_state() luaL_newstate()
#endif

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
  lua_State *L = new_state();
  if (L == NULL) {
    fprintf(stderr, "jobrt: cannot create a Lua state (out of memory)\n");
    return 1;
  }
  luaL_openlibs(L);
  jr_sched_init(L, loop);
  jr_log_init(loop);
  jr_stdlib_install(L);
  jr_preload_modules(L);

  /* arg: the whole command line, as the cli module sees it. */
  lua_createtable(L, argc, 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_setglobal(L, "arg");
  scrub_argv(argc, argv);

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
