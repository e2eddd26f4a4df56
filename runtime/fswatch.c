/* fswatch.c - jobrt.core.fswatch: run a Lua function when something changes in a directory.
 *
 * One watcher is one uv_fs_event_t on one path (on Linux an inotify watch: a directory's
 * direct entries only, not its subdirectories; jobrt.watcher builds recursive watching and
 * the coalescing of bursts on top of this). The handle is malloc'd, never inside Lua
 * userdata, and freed in its close callback only (or by the shutdown walk in sched.c, which
 * frees h->data): Lua may collect the watcher object while libuv still owns the handle.
 * While started, the Lua object is pinned in the registry, so a watcher nobody refers to
 * keeps watching until closed; like a timer, an open watcher keeps the loop alive.
 *
 *   local fswatch = require 'jobrt.core.fswatch'
 *   local w, err = fswatch.watch(path, function(name, event, err) end)
 *   w:path() -> the path given;  w:close()
 */
#include "private.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  uv_fs_event_t ev;
  int fn_ref;       /* callback; LUA_NOREF once closed */
  int self_ref;     /* pins the Lua object while watching; LUA_NOREF otherwise */
} jr_fswatch_h;

typedef struct {
  jr_fswatch_h *h;  /* NULL once closed */
} jr_fswatch_ud;

static const char FSWATCH_MT[] = "jobrt.fswatch";

static void fswatch_closed(uv_handle_t *h) { free(h->data); }

/* Runs the Lua callback in a fresh coroutine: fn(name, event, err).
 *   name:  the entry of the watched directory that changed (a file or subdirectory name,
 *          not a path), the watched path's own base name when the path itself changed (a
 *          deleted directory), or nil when the system did not say.
 *   event: "change" (contents or attributes written), "rename" (created, deleted, moved in
 *          or out; also how an editor's save-by-rename shows), or "error".
 *   err:   with "error" only: "CODE: message" (uv_err_name, uv_strerror). */
static void on_event(uv_fs_event_t *ev, const char *filename, int events, int status) {
  jr_fswatch_h *h = ev->data;
  if (h->fn_ref == LUA_NOREF || jr_H.shutting_down) return;
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->fn_ref);
  if (status < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "error");
    lua_pushfstring(L, "%s: %s", uv_err_name(status), uv_strerror(status));
  } else {
    if (filename) lua_pushstring(L, filename); else lua_pushnil(L);
    lua_pushstring(L, (events & UV_RENAME) ? "rename" : "change");
    lua_pushnil(L);
  }
  jr_sched_spawn(L, 3);
  lua_pop(L, 1);
}

/* fswatch.watch(path, fn) -> watcher | nil, "CODE: message"
 * path: a directory (its entries are watched) or a file. fn: see on_event. Errors:
 * "ENOENT: ..." (no such path), "ENOSPC: ..." (the system's limit on watches, on Linux
 * fs.inotify.max_user_watches, is reached), "EACCES: ...". A wrong argument raises. */
static int l_watch(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (jr_H.shutting_down) {
    lua_pushnil(L);
    lua_pushliteral(L, "ECLOSED: cannot watch files: jobrt is shutting down");
    return 2;
  }
  jr_fswatch_ud *u = lua_newuserdata(L, sizeof *u);
  u->h = NULL;
  luaL_getmetatable(L, FSWATCH_MT);
  lua_setmetatable(L, -2);
  jr_fswatch_h *h = malloc(sizeof *h);
  if (h == NULL) return luaL_error(L, "fswatch.watch: out of memory");
  int rc = uv_fs_event_init(jr_H.loop, &h->ev);
  if (rc < 0) {
    free(h);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: cannot watch %s: %s", uv_err_name(rc), path, uv_strerror(rc));
    return 2;
  }
  h->ev.data = h;
  h->fn_ref = LUA_NOREF;
  h->self_ref = LUA_NOREF;
  rc = uv_fs_event_start(&h->ev, on_event, path, 0);
  if (rc < 0) {
    uv_close((uv_handle_t *)&h->ev, fswatch_closed);
    lua_pushnil(L);
    if (rc == UV_ENOSPC)
      lua_pushfstring(L, "%s: cannot watch %s: the limit on watched directories is reached (raise it: "
                      "sysctl fs.inotify.max_user_watches=524288)", uv_err_name(rc), path);
    else
      lua_pushfstring(L, "%s: cannot watch %s: %s", uv_err_name(rc), path, uv_strerror(rc));
    return 2;
  }
  u->h = h;
  lua_pushvalue(L, 2);
  h->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  h->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

/* w:path() -> the path being watched, or nil once closed */
static int w_path(lua_State *L) {
  jr_fswatch_ud *u = luaL_checkudata(L, 1, FSWATCH_MT);
  if (u->h == NULL) return 0;
  char buf[4096];
  size_t n = sizeof buf;
  if (uv_fs_event_getpath(&u->h->ev, buf, &n) != 0) return 0;
  lua_pushlstring(L, buf, n);
  return 1;
}

/* w:close(): stops watching; the callback never runs again (also after an event already
 * queued). Closing twice is harmless. During the host's shutdown the walk in sched.c has
 * closed (and will free) the handle: only the Lua side lets go of it then. */
static int w_close(lua_State *L) {
  jr_fswatch_ud *u = luaL_checkudata(L, 1, FSWATCH_MT);
  jr_fswatch_h *h = u->h;
  if (h == NULL) return 0;
  u->h = NULL;
  if (jr_H.shutting_down) return 0;     /* the walk closed it and frees it */
  if (h->fn_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, h->fn_ref);
  h->fn_ref = LUA_NOREF;
  if (h->self_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, h->self_ref);
  h->self_ref = LUA_NOREF;
  uv_close((uv_handle_t *)&h->ev, fswatch_closed);
  return 0;
}

int jr_open_fswatch(lua_State *L) {
  static const luaL_Reg meths[] = {{"close", w_close}, {"path", w_path}, {NULL, NULL}};
  luaL_newmetatable(L, FSWATCH_MT);
  lua_newtable(L);
  luaL_register(L, NULL, meths);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, w_close);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_watch);
  lua_setfield(L, -2, "watch");
  return 1;
}
