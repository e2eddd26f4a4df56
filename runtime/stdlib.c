/* stdlib.c - finds the Lua modules compiled into the binary.
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
