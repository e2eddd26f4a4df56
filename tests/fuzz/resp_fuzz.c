/* resp_fuzz.c - libFuzzer harness for Redis replies turned into Lua values:
 * the reader callbacks through which the Redis bridge builds every reply
 * straight into Lua (rd_string, rd_array, rd_integer, rd_nil and the
 * `lua_replies` table in runtime/redis.c).
 *
 * Those callbacks are static, so this file includes runtime/redis.c itself
 * (the only test that does). The transport rewrite is splitting that file;
 * once its reply reader has a file and a header of its own, replace the
 * #include below with that header and point feed() at its entry points:
 * nothing else here knows where the reader lives.
 *
 * Each input is fed to two hiredis readers: one with jobrt's callbacks, in
 * pieces (the first byte chooses where the input is cut, as a socket would
 * deliver it), and one with hiredis' own callbacks, whole. Invariants: no
 * sanitizer report; both readers agree on every reply and on every protocol
 * error; each Lua value matches hiredis' reply tree (strings and statuses as
 * strings, integers as numbers, nil as the null light userdata, arrays as
 * tables in order, an error inside an array as { err = message }).
 */
#include "../../runtime/redis.c"      /* the reader callbacks: see the comment above */

#include <stdint.h>

static lua_State *FL;
static jr_conn conn;

static void *fuzz_alloc(void *ud, void *p, size_t osize, size_t nsize) {
  (void)ud;
  (void)osize;
  if (nsize == 0) {
    free(p);
    return NULL;
  }
  return realloc(p, nsize);
}

/* Whether the Lua value at index idx of conn.stage matches hiredis' r;
 * root: r is a whole reply (a root error is a plain string there). */
static int same(lua_State *S, int idx, redisReply *r, int root) {
  switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS: {
      size_t n;
      if (lua_type(S, idx) != LUA_TSTRING) return 0;
      const char *s = lua_tolstring(S, idx, &n);
      return n == r->len && memcmp(s, r->str, n) == 0;
    }
    case REDIS_REPLY_ERROR: {
      if (root) {
        size_t n;
        if (lua_type(S, idx) != LUA_TSTRING) return 0;
        const char *s = lua_tolstring(S, idx, &n);
        return n == r->len && memcmp(s, r->str, n) == 0;
      }
      if (!lua_istable(S, idx)) return 0;
      lua_getfield(S, idx, "err");
      size_t n;
      const char *s = lua_tolstring(S, -1, &n);
      int ok = s && n == r->len && memcmp(s, r->str, n) == 0;
      lua_pop(S, 1);
      return ok;
    }
    case REDIS_REPLY_INTEGER:
      return lua_type(S, idx) == LUA_TNUMBER && lua_tonumber(S, idx) == (lua_Number)r->integer;
    case REDIS_REPLY_NIL:
      return lua_type(S, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(S, idx) == NULL;
    case REDIS_REPLY_ARRAY: {
      if (!lua_istable(S, idx) || lua_objlen(S, idx) != r->elements) return 0;
      luaL_checkstack(S, 2, "resp_fuzz");
      for (size_t i = 0; i < r->elements; i++) {
        lua_rawgeti(S, idx, (int)i + 1);
        int ok = same(S, lua_gettop(S), r->element[i], 0);
        lua_pop(S, 1);
        if (!ok) return 0;
      }
      return 1;
    }
    default:
      return 0;
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  FL = lua_newstate(fuzz_alloc, NULL);
  luaL_openlibs(FL);
  jr_sched_init(FL, uv_default_loop());
  memset(&conn, 0, sizeof conn);
  conn.stage = lua_newthread(FL);
  conn.stage_ref = luaL_ref(FL, LUA_REGISTRYINDEX);
  return 0;
}

/* Feeds data to the jobrt reader in pieces of `step` bytes (0: whole). */
static void feed(redisReader *lr, const char *data, size_t size, size_t *fed, size_t step) {
  size_t n = step ? step : size;
  if (*fed + n > size) n = size - *fed;
  if (n > 0) redisReaderFeed(lr, data + *fed, n);
  *fed += n;
}

/* Whether data announces an array of a million elements or more: hiredis'
 * own reader (the reference here) allocates room for all of them at once,
 * which measures the machine, not the callbacks (jobrt's reader preallocates
 * at most 4096 slots and grows with what really arrives). */
static int huge_array(const uint8_t *data, size_t size) {
  for (size_t i = 0; i + 1 < size; i++) {
    if (data[i] != '*') continue;
    size_t j = i + 1, digits = 0;
    while (j < size && data[j] >= '0' && data[j] <= '9') { j++; digits++; }
    if (digits >= 7) return 1;
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0 || huge_array(data, size)) return 0;
  size_t step = data[0] % 8;           /* 0: whole; else pieces of 1..7 bytes */
  const char *in = (const char *)data + 1;
  size_t len = size - 1;

  redisReader *lr = redisReaderCreateWithFunctions(&lua_replies);
  redisReader *dr = redisReaderCreate();
  lr->privdata = &conn;
  redisReaderFeed(dr, in, len);
  size_t fed = 0;
  for (;;) {
    void *mine = NULL, *theirs = NULL;
    int rl = REDIS_OK;
    /* the piecewise reader may need several feeds for one reply */
    for (;;) {
      rl = redisReaderGetReply(lr, &mine);
      if (rl != REDIS_OK || mine != NULL || fed >= len) break;
      feed(lr, in, len, &fed, step);
    }
    int rd = redisReaderGetReply(dr, &theirs);
    if ((rl == REDIS_OK) != (rd == REDIS_OK)) {
      fprintf(stderr, "resp_fuzz: the readers disagree on a protocol error (jobrt: %s, hiredis: %s)\n",
              rl == REDIS_OK ? "none" : lr->errstr, rd == REDIS_OK ? "none" : dr->errstr);
      abort();
    }
    if (rl != REDIS_OK) break;                       /* both refused the stream */
    if ((mine == NULL) != (theirs == NULL)) {
      fprintf(stderr, "resp_fuzz: one reader has a reply and the other none\n");
      abort();
    }
    if (mine == NULL) break;                         /* both need more input */
    if (lua_gettop(conn.stage) != 1 || !same(conn.stage, 1, theirs, 1)) {
      fprintf(stderr, "resp_fuzz: the Lua value differs from hiredis' reply (type %d)\n",
              ((redisReply *)theirs)->type);
      abort();
    }
    if (((redisReply *)theirs)->type != conn.top.type) {
      fprintf(stderr, "resp_fuzz: c->top.type %d, hiredis says %d\n", conn.top.type,
              ((redisReply *)theirs)->type);
      abort();
    }
    lua_settop(conn.stage, 0);
    freeReplyObject(theirs);
  }
  lua_settop(conn.stage, 0);
  redisReaderFree(lr);
  redisReaderFree(dr);
  return 0;
}
