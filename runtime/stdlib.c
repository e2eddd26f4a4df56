/* stdlib.c - the modules built into the binary: the Lua modules compiled in
 * (a package searcher finds them) and the C modules (opened at start).
 *
 * tools/embed.lua turns every .lua file under stdlib/ into LuaJIT bytecode (with
 * debug info, so tracebacks name stdlib/jobrt/x.lua:line) and every
 * .lua file of lua-server-scripts/ into the module jobrt.server_scripts. This file
 * installs a package searcher, placed before the file searchers, that loads
 * them by name, so `jobrt` needs no files on disk.
 */
#include "private.h"

#include <string.h>

static const jr_embedded *find(const char *name) {
  for (const jr_embedded *m = jr_embedded_modules; m->name; m++)
    if (strcmp(m->name, name) == 0) return m;
  return NULL;
}

/* package.loaders entry: returns the module's loader or a "not embedded"
 * line for require's message. */
static int searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const jr_embedded *m = find(name);
  if (m == NULL) {
    lua_pushfstring(L, "\n\tno module '%s' embedded in jobrt", name);
    return 1;
  }
  if (luaL_loadbuffer(L, (const char *)m->data, m->len, name) != 0)
    return luaL_error(L, "error loading embedded module '%s': %s", name, lua_tostring(L, -1));
  return 1;
}

void jr_stdlib_install(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaders");
  int n = (int)lua_objlen(L, -1);
  for (int i = n; i >= 2; i--) {        /* make room at position 2 */
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushcfunction(L, searcher);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 2);
}

int luaopen_cjson(lua_State *L);   /* liblua5.1-cjson.a */

/* Opens a C module and stores it in package.loaded[name]: the module table
 * is built now and returned by require. */
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

/* Opens every C module of the host (jobrt.core, jobrt.core.timer, ...) and
 * lua-cjson (as cjson). The one list, used by main.c and by the fuzz
 * harnesses (tests/fuzz/lua_fuzz.c), so they load the same modules. */
void jr_preload_modules(lua_State *L) {
  preload(L, "cjson", open_cjson);
  preload(L, "jobrt.core", jr_open_core);
  preload(L, "jobrt.core.timer", jr_open_timer);
  preload(L, "jobrt.core.signal", jr_open_signal);
  preload(L, "jobrt.core.fswatch", jr_open_fswatch);
  preload(L, "jobrt.core.redis", jr_open_redis);
  preload(L, "jobrt.core.net", jr_open_net);
  preload(L, "jobrt.core.term", jr_open_term);
  preload(L, "jobrt.core.proc", jr_open_proc);
  preload(L, "jobrt.core.json", jr_open_json);
  preload(L, "jobrt.core.http", jr_open_http);
  preload(L, "jobrt.core.tcp", jr_open_tcp);
}
