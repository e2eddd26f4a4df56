/* redis_reader.c - RESP replies read by hiredis' redisReader, built straight
 * into Lua values.
 *
 * hiredis' default reply functions build a redisReply tree (a calloc and a
 * malloc per element) that would then be copied into Lua and freed. Here the
 * reader calls our functions instead, and each element goes straight onto
 * the reader's `stage` thread: strings and statuses become strings, integers
 * numbers, nil lightuserdata NULL (redis.null, the same value as
 * cjson.null), arrays tables, and errors nested in arrays { err = msg }.
 *
 * The reader builds one reply at a time, depth first. stage holds the
 * reply's root and, above it, the arrays still being filled, innermost on
 * top; a finished element is stored into the array right below it. When the
 * root is finished it is alone on stage, described by the jr_reader fields,
 * and its consumer moves it away (or clears stage). hiredis 0.14 nests
 * arrays at most 7 deep, so stage never holds more than a dozen values; a
 * deeper reply is a protocol error. Only RESP2 is understood: a RESP3 type
 * byte (a push '>', a map '%', ...) is a protocol error too, which the
 * connection turns into closing that connection with EPROTO.
 *
 * Every element function returns &rd->dummy: never NULL (which hiredis takes
 * for out of memory), and freeObject has nothing to free.
 */
#include "redis_private.h"

#include <stdio.h>
#include <string.h>

/* The element of task t is complete on top of stage: stores it in its
 * parent array, and goes on up while that completes the parent. */
static void *stage_done(const redisReadTask *t) {
  jr_reader *rd = t->privdata;
  while (t->parent) {
    lua_rawseti(rd->stage, -2, t->idx + 1);
    if (t->idx != t->parent->elements - 1) break;
    t = t->parent;
  }
  return &rd->dummy;
}

/* Returns t's reader; for a reply's root, first drops whatever an earlier
 * reply left on stage and starts describing the new one. */
static jr_reader *stage_begin(const redisReadTask *t, int type) {
  jr_reader *rd = t->privdata;
  if (t->parent == NULL) {
    lua_settop(rd->stage, 0);
    rd->type = type;
    rd->str = NULL;
    rd->len = 0;
    rd->integer = 0;
    rd->elements = 0;
  }
  return rd;
}

static void *rd_string(const redisReadTask *t, char *str, size_t len) {
  jr_reader *rd = stage_begin(t, t->type);
  if (t->parent == NULL) {
    lua_pushlstring(rd->stage, str, len);
    rd->str = lua_tolstring(rd->stage, -1, &rd->len);
    return &rd->dummy;
  }
  if (t->type == REDIS_REPLY_ERROR) {
    lua_createtable(rd->stage, 0, 1);
    lua_pushlstring(rd->stage, str, len);
    lua_setfield(rd->stage, -2, "err");
  } else {
    lua_pushlstring(rd->stage, str, len);
  }
  return stage_done(t);
}

static void *rd_array(const redisReadTask *t, int n) {
  jr_reader *rd = stage_begin(t, REDIS_REPLY_ARRAY);
  if (t->parent == NULL && rd->root_ref != LUA_NOREF)
    lua_rawgeti(rd->stage, LUA_REGISTRYINDEX, rd->root_ref);   /* see jr_reader_reuse_root */
  else
    lua_createtable(rd->stage, n < 4096 ? n : 4096, 0);       /* grows past that */
  if (t->parent == NULL) rd->elements = (size_t)n;
  return n > 0 ? &rd->dummy : stage_done(t);   /* an empty array is complete at once */
}

static void *rd_integer(const redisReadTask *t, long long v) {
  jr_reader *rd = stage_begin(t, REDIS_REPLY_INTEGER);
  lua_pushnumber(rd->stage, (lua_Number)v);
  if (t->parent == NULL) rd->integer = v;
  return stage_done(t);
}

static void *rd_nil(const redisReadTask *t) {
  jr_reader *rd = stage_begin(t, REDIS_REPLY_NIL);
  lua_pushlightuserdata(rd->stage, NULL);
  return stage_done(t);
}

static void rd_free(void *obj) { (void)obj; }

static redisReplyObjectFunctions lua_replies = {rd_string, rd_array, rd_integer, rd_nil, rd_free};

/* Sets rd up: a hiredis reader with our functions and a stage thread (made
 * on jr_H.L and kept by a registry ref). Returns 0, or -1 out of memory. */
int jr_reader_init(jr_reader *rd) {
  memset(rd, 0, sizeof *rd);
  rd->stage_ref = LUA_NOREF;
  rd->root_ref = LUA_NOREF;
  rd->r = redisReaderCreateWithFunctions(&lua_replies);
  if (rd->r == NULL) return -1;
  rd->r->privdata = rd;
  rd->stage = lua_newthread(jr_H.L);
  rd->stage_ref = luaL_ref(jr_H.L, LUA_REGISTRYINDEX);
  return 0;
}

/* Makes every root array of this reader the same table, overwritten in
 * place (elements past a shorter array's length are left over: use
 * rd->elements, not its length). For a consumer that never lets a root
 * array escape, such as the subscriber link, where each pushed message
 * would otherwise be a table of garbage. */
void jr_reader_reuse_root(jr_reader *rd) {
  if (rd->root_ref != LUA_NOREF) return;
  lua_createtable(jr_H.L, 4, 0);
  rd->root_ref = luaL_ref(jr_H.L, LUA_REGISTRYINDEX);
}

/* Forgets any half-read input (a new socket starts a new stream of
 * replies). Must not be called inside jr_reader_next. Returns 0, or -1 out
 * of memory (the reader is then unusable until a reset succeeds). */
int jr_reader_reset(jr_reader *rd) {
  if (rd->r && rd->r->len == rd->r->pos && rd->r->ridx == -1 && rd->r->err == 0) {
    lua_settop(rd->stage, 0);
    return 0;                 /* nothing half read: keep it */
  }
  if (rd->r) redisReaderFree(rd->r);
  rd->r = redisReaderCreateWithFunctions(&lua_replies);
  if (rd->r == NULL) return -1;
  rd->r->privdata = rd;
  if (rd->stage) lua_settop(rd->stage, 0);
  return 0;
}

/* Frees the hiredis reader; the stage's ref is dropped unless the Lua
 * state is closing (then it goes with the state). */
void jr_reader_free(jr_reader *rd) {
  if (rd->r) redisReaderFree(rd->r);
  rd->r = NULL;
  if (!jr_H.lua_closing) {
    if (rd->stage_ref != LUA_NOREF) luaL_unref(jr_H.L, LUA_REGISTRYINDEX, rd->stage_ref);
    if (rd->root_ref != LUA_NOREF) luaL_unref(jr_H.L, LUA_REGISTRYINDEX, rd->root_ref);
  }
  rd->stage_ref = rd->root_ref = LUA_NOREF;
  rd->stage = NULL;
}

/* Appends len bytes of input (copied). Returns 0, or -1 (out of memory or
 * an earlier protocol error: see jr_reader_error). */
int jr_reader_feed(jr_reader *rd, const char *buf, size_t len) {
  if (rd->r == NULL) return -1;
  return redisReaderFeed(rd->r, buf, len) == REDIS_OK ? 0 : -1;
}

/* Redis refuses bulk strings over proto-max-bulk-len, 512 MB by default. */
#define MAX_BULK (512LL * 1024 * 1024)

/* hiredis 0.14 waits for a bulk string of any announced length (1.0 checks
 * the range): a broken server announcing terabytes would make us buffer
 * until memory runs out. While the reader waits for a bulk string, its
 * position is just after the '$' (the type byte is consumed, the length line
 * is read again each time), so the length can be read there. Returns 1 when
 * it is over MAX_BULK (the reader is then failed). */
static int bulk_too_long(jr_reader *rd) {
  redisReader *r = rd->r;
  if (r->ridx < 0 || r->rstack[r->ridx].type != REDIS_REPLY_STRING) return 0;
  long long n = 0;
  for (size_t i = r->pos; i < r->len && r->buf[i] >= '0' && r->buf[i] <= '9'; i++) {
    n = n * 10 + (r->buf[i] - '0');
    if (n > MAX_BULK) {
      r->err = REDIS_ERR_PROTOCOL;
      snprintf(r->errstr, sizeof r->errstr, "a bulk string longer than Redis' 512 MB limit");
      return 1;
    }
  }
  return 0;
}

/* Reads the next reply from the input fed so far. Returns 1 when a reply
 * is complete (alone on stage; type and root fields set), 0 when more input
 * is needed, -1 on a protocol error (the reader stays failed: reset it
 * before reading from another socket). */
int jr_reader_next(jr_reader *rd) {
  void *reply = NULL;
  if (rd->r == NULL || rd->r->err) return -1;
  rd->feeding++;
  int rc = redisReaderGetReply(rd->r, &reply);
  rd->feeding--;
  if (rc != REDIS_OK) return -1;
  if (reply == NULL && bulk_too_long(rd)) return -1;
  return reply != NULL;
}

/* The reader's last error, e.g. "Protocol error, got \">\" as reply type byte". */
const char *jr_reader_error(const jr_reader *rd) {
  if (rd->r == NULL) return "out of memory";
  return rd->r->errstr[0] ? rd->r->errstr : "unknown reader error";
}
