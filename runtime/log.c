/* log.c - log lines: an RFC 3339 timestamp on each, as text or as one JSON
 * object per line, buffered and written to stderr once per loop turn.
 *
 * Text:  2025-05-01T10:00:00.123Z jobrt[1234] info: message
 * JSON:  {"ts":"2025-05-01T10:00:00.123Z","level":"info","pid":1234,"msg":"message", ...fields}
 * The format comes from JOBRT_LOG_FORMAT (text or json) at start, and from
 * jr_log_set_format (--log-format). Timestamps are UTC with milliseconds.
 *
 * Lines below warn are appended to a buffer that a prepare handle (before the
 * loop blocks) and a check handle (after the I/O callbacks of a turn) write
 * out, so a worker finishing many jobs in one turn makes one write(2) for all
 * of their lines. A warn or error line is written at once (after what is
 * buffered, so the order holds). Writes go out in pieces of whole lines of
 * at most PIPE_BUF bytes, so lines of several processes sharing one stderr
 * (the --procs children) never interleave inside a line.
 */
#include "private.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static int json_mode;             /* 0 text, 1 JSON */
static char *buf;                 /* lines not written yet */
static size_t buf_len, buf_cap;
static int buf_broken;            /* out of memory: lines were dropped */
static uv_prepare_t flush_prepare;
static uv_check_t flush_check;
static int handles_ready, handles_active;
static int my_pid;                /* getpid() is a system call in glibc >= 2.25: asked once */

#define FLUSH_AT (64 * 1024)      /* a buffer this full is written at once */

/* ---- growable strings ------------------------------------------------ */

typedef struct {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_grow(sbuf *b, size_t more) {
  if (b->oom || b->len + more <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + more) cap *= 2;
  char *np = realloc(b->p, cap);
  if (np == NULL) {
    b->oom = 1;
    return;
  }
  b->p = np;
  b->cap = cap;
}

static void sb_add(sbuf *b, const char *s, size_t n) {
  sb_grow(b, n);
  if (b->oom) return;
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t k;
  unsigned min;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) k = 2, min = 0x80;
  else if (c >= 0xe0 && c <= 0xef) k = 3, min = 0x800;
  else if (c >= 0xf0 && c <= 0xf4) k = 4, min = 0x10000;
  else return 0;
  if (k > n) return 0;
  unsigned cp = c & (0xff >> (k + 1));
  for (size_t i = 1; i < k; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return k;
}

/* Appends s as a JSON string (quotes included). Control characters are
 * escaped; bytes that are not UTF-8 become U+FFFD, so the line is always
 * valid JSON whatever a message quoted. */
static void sb_json_string(sbuf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *u = (const unsigned char *)s;
  sb_add(b, "\"", 1);
  size_t i = 0, run = 0;   /* run: bytes since i that need no escape */
  while (i + run < n) {
    unsigned char c = u[i + run];
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      run++;
      continue;
    }
    sb_add(b, s + i, run);
    i += run;
    run = 0;
    if (c >= 0x80) {
      size_t k = utf8_len(u + i, n - i);
      if (k) sb_add(b, s + i, k); else sb_add(b, "\\ufffd", 6);
      i += k ? k : 1;
      continue;
    }
    char e[6];
    switch (c) {
      case '"': sb_add(b, "\\\"", 2); break;
      case '\\': sb_add(b, "\\\\", 2); break;
      case '\n': sb_add(b, "\\n", 2); break;
      case '\r': sb_add(b, "\\r", 2); break;
      case '\t': sb_add(b, "\\t", 2); break;
      default:
        e[0] = '\\', e[1] = 'u', e[2] = '0', e[3] = '0', e[4] = hex[c >> 4], e[5] = hex[c & 15];
        sb_add(b, e, 6);
    }
    i++;
  }
  sb_add(b, s + i, run);
  sb_add(b, "\"", 1);
}

/* ---- one line ----------------------------------------------------------- */

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 bytes and a NUL) into out. The
 * seconds part is computed once per second. Thread-safe only when cache is
 * the caller's own (the watchdog thread passes its own). */
typedef struct {
  time_t sec;
  char text[24];
} ts_cache;

static void timestamp(char out[25], ts_cache *c) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  if (tv.tv_sec != c->sec || c->text[0] == 0) {
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    strftime(c->text, sizeof c->text, "%Y-%m-%dT%H:%M:%S", &tm);
    c->sec = tv.tv_sec;
  }
  snprintf(out, 25, "%.19s.%03dZ", c->text, (int)(tv.tv_usec / 1000));
}

/* Formats one whole line (newline included) into b: the message msg (n
 * bytes) and, in JSON, the fields (nf key/value pairs; a value is a string,
 * or raw JSON when raw[i] is set, e.g. a number). */
static void format_line(sbuf *b, ts_cache *tc, int level, const char *msg, size_t n,
                        const jr_log_field *fields, int nf) {
  char ts[25];
  char pid[32];
  timestamp(ts, tc);
  if (my_pid == 0) my_pid = (int)getpid();
  const char *lname = level_names[level & 3];
  if (!json_mode) {
    int k = snprintf(pid, sizeof pid, " jobrt[%d] ", my_pid);
    sb_add(b, ts, 24);
    sb_add(b, pid, (size_t)k);
    sb_str(b, lname);
    sb_add(b, ": ", 2);
    sb_add(b, msg, n);
    sb_add(b, "\n", 1);
    return;
  }
  sb_add(b, "{\"ts\":\"", 7);
  sb_add(b, ts, 24);
  sb_add(b, "\",\"level\":\"", 11);
  sb_str(b, lname);
  int k = snprintf(pid, sizeof pid, "\",\"pid\":%d,\"msg\":", my_pid);
  sb_add(b, pid, (size_t)k);
  sb_json_string(b, msg, n);
  for (int i = 0; i < nf; i++) {
    sb_add(b, ",", 1);
    sb_json_string(b, fields[i].key, strlen(fields[i].key));
    sb_add(b, ":", 1);
    if (fields[i].raw) sb_add(b, fields[i].value, fields[i].len);
    else sb_json_string(b, fields[i].value, fields[i].len);
  }
  sb_add(b, "}\n", 2);
}

/* ---- writing -------------------------------------------------------------- */

/* Writes n bytes to fd 2, retrying after EINTR and waiting out EAGAIN (a
 * non-blocking stderr). Gives up silently on other errors: a log line has
 * nowhere else to go. */
static void write_all(const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(2, p, n);
    if (w > 0) {
      p += w;
      n -= (size_t)w;
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd pf = {2, POLLOUT, 0};
      if (poll(&pf, 1, 1000) <= 0) return;
    } else {
      return;
    }
  }
}

/* Writes p[0..n) in pieces of whole lines of at most PIPE_BUF bytes (a line
 * longer than that goes alone). */
static void write_lines(const char *p, size_t n) {
  while (n > 0) {
    size_t take = n;
    if (take > PIPE_BUF) {
      take = 0;
      for (size_t i = 0; i < PIPE_BUF; i++)
        if (p[i] == '\n') take = i + 1;
      if (take == 0) {                       /* one long line */
        const char *nl = memchr(p, '\n', n);
        take = nl ? (size_t)(nl - p) + 1 : n;
      }
    }
    write_all(p, take);
    p += take;
    n -= take;
  }
}

static void stop_handles(void) {
  if (handles_active && !uv_is_closing((uv_handle_t *)&flush_prepare)) {
    uv_prepare_stop(&flush_prepare);
    uv_check_stop(&flush_check);
    handles_active = 0;
  }
}

/* Writes out every buffered line. */
void jr_log_flush(void) {
  if (buf_broken) {
    static const char lost[] = "jobrt: out of memory: log lines were dropped\n";
    buf_broken = 0;
    write_lines(buf, buf_len);
    buf_len = 0;
    write_all(lost, sizeof lost - 1);
  }
  if (buf_len > 0) write_lines(buf, buf_len);
  buf_len = 0;
  stop_handles();
}

static void on_prepare(uv_prepare_t *h) {
  (void)h;
  jr_log_flush();
}

static void on_check(uv_check_t *h) {
  (void)h;
  jr_log_flush();
}

static ts_cache main_ts;

/* Formats a line and buffers it (or writes it at once: warn and error, a
 * full buffer, no loop yet). */
static void emit(int level, const char *msg, size_t n, const jr_log_field *fields, int nf) {
  sbuf b = {buf, buf_len, buf_cap, 0};
  format_line(&b, &main_ts, level, msg, n, fields, nf);
  if (b.oom) {
    /* keep what was buffered before this line; drop the line */
    buf_broken = 1;
    if (b.p != buf) buf = b.p, buf_cap = b.cap;
  } else {
    buf = b.p;
    buf_len = b.len;
    buf_cap = b.cap;
  }
  if (level >= 2 || buf_len >= FLUSH_AT || !handles_ready || jr_H.shutting_down ||
      uv_is_closing((uv_handle_t *)&flush_prepare)) {
    jr_log_flush();
    return;
  }
  if (!handles_active) {
    uv_prepare_start(&flush_prepare, on_prepare);
    uv_check_start(&flush_check, on_check);
    handles_active = 1;
  }
}

/* Logs a printf-style message at level (0 debug .. 3 error) when level is at
 * least the configured one. */
void jr_log(int level, const char *fmt, ...) {
  if (level < jr_H.log_level) return;
  char small[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof small) {
    emit(level, small, (size_t)n, NULL, 0);
    return;
  }
  char *big = malloc((size_t)n + 1);
  if (big == NULL) {
    emit(level, small, sizeof small - 1, NULL, 0);
    return;
  }
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  emit(level, big, (size_t)n, NULL, 0);
  free(big);
}

/* Logs msg (n bytes) with fields (JSON only; text shows the message alone). */
void jr_log_fields(int level, const char *msg, size_t n, const jr_log_field *fields, int nf) {
  if (level < jr_H.log_level) return;
  emit(level, msg, n, fields, nf);
}

/* Writes one line at once, without the buffer: for another thread (the
 * watchdog, just before it ends the process). */
void jr_log_direct(int level, const char *msg) {
  ts_cache tc = {0, {0}};
  sbuf b = {NULL, 0, 0, 0};
  format_line(&b, &tc, level, msg, strlen(msg), NULL, 0);
  if (!b.oom) write_lines(b.p, b.len);
  free(b.p);
}

/* Sets the format: "text" or "json". Returns 0, or -1 for an unknown name. */
int jr_log_set_format(const char *name) {
  if (strcmp(name, "text") == 0) json_mode = 0;
  else if (strcmp(name, "json") == 0) json_mode = 1;
  else return -1;
  return 0;
}

const char *jr_log_format(void) { return json_mode ? "json" : "text"; }

/* Creates the flush handles (unreferenced: they never keep the loop alive)
 * and reads JOBRT_LOG_FORMAT; an unknown value there is reported once and
 * text is used. */
void jr_log_init(uv_loop_t *loop) {
  uv_prepare_init(loop, &flush_prepare);
  uv_check_init(loop, &flush_check);
  uv_unref((uv_handle_t *)&flush_prepare);
  uv_unref((uv_handle_t *)&flush_check);
  handles_ready = 1;
  const char *f = getenv("JOBRT_LOG_FORMAT");
  if (f && *f && jr_log_set_format(f) != 0)
    jr_log(2, "JOBRT_LOG_FORMAT: unknown log format '%s': use text or json (using text)", f);
}

/* Writes what is buffered and closes the handles (host exit). */
void jr_log_close(void) {
  jr_log_flush();
  handles_ready = 0;
  if (!uv_is_closing((uv_handle_t *)&flush_prepare)) uv_close((uv_handle_t *)&flush_prepare, NULL);
  if (!uv_is_closing((uv_handle_t *)&flush_check)) uv_close((uv_handle_t *)&flush_check, NULL);
}

/* Frees the buffer (after the last line: lua_close may still log). */
void jr_log_free(void) {
  jr_log_flush();
  free(buf);
  buf = NULL;
  buf_len = buf_cap = 0;
}

/* ---- Lua: jobrt.core.log and friends -------------------------------------- */

/* core.log(level, msg[, fields]): fields is an array of alternating keys and
 * values (strings, numbers, booleans), kept in order in the JSON object. */
static int l_log(lua_State *L) {
  int level = (int)luaL_checkinteger(L, 1);
  size_t n;
  const char *msg = luaL_checklstring(L, 2, &n);
  if (level < jr_H.log_level) return 0;
  if (lua_isnoneornil(L, 3) || !json_mode) {
    emit(level, msg, n, NULL, 0);
    return 0;
  }
  luaL_checktype(L, 3, LUA_TTABLE);
  jr_log_field f[16];
  char nums[16][32];
  int nf = 0;
  int len = (int)lua_objlen(L, 3);
  lua_settop(L, 3);
  luaL_checkstack(L, 2 * 16 + 2, "log fields");
  for (int i = 1; i + 1 <= len && nf < 16; i += 2) {
    lua_rawgeti(L, 3, i);
    lua_rawgeti(L, 3, i + 1);
    const char *k = lua_tostring(L, -2);
    if (k == NULL) return luaL_error(L, "log: fields[%d] must be a key (a string)", i);
    jr_log_field *fi = &f[nf];
    fi->key = k;
    fi->raw = 0;
    switch (lua_type(L, -1)) {
      case LUA_TNUMBER: {
        double d = lua_tonumber(L, -1);
        int w;
        if (d != d || d - d != 0) {
          w = snprintf(nums[nf], sizeof nums[nf], "null");     /* NaN, infinities */
        } else {
          w = snprintf(nums[nf], sizeof nums[nf], "%.15g", d);   /* 3.2, not 3.2000000000000002 */
          if (strtod(nums[nf], NULL) != d) w = snprintf(nums[nf], sizeof nums[nf], "%.17g", d);
        }
        fi->value = nums[nf];
        fi->len = (size_t)w;
        fi->raw = 1;
        break;
      }
      case LUA_TBOOLEAN:
        fi->value = lua_toboolean(L, -1) ? "true" : "false";
        fi->len = strlen(fi->value);
        fi->raw = 1;
        break;
      case LUA_TNIL:
        fi->value = "null";
        fi->len = 4;
        fi->raw = 1;
        break;
      case LUA_TSTRING:
        fi->value = lua_tolstring(L, -1, &fi->len);
        break;
      default:
        fi->value = luaL_typename(L, -1);
        fi->len = strlen(fi->value);
    }
    nf++;
    /* keep key and value on the stack (they anchor the strings) */
  }
  emit(level, msg, n, f, nf);
  return 0;
}

/* core.log_job(queue, job, id, attempt, ms, worker, ok[, reason]): the worker's line per job,
 * at info. Text: "Q.job id=7 attempt=1 ok 2.5ms" or "... failed 2.5ms: reason". JSON adds
 * the fields queue, job, id, attempt, ms, worker, result ("ok" | "failed") and error. Built
 * here rather than in Lua: it runs once per job. */
static int l_log_job(lua_State *L) {
  if (jr_H.log_level > 1) return 0;
  size_t lq, lj, li, lw, lr = 0;
  const char *queue = luaL_checklstring(L, 1, &lq);
  const char *job = luaL_checklstring(L, 2, &lj);
  const char *id = luaL_checklstring(L, 3, &li);
  lua_Integer attempt = luaL_optinteger(L, 4, 0);
  double ms = luaL_checknumber(L, 5);
  const char *worker = luaL_checklstring(L, 6, &lw);
  int ok = lua_toboolean(L, 7);
  const char *reason = ok ? NULL : luaL_optlstring(L, 8, "failed", &lr);
  char msg[1024];
  int n = snprintf(msg, sizeof msg, "%.*s.%.*s id=%.*s attempt=%ld %s %.1fms%s%.*s", (int)lq, queue,
                   (int)lj, job, (int)li, id, (long)attempt, ok ? "ok" : "failed", ms,
                   ok ? "" : ": ", (int)(ok ? 0 : (lr > 600 ? 600 : lr)), ok ? "" : reason);
  if (n < 0) return 0;
  if ((size_t)n >= sizeof msg) n = sizeof msg - 1;
  if (!json_mode) {
    emit(1, msg, (size_t)n, NULL, 0);
    return 0;
  }
  char att[32], msbuf[32];
  int la = snprintf(att, sizeof att, "%ld", (long)attempt);
  int lm = snprintf(msbuf, sizeof msbuf, "%.3f", ms);
  while (lm > 1 && msbuf[lm - 1] == '0') lm--;              /* 2.500 -> 2.5, 3.000 -> 3 */
  if (lm > 1 && msbuf[lm - 1] == '.') lm--;
  jr_log_field f[8] = {
      {"queue", queue, lq, 0},  {"job", job, lj, 0},        {"id", id, li, 0},
      {"attempt", att, (size_t)la, 1}, {"ms", msbuf, (size_t)lm, 1}, {"worker", worker, lw, 0},
      {"result", ok ? "ok" : "failed", ok ? 2 : 6, 0}, {"error", reason, lr, 0}};
  emit(1, msg, (size_t)n, f, ok ? 7 : 8);
  return 0;
}

/* core.set_log_level(n) / core.log_level() */
static int l_set_log_level(lua_State *L) {
  jr_H.log_level = (int)luaL_checkinteger(L, 1);
  return 0;
}

static int l_log_level(lua_State *L) {
  lua_pushinteger(L, jr_H.log_level);
  return 1;
}

/* core.set_log_format("text" | "json") -> true | nil, message */
static int l_set_log_format(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  if (jr_log_set_format(name) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "unknown log format '%s': use text or json", name);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.log_format() -> "text" | "json" */
static int l_log_format(lua_State *L) {
  lua_pushstring(L, jr_log_format());
  return 1;
}

/* Adds the log functions to the table on top of L (module jobrt.core). */
void jr_log_register(lua_State *L) {
  static const luaL_Reg fns[] = {{"log", l_log},
                                 {"log_job", l_log_job},
                                 {"set_log_level", l_set_log_level},
                                 {"log_level", l_log_level},
                                 {"set_log_format", l_set_log_format},
                                 {"log_format", l_log_format},
                                 {NULL, NULL}};
  luaL_register(L, NULL, fns);
}
