/* resp_fuzz.c - libFuzzer harness for Redis replies turned into Lua values:
 * the reply reader through which the Redis client builds every reply
 * straight into Lua (runtime/redis_reader.c: jr_reader_init, jr_reader_feed,
 * jr_reader_next; hiredis' redisReader with jobrt's element functions).
 *
 * Each input is fed to two readers: jobrt's, in pieces (the first byte
 * chooses where the input is cut, as a socket would deliver it), and
 * hiredis' with its own element functions, whole. Invariants: no sanitizer
 * report; both readers agree on every reply and on every protocol error;
 * each Lua value matches hiredis' reply tree (strings and statuses as
 * strings, integers as numbers, nil as the null light userdata, arrays as
 * tables in order, an error inside an array as { err = message }), and the
 * root fields jobrt keeps (type, str, len, integer, elements) describe it.
 */
#include "redis_private.h"

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lua_State *FL;
static jr_reader rd;

static void *fuzz_alloc(void *ud, void *p, size_t osize, size_t nsize) {
  (void)ud;
  (void)osize;
  if (nsize == 0) {
    free(p);
    return NULL;
  }
  return realloc(p, nsize);
}

/* Whether the Lua value at index idx of the stage matches hiredis' r;
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
  return 0;
}

/* Feeds data to jobrt's reader in pieces of `step` bytes (0: whole). */
static void feed(const char *data, size_t size, size_t *fed, size_t step) {
  size_t n = step ? step : size;
  if (*fed + n > size) n = size - *fed;
  if (n > 0) jr_reader_feed(&rd, data + *fed, n);
  *fed += n;
}

/* Whether data announces an array of a million elements or more, or a bulk
 * string of 100 MB or more: hiredis' own reader (the reference here)
 * allocates room for all the elements at once, which measures the machine,
 * not the reader, and jobrt's refuses bulk strings over 512 MB on purpose
 * while hiredis 0.14 waits for them. */
static int huge(const uint8_t *data, size_t size) {
  for (size_t i = 0; i + 1 < size; i++) {
    if (data[i] != '*' && data[i] != '$') continue;
    size_t j = i + 1, digits = 0;
    while (j < size && data[j] >= '0' && data[j] <= '9') { j++; digits++; }
    if (digits >= (data[i] == '*' ? 7u : 9u)) return 1;
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0 || huge(data, size)) return 0;
  size_t step = data[0] % 8;           /* 0: whole; else pieces of 1..7 bytes */
  const char *in = (const char *)data + 1;
  size_t len = size - 1;

  if (jr_reader_init(&rd) != 0) abort();
  redisReader *dr = redisReaderCreate();
  redisReaderFeed(dr, in, len);
  size_t fed = 0;
  for (;;) {
    void *theirs = NULL;
    int mine;
    /* jobrt's reader may need several feeds for one reply */
    for (;;) {
      mine = jr_reader_next(&rd);
      if (mine != 0 || fed >= len) break;
      feed(in, len, &fed, step);
    }
    int rdc = redisReaderGetReply(dr, &theirs);
    if ((mine < 0) != (rdc != REDIS_OK)) {
      fprintf(stderr, "resp_fuzz: the readers disagree on a protocol error (jobrt: %s, hiredis: %s)\n",
              mine < 0 ? jr_reader_error(&rd) : "none", rdc == REDIS_OK ? "none" : dr->errstr);
      abort();
    }
    if (mine < 0) break;                             /* both refused the stream */
    if ((mine == 1) != (theirs != NULL)) {
      fprintf(stderr, "resp_fuzz: one reader has a reply and the other none\n");
      abort();
    }
    if (mine == 0) break;                            /* both need more input */
    redisReply *r = theirs;
    if (lua_gettop(rd.stage) != 1 || !same(rd.stage, 1, r, 1)) {
      fprintf(stderr, "resp_fuzz: the Lua value differs from hiredis' reply (type %d)\n", r->type);
      abort();
    }
    int root_ok = rd.type == r->type;
    if (r->type == REDIS_REPLY_INTEGER) root_ok = root_ok && rd.integer == r->integer;
    if (r->type == REDIS_REPLY_ARRAY) root_ok = root_ok && rd.elements == r->elements;
    if (r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING)
      root_ok = root_ok && (r->type == REDIS_REPLY_STRING || (rd.str && rd.len == r->len &&
                                                              memcmp(rd.str, r->str, r->len) == 0));
    if (!root_ok) {
      fprintf(stderr, "resp_fuzz: the root fields (type %d) do not describe hiredis' reply (type %d)\n",
              rd.type, r->type);
      abort();
    }
    lua_settop(rd.stage, 0);
    freeReplyObject(r);
  }
  jr_reader_free(&rd);
  redisReaderFree(dr);
  return 0;
}
