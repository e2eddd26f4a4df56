/* lua_fuzz.c - libFuzzer harness for the parsers written in Lua (and the C
 * they call): the jobrt Lua state with the embedded stdlib, running one
 * target of tests/fuzz/targets/ on each input.
 *
 * The target is named by the environment variable JOBRT_FUZZ_TARGET (json,
 * url, args, jobfile, scripts); its file tests/fuzz/targets/NAME.lua
 * returns function(data). The function returns normally for any input the
 * code under test handles as it should (refusing it with a message
 * included) and raises when an invariant breaks; a raise is reported with
 * its traceback and aborts, which libFuzzer records as a crash. The same
 * target files run inside jobrt itself, without libFuzzer, for the
 * regression spec (tests/06-hostile/fuzz_regressions_spec.lua).
 *
 * Coverage: libFuzzer sees the C code's edges; to let it see the Lua lines
 * too, a line hook counts (source, line) pairs into extra counters, so an
 * input that reaches a new line of a Lua parser is kept. The JIT is off, so
 * every line runs through the hook. Lua's objects are malloc'd, so ASan
 * sees a C function that reads a string the collector has freed.
 */
#include "private.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <luajit.h>

enum { NCOUNTERS = 1 << 16 };
__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t lua_lines[NCOUNTERS];

static uint8_t lua_seen[NCOUNTERS];     /* every line reached so far (libFuzzer clears lua_lines) */
static long budget = -1;                /* lines a target may still run; -1: no limit */

static lua_State *FL;
static int target_ref = LUA_NOREF;

static void *fuzz_alloc(void *ud, void *p, size_t osize, size_t nsize) {
  (void)ud;
  (void)osize;
  if (nsize == 0) {
    free(p);
    return NULL;
  }
  return realloc(p, nsize);
}

/* Counts the line about to run: FNV-1a of the chunk's source pointer (one
 * per chunk: the embedded modules are loaded once) and the line. Only code
 * loaded from a file or the stdlib counts (its chunk name starts with '@'):
 * Lua text that comes from the input itself (the jobfile target compiles
 * it) would make every new line of the input look like new coverage. */
static void line_hook(lua_State *L, lua_Debug *ar) {
  if (!lua_getinfo(L, "S", ar)) return;
  if (ar->source == NULL || ar->source[0] != '@') {
    if (budget > 0 && --budget == 0) {
      budget = -1;
      luaL_error(L, "line budget spent");
    }
    return;
  }
  uint64_t h = 1469598103934665603ULL;
  uintptr_t src = (uintptr_t)ar->source;
  for (int i = 0; i < 8; i++) {
    h ^= (src >> (8 * i)) & 0xff;
    h *= 1099511628211ULL;
  }
  h ^= (uint64_t)(unsigned)ar->currentline;
  h *= 1099511628211ULL;
  uint8_t *c = &lua_lines[h & (NCOUNTERS - 1)];
  if (*c < 255) (*c)++;
  lua_seen[h & (NCOUNTERS - 1)] = 1;
  if (budget > 0 && --budget == 0) {
    budget = -1;
    luaL_error(L, "line budget spent");
  }
}

/* jobrt_fuzz_budget(n): the code run next may pass through at most n lines
 * (counting each jump back in a loop) before it raises "line budget spent";
 * n <= 0 lifts the limit. For targets that run code from the input. LuaJIT
 * has one hook for all coroutines, which is this file's line hook, so a
 * target cannot use debug.sethook for this. */
static int l_budget(lua_State *L) {
  lua_Number n = luaL_checknumber(L, 1);
  budget = n > 0 ? (long)n : -1;
  return 0;
}

/* At exit: how many Lua lines (distinct source/line hashes) any input reached. */
static void report_lines(void) {
  size_t n = 0;
  for (size_t i = 0; i < NCOUNTERS; i++) n += lua_seen[i];
  fprintf(stderr, "lua_fuzz: Lua lines reached: %zu\n", n);
}

static int traceback(lua_State *L) {
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  const char *target = getenv("JOBRT_FUZZ_TARGET");
  const char *root = getenv("JOBRT_FUZZ_ROOT");          /* the checkout, for tests/fuzz/targets */
  if (target == NULL) {
    fprintf(stderr, "lua_fuzz: set JOBRT_FUZZ_TARGET to json, url, args, jobfile or scripts\n");
    exit(2);
  }
  FL = lua_newstate(fuzz_alloc, NULL);
  luaL_openlibs(FL);
  luaJIT_setmode(FL, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
  jr_sched_init(FL, uv_default_loop());
  jr_stdlib_install(FL);
  jr_preload_modules(FL);
  lua_createtable(FL, 0, 0);
  lua_setglobal(FL, "arg");
  lua_pushcfunction(FL, l_budget);
  lua_setglobal(FL, "jobrt_fuzz_budget");
  atexit(report_lines);
  char path[4096];
  snprintf(path, sizeof path, "%s/tests/fuzz/targets/%s.lua", root ? root : ".", target);
  lua_getglobal(FL, "package");                            /* targets require tests.fuzz.* */
  lua_pushfstring(FL, "%s/?.lua;", root ? root : ".");
  lua_getfield(FL, -2, "path");
  lua_concat(FL, 2);
  lua_setfield(FL, -2, "path");
  lua_pop(FL, 1);
  lua_pushcfunction(FL, traceback);
  if (luaL_loadfile(FL, path) != 0 || lua_pcall(FL, 0, 1, -2) != 0) {
    fprintf(stderr, "lua_fuzz: cannot load target %s: %s\n", path, lua_tostring(FL, -1));
    exit(2);
  }
  if (!lua_isfunction(FL, -1)) {
    fprintf(stderr, "lua_fuzz: %s must return a function(data)\n", path);
    exit(2);
  }
  target_ref = luaL_ref(FL, LUA_REGISTRYINDEX);
  lua_pop(FL, 1);
  lua_sethook(FL, line_hook, LUA_MASKLINE, 0);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_pushcfunction(FL, traceback);
  lua_rawgeti(FL, LUA_REGISTRYINDEX, target_ref);
  lua_pushlstring(FL, (const char *)data, size);
  if (lua_pcall(FL, 1, 0, -3) != 0) {
    fprintf(stderr, "lua_fuzz: the target raised (an invariant broke):\n%s\n", lua_tostring(FL, -1));
    abort();
  }
  lua_settop(FL, 0);
  return 0;
}
