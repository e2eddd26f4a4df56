/* redis_pubsub.c - the subscriber link of a connection: conn:subscribe(),
 * conn:unsubscribe(), messages dispatched to Lua functions, and the
 * subscriptions restored after a reconnect.
 *
 * Pub/sub needs a socket of its own (once subscribed, a RESP2 connection
 * carries only pushed messages), opened by the first subscribe. Each
 * SUBSCRIBE or UNSUBSCRIBE names one channel, so it gets exactly one answer
 * (its confirmation, or an error such as an ACL's NOPERM) and sits in the
 * link's FIFO like any request; "message" pushes come between them. A
 * confirmation nobody asked for, a pattern message (we never PSUBSCRIBE) or
 * any other reply is the server breaking the protocol: the link closes with
 * EPROTO and reconnects.
 *
 * Lua state kept per connection (registry tables): subs channel -> fn,
 * subwait channel -> coroutine waiting in subscribe for the confirmation,
 * resub channel -> true while a restored subscription is unconfirmed. Each
 * message runs fn(channel, message) in a new coroutine; after a reconnect,
 * fn(channel, nil) runs once the subscription is live again: messages
 * published while the link was down are lost, and fn should re-check the
 * state it watches.
 */
#include "redis_private.h"

#include <string.h>

/* Calls subs[channel](channel, message) in a new coroutine; message NULL
 * means "resubscribed after a reconnect: messages may have been missed". */
static void dispatch(jr_conn *c, const char *ch, size_t chlen, const char *msg, size_t msglen) {
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->subs_ref);
  lua_pushlstring(L, ch, chlen);
  lua_rawget(L, -2);
  if (!lua_isfunction(L, -1)) {        /* unsubscribed meanwhile */
    lua_pop(L, 2);
    return;
  }
  lua_pushlstring(L, ch, chlen);
  if (msg) lua_pushlstring(L, msg, msglen);
  else lua_pushnil(L);
  jr_sched_spawn(L, 2);
  lua_pop(L, 2);
}

/* Takes the coroutine waiting for channel's confirmation out of subwait;
 * NULL when none waits. */
static lua_State *take_waiter(jr_conn *c, const char *ch, size_t chlen) {
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->subwait_ref);
  lua_pushlstring(L, ch, chlen);
  lua_rawget(L, -2);
  lua_State *co = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (co) {
    lua_pushlstring(L, ch, chlen);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
  return co;
}

/* t[key] = value for the registry table ref (value on top of L, popped). */
static void reg_set(lua_State *L, int ref, const char *k, size_t klen) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  lua_pushlstring(L, k, klen);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);
  lua_pop(L, 2);
}

/* Sends SUBSCRIBE (or UNSUBSCRIBE) channel on the subscriber link. Returns
 * 0, or -1 out of memory. */
static int send_one(jr_link *l, int kind, const char *ch, size_t len) {
  const char *argv[2] = {kind == REQ_SUB ? "SUBSCRIBE" : "UNSUBSCRIBE", ch};
  size_t lens[2] = {kind == REQ_SUB ? 9u : 11u, len};
  jr_req *q = jr_link_request(l, kind, 2, argv, lens);
  if (q == NULL) return -1;
  q->chan = malloc(len + 1);
  if (q->chan) {
    memcpy(q->chan, ch, len);
    q->chan[len] = '\0';
    q->chanlen = len;
  }
  return 0;
}

/* The subscriber link is up: subscribes every channel of subs. After a
 * reconnect, each channel's function is told (message nil) once its
 * subscription is confirmed. */
void jr_pubsub_up(jr_conn *c) {
  lua_State *L = jr_H.L;
  jr_link *l = &c->sub;
  int resubscribe = l->ups > 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->subs_ref);
  int subs = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->resub_ref);
  int resub = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, subs)) {
    lua_pop(L, 1);
    size_t len;
    const char *ch = lua_tolstring(L, -1, &len);
    if (send_one(l, REQ_SUB, ch, len) != 0) {
      lua_settop(L, subs - 1);
      jr_link_lost(l, JR_ENOMEM, "out of memory");
      return;
    }
    if (resubscribe) {
      lua_pushvalue(L, -1);
      lua_pushboolean(L, 1);
      lua_rawset(L, resub);
    }
  }
  lua_settop(L, subs - 1);
}

/* A "subscribe" confirmation for channel: resumes its waiter; after a
 * reconnect, tells the channel's function that it is live again. */
static void confirmed(jr_conn *c, const char *ch, size_t chlen) {
  lua_State *L = jr_H.L;
  lua_State *co = take_waiter(c, ch, chlen);
  if (co) {
    lua_pushboolean(co, 1);
    jr_resume(co, 1);
  }
  if (c->closed) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->resub_ref);
  lua_pushlstring(L, ch, chlen);
  lua_rawget(L, -2);
  int pending = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (pending) {
    lua_pushlstring(L, ch, chlen);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
  if (pending) dispatch(c, ch, chlen, NULL, 0);
}

/* SUBSCRIBE channel was refused (an ACL's NOPERM, say; the error is on top
 * of stage): the channel is dropped and its waiter gets the error. */
static void refused(jr_link *l, jr_req *q) {
  jr_conn *c = l->c;
  jr_reader *rd = &l->rd;
  if (q->chan == NULL) {
    lua_settop(rd->stage, 0);
    return;
  }
  lua_pushnil(jr_H.L);
  reg_set(jr_H.L, c->subs_ref, q->chan, q->chanlen);
  lua_State *co = take_waiter(c, q->chan, q->chanlen);
  if (co == NULL) {
    jr_log(3, "redis at %s refused the subscription to %s: %.*s", c->addr, q->chan,
           (int)rd->len, rd->str);
    lua_settop(rd->stage, 0);
    return;
  }
  int n = jr_push_redis_err(co, rd->stage, rd->str, rd->len);
  jr_resume(co, n);
}

/* Whether element i of the array on top of stage is the string s. */
static int elem_is(lua_State *st, int i, const char *s) {
  lua_rawgeti(st, 1, i);
  size_t len;
  const char *v = lua_tolstring(st, -1, &len);
  int eq = v && len == strlen(s) && memcmp(v, s, len) == 0;
  lua_pop(st, 1);
  return eq;
}

/* A reply on the subscriber link after its setup (alone on stage). */
void jr_pubsub_reply(jr_link *l) {
  jr_conn *c = l->c;
  jr_reader *rd = &l->rd;
  lua_State *st = rd->stage;
  jr_req *q = l->head;
  if (rd->type == REDIS_REPLY_ARRAY && rd->elements == 3) {
    if (elem_is(st, 1, "message")) {
      lua_rawgeti(st, 1, 2);
      lua_rawgeti(st, 1, 3);
      size_t chlen, msglen;
      const char *ch = lua_tolstring(st, -2, &chlen), *msg = lua_tolstring(st, -1, &msglen);
      if (ch && msg && lua_type(st, -2) == LUA_TSTRING && lua_type(st, -1) == LUA_TSTRING) {
        dispatch(c, ch, chlen, msg, msglen);
        lua_settop(st, 0);
        return;
      }
    } else if (elem_is(st, 1, "subscribe") && q && q->kind == REQ_SUB) {
      q = l->head;
      l->head = q->next;
      if (l->head == NULL) l->tail = NULL;
      lua_rawgeti(st, 1, 2);
      size_t chlen;
      const char *ch = lua_tolstring(st, -1, &chlen);
      jr_link_healthy(l);
      if (ch) confirmed(c, ch, chlen);
      lua_settop(st, 0);
      jr_req_free(q);
      return;
    } else if (elem_is(st, 1, "unsubscribe") && q && q->kind == REQ_UNSUB) {
      l->head = q->next;
      if (l->head == NULL) l->tail = NULL;
      lua_settop(st, 0);
      jr_req_free(q);
      return;
    }
  } else if (rd->type == REDIS_REPLY_ERROR && q && (q->kind == REQ_SUB || q->kind == REQ_UNSUB)) {
    l->head = q->next;
    if (l->head == NULL) l->tail = NULL;
    if (q->kind == REQ_SUB) refused(l, q);
    else lua_settop(st, 0);
    jr_req_free(q);
    return;
  }
  char what[80] = "a reply";
  if (rd->type == REDIS_REPLY_ARRAY && rd->elements >= 1) {
    lua_rawgeti(st, 1, 1);
    const char *k = lua_tostring(st, -1);
    snprintf(what, sizeof what, "a '%.40s' message", k ? k : "?");
  } else if (rd->type == REDIS_REPLY_STATUS || rd->type == REDIS_REPLY_ERROR) {
    snprintf(what, sizeof what, "'%s%.40s'", rd->type == REDIS_REPLY_ERROR ? "-" : "+", rd->str);
  }
  lua_settop(st, 0);
  jr_link_lost(l, JR_EPROTO, "redis at %s sent %s nobody asked for on the subscriber connection: "
               "closing it", c->addr, what);
}

/* Fails every coroutine still waiting for a subscription confirmation with
 * nil, "CODE: subscriber connection to redis at ADDR lost (why)", code. */
void jr_pubsub_fail_waiters(jr_conn *c, jr_errno_t code, const char *why) {
  lua_State *L = jr_H.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->subwait_ref);
  int t = lua_gettop(L);
  lua_newtable(L);
  lua_rawseti(L, LUA_REGISTRYINDEX, c->subwait_ref);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_State *co = lua_tothread(L, -1);
    lua_pop(L, 1);
    if (co) {
      jr_push_err(co, code, "subscriber connection to redis at %s %s (%s)", c->addr,
                  code == JR_ECLOSED ? "closed" : "lost", why);
      jr_resume(co, 3);
    }
  }
  lua_pop(L, 1);
}

/* conn:subscribe(channel, fn) -> true | nil, message, code. Yields until
 * Redis confirms the subscription; returns at once when fn only replaces
 * the function of a channel already subscribed, or when the subscriber link
 * is waiting to reconnect (the channel is restored with the others). */
int jr_pubsub_subscribe(lua_State *L, jr_conn *c) {
  size_t len;
  const char *ch = luaL_checklstring(L, 2, &len);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  if (c->closed) return jr_push_err(L, JR_ECLOSED, "redis connection to %s is closed", c->addr);
  jr_check_park(L, "redis subscribe");
  jr_link *l = &c->sub;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->subs_ref);
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  int already = !lua_isnil(L, -1);
  lua_pop(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  if (already) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (l->state == L_UP) {
    if (send_one(l, REQ_SUB, ch, len) != 0) return jr_push_err(L, JR_ENOMEM, "redis: out of memory");
  } else if (l->state == L_DOWN &&
             (uv_is_active((uv_handle_t *)&l->retry_t) || l->waiting_target || l->ever_up)) {
    lua_pushboolean(L, 1);        /* restored with the others when it reconnects */
    return 1;
  } else if (l->state == L_DOWN) {
    jr_link_start(l);             /* subscribes everything in subs once up */
    if (c->closed || l->state != L_CONNECTING)
      return jr_push_err(L, JR_ECONNREFUSED, "cannot connect to redis at %s: %s", c->addr,
                         l->lasterr[0] ? l->lasterr : "unknown error");
  }
  lua_pushthread(L);
  reg_set(L, c->subwait_ref, ch, len);
  return jr_park(L);
}

/* conn:unsubscribe(channel): forgets the channel's function at once. */
int jr_pubsub_unsubscribe(lua_State *L, jr_conn *c) {
  size_t len;
  const char *ch = luaL_checklstring(L, 2, &len);
  lua_pushnil(L);
  reg_set(L, c->subs_ref, ch, len);
  if (c->sub.state == L_UP && !c->closed) send_one(&c->sub, REQ_UNSUB, ch, len);
  return 0;
}
