/* json.c - JSON text <-> Lua values for jobrt (module jobrt.core.json).
 *
 * Both directions go straight between the text and Lua values, with no tree
 * in between: the decoder is a recursive-descent parser of RFC 8259 that
 * checks UTF-8 as it goes, the encoder writes into one growing buffer. (The
 * candidates measured in bench/json.lua: lua-cjson 2.1.0 cannot keep the
 * rules below; jansson decodes 4-5 times slower than lua-cjson here, because
 * of its tree, and prints 0.1 as 0.10000000000000001; pure Lua codecs are
 * 3-7 times slower. This file keeps lua-cjson's speed.)
 *
 * The rules (stdlib/jobrt/json.lua documents them for users):
 *  - numbers: integral values below 2^63 print as integers, exactly; others
 *    in the shortest form (15, 16 or 17 significant digits) that reads back
 *    as the same double; NaN and infinities are refused. Decoding reads
 *    every number as a double (integers beyond 2^53 round, as in JavaScript).
 *  - strings must be valid UTF-8 (RFC 3629: no overlong forms, no
 *    surrogates, nothing above U+10FFFF); only '"', '\' and control
 *    characters are escaped ('/' and non-ASCII stay as they are).
 *  - tables: keys 1..n without holes are an array, string keys an object;
 *    an empty table is an object unless it carries the array metatable
 *    (decoded arrays carry it, so [] reads back and writes out as []).
 *    Mixed keys, holes, other key types, cycles, functions, threads and
 *    userdata other than null are refused with the path to the value.
 *  - null is the light userdata NULL (the same value as cjson.null and
 *    redis.null).
 *  - nesting deeper than JR_JSON_MAX_DEPTH is refused both ways, and so is
 *    text longer than the caller's byte limit (checked before any work when
 *    decoding, and as the output grows when encoding, so an oversized value
 *    is never built whole).
 *
 * Nothing here raises a Lua error for bad input: functions return nil,
 * message, code, with code one of EJSON (not JSON), EUTF8, ETOOBIG, EDEPTH,
 * EVALUE (a Lua value JSON cannot hold) or ENOMEM.
 *
 * Lifetimes: the encoder reads strings (keys and values) through pointers
 * obtained from lua_tolstring on values that stay referenced by the table
 * being encoded, which sits on the Lua stack, and it runs no Lua code and
 * allocates no Lua objects meanwhile, so the collector cannot free them.
 * Its output buffer is malloc'd and freed on every path. The decoder holds
 * no memory of its own (strings with escapes are built in a luaL_Buffer),
 * so a memory error raised while it builds Lua values leaks nothing.
 */
#define _GNU_SOURCE              /* strtod_l, newlocale */
#include "private.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <locale.h>

#define JR_JSON_MAX_DEPTH 1000

static const char ARRAY_MT[] = "jobrt.json.array";   /* registry key of the array metatable */
static const void *array_mt;                         /* that metatable, compared by address */

/* ---- UTF-8 ---------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence starting at s[i] (n bytes available),
 * or 0 when the bytes there are not one (RFC 3629, table 3-7 of Unicode). */
static size_t utf8_seq(const unsigned char *s, size_t i, size_t n) {
  unsigned c = s[i];
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0;                         /* continuation byte or overlong */
  if (c < 0xE0) {
    return (i + 1 < n && (s[i + 1] & 0xC0) == 0x80) ? 2 : 0;
  }
  if (c < 0xF0) {
    if (i + 2 >= n) return 0;
    unsigned c1 = s[i + 1];
    if (c == 0xE0 && (c1 < 0xA0 || c1 > 0xBF)) return 0;   /* overlong */
    if (c == 0xED && (c1 < 0x80 || c1 > 0x9F)) return 0;   /* surrogates */
    if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return 0;
    return 3;
  }
  if (c > 0xF4 || i + 3 >= n) return 0;
  unsigned c1 = s[i + 1];
  if (c == 0xF0 && (c1 < 0x90 || c1 > 0xBF)) return 0;     /* overlong */
  if (c == 0xF4 && (c1 < 0x80 || c1 > 0x8F)) return 0;     /* above U+10FFFF */
  if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80) return 0;
  return 4;
}

/* Offset of the first byte of s that does not start a valid UTF-8
 * sequence, or n when all n bytes are valid UTF-8. */
static size_t utf8_bad(const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < n) {
    /* ASCII runs, eight bytes at a time */
    while (i + 8 <= n) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= n) break;
    if (s[i] < 0x80) { i++; continue; }
    size_t k = utf8_seq(s, i, n);
    if (k == 0) return i;
    i += k;
  }
  return n;
}

/* ---- encoder -------------------------------------------------------------- */

static locale_t c_locale;        /* for strtod_l: '.' whatever LC_NUMERIC says */

typedef struct {
  const char *key;      /* object key, or NULL for an array index */
  size_t klen;
  size_t idx;           /* 1-based array index */
} enc_step;

typedef struct {
  char *buf;
  size_t len, cap;
  size_t max;                    /* refuse output longer than this */
  int sort;                      /* object keys in byte order */
  const char *indent;            /* pretty-printing unit, or NULL */
  size_t indent_len;
  int depth;
  const void *open[JR_JSON_MAX_DEPTH + 1];   /* tables on the current path (cycles) */
  enc_step path[JR_JSON_MAX_DEPTH + 1];
  const char *root;              /* what the value is called in messages ("args") */
  const char *code;              /* set on error */
  char msg[600];
} enc_t;

/* Writes the path of the value at nesting level `depth` ("args[3].name")
 * into out. */
static void enc_path(enc_t *e, int depth, char *out, size_t outsz) {
  int r = snprintf(out, outsz, "%s", e->root);
  size_t o = r < 0 ? 0 : (size_t)r >= outsz ? outsz - 1 : (size_t)r;
  for (int i = 1; i <= depth && o + 1 < outsz; i++) {
    enc_step *p = &e->path[i];
    int n;
    if (p->key) {
      size_t shown = p->klen > 40 ? 40 : p->klen;
      int plain = shown > 0;
      for (size_t k = 0; k < shown && plain; k++) {
        unsigned char c = (unsigned char)p->key[k];
        if (!(c == '_' || (c >= '0' && c <= '9' && k > 0) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
          plain = 0;
      }
      if (plain && shown == p->klen) {
        n = snprintf(out + o, outsz - o, ".%.*s", (int)shown, p->key);
      } else {                       /* ["key"], bytes outside printable ASCII as \xHH */
        char q[200];
        size_t qn = 0;
        for (size_t k = 0; k < shown; k++) {
          unsigned char c = (unsigned char)p->key[k];
          if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') q[qn++] = (char)c;
          else qn += (size_t)snprintf(q + qn, sizeof q - qn, "\\x%02x", c);
        }
        q[qn] = '\0';
        n = snprintf(out + o, outsz - o, "[\"%s%s\"]", q, shown < p->klen ? "..." : "");
      }
    } else {
      n = snprintf(out + o, outsz - o, "[%zu]", p->idx);
    }
    if (n < 0 || (size_t)n >= outsz - o) break;     /* truncated: the path is only a hint */
    o += (size_t)n;
  }
}

/* Records an error about the value at nesting level `depth` (e->depth for
 * the value being encoded, one less for the table being entered); returns
 * -1. */
static int enc_fail_at(enc_t *e, int depth, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int enc_fail_at(enc_t *e, int depth, const char *code, const char *fmt, ...) {
  char path[256], what[300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  enc_path(e, depth, path, sizeof path);
  e->code = code;
  snprintf(e->msg, sizeof e->msg, "%s: %s", path, what);
  return -1;
}
#define enc_fail(e, ...) enc_fail_at(e, (e)->depth, __VA_ARGS__)
/* about table being entered (e->depth already counts it) */
#define table_fail(e, ...) enc_fail_at(e, (e)->depth - 1, __VA_ARGS__)

static int enc_toobig(enc_t *e) {
  e->code = "ETOOBIG";
  snprintf(e->msg, sizeof e->msg, "%s is larger than the limit of %zu bytes as JSON text", e->root, e->max);
  return -1;
}

/* Makes room for n more bytes; -1 (ETOOBIG or ENOMEM) when it cannot. */
static int enc_reserve(enc_t *e, size_t n) {
  if (n > e->max || e->len > e->max - n) return enc_toobig(e);
  if (e->len + n <= e->cap) return 0;
  size_t cap = e->cap ? e->cap : 256;
  while (cap < e->len + n) cap = cap > SIZE_MAX / 2 ? e->len + n : cap * 2;
  char *nb = realloc(e->buf, cap);
  if (nb == NULL) {
    e->code = "ENOMEM";
    snprintf(e->msg, sizeof e->msg, "out of memory while encoding %zu bytes of JSON", e->len + n);
    return -1;
  }
  e->buf = nb;
  e->cap = cap;
  return 0;
}

static int enc_put(enc_t *e, const char *s, size_t n) {
  if (enc_reserve(e, n)) return -1;
  memcpy(e->buf + e->len, s, n);
  e->len += n;
  return 0;
}

static int enc_char(enc_t *e, char c) {
  if (e->len < e->cap && e->len < e->max) {
    e->buf[e->len++] = c;
    return 0;
  }
  return enc_put(e, &c, 1);
}

/* Newline and indentation for nesting level `level` (pretty mode only). */
static int enc_newline(enc_t *e, int level) {
  if (!e->indent) return 0;
  if (enc_char(e, '\n')) return -1;
  for (int i = 0; i < level; i++)
    if (enc_put(e, e->indent, e->indent_len)) return -1;
  return 0;
}

/* A string: UTF-8 checked, '"', '\' and control characters escaped. */
static int enc_string(enc_t *e, const char *str, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *s = (const unsigned char *)str;
  if (enc_reserve(e, n + 2)) return -1;     /* the usual case: nothing to escape */
  e->buf[e->len++] = '"';
  size_t i = 0;
  while (i < n) {
    size_t run = i;
    while (run < n && s[run] >= 0x20 && s[run] < 0x80 && s[run] != '"' && s[run] != '\\') run++;
    if (run > i) {
      if (enc_put(e, str + i, run - i)) return -1;
      i = run;
      continue;
    }
    unsigned c = s[i];
    if (c >= 0x80) {
      size_t k = utf8_seq(s, i, n);
      if (k == 0)
        return enc_fail(e, "EUTF8", "string is not valid UTF-8 (byte offset %zu in the string is 0x%02x; "
                        "JSON text must be UTF-8: send binary data as base64)", i, c);
      if (enc_put(e, str + i, k)) return -1;
      i += k;
      continue;
    }
    char esc[6] = {'\\', 0, 0, 0, 0, 0};
    size_t el = 2;
    switch (c) {
      case '"': esc[1] = '"'; break;
      case '\\': esc[1] = '\\'; break;
      case '\b': esc[1] = 'b'; break;
      case '\f': esc[1] = 'f'; break;
      case '\n': esc[1] = 'n'; break;
      case '\r': esc[1] = 'r'; break;
      case '\t': esc[1] = 't'; break;
      default:
        esc[1] = 'u'; esc[2] = '0'; esc[3] = '0'; esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
        el = 6;
    }
    if (enc_put(e, esc, el)) return -1;
    i++;
  }
  return enc_char(e, '"');
}

/* Writes an unsigned decimal; returns its length. */
static size_t put_u64(char *p, uint64_t v) {
  char tmp[24];
  size_t k = 0;
  do { tmp[k++] = (char)('0' + v % 10); v /= 10; } while (v);
  for (size_t i = 0; i < k; i++) p[i] = tmp[k - 1 - i];
  return k;
}

static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};   /* all exact */

/* Writes v with k fraction digits when |v| == m / 10^k exactly for the
 * smallest such k with m < 2^53 (the decimal then reads back as v, since
 * both m and 10^k are exact and the division is correctly rounded); returns
 * 0 when there is none. For 1e-6 <= |v| < 1e15 this finds every v whose
 * shortest form has at most 15 significant digits (m < 10^15 then, k <= 21,
 * and a * 10^k lands within 0.25 of m), without snprintf. */
static size_t fixed_decimal(char *out, double v) {
  double a = fabs(v);
  if (!(a >= 1e-6 && a < 1e15)) return 0;
  for (int k = 1; k <= 22; k++) {
    double scaled = a * pow10[k];
    if (scaled >= 9007199254740992.0) return 0;
    double m = floor(scaled + 0.5);
    if (m / pow10[k] != a) continue;
    char digits[24];
    size_t nd = put_u64(digits, (uint64_t)m), n = 0;
    if (v < 0) out[n++] = '-';
    if (nd <= (size_t)k) {                      /* 0.000ddd */
      out[n++] = '0';
      out[n++] = '.';
      for (size_t z = nd; z < (size_t)k; z++) out[n++] = '0';
      memcpy(out + n, digits, nd);
      n += nd;
    } else {
      memcpy(out + n, digits, nd - (size_t)k);
      n += nd - (size_t)k;
      out[n++] = '.';
      memcpy(out + n, digits + nd - k, (size_t)k);
      n += (size_t)k;
    }
    while (out[n - 1] == '0') n--;              /* m's trailing zeros (cannot happen for the smallest k) */
    return n;
  }
  return 0;
}

static int enc_number(enc_t *e, double v) {
  char buf[48];
  size_t n;
  if (!isfinite(v))
    return enc_fail(e, "EVALUE", "%s cannot be written as JSON: use a finite number, a string or jobrt.null",
                    isnan(v) ? "NaN" : (v > 0 ? "inf" : "-inf"));
  if (v == floor(v) && fabs(v) < 9223372036854775808.0) {   /* below 2^63: exact integer */
    int neg = v < 0;
    n = 0;
    if (neg) buf[n++] = '-';
    n += put_u64(buf + n, (uint64_t)(neg ? -v : v));
  } else if ((n = fixed_decimal(buf, v)) == 0) {
    /* the shortest of 15, 16 or 17 significant digits that reads back as v
     * (15 cannot do where fixed_decimal found nothing) */
    int len = 0;
    double a = fabs(v);
    for (int prec = (a >= 1e-6 && a < 1e15) ? 16 : 15; prec <= 17; prec++) {
      len = snprintf(buf, sizeof buf, "%.*g", prec, v);
      for (int i = 0; i < len; i++) if (buf[i] == ',') buf[i] = '.';   /* a decimal-comma locale */
      if (prec == 17 || strtod_l(buf, NULL, c_locale) == v) break;
    }
    n = (size_t)len;
  }
  return enc_put(e, buf, n);
}

static int enc_value(enc_t *e, lua_State *L, int idx);

/* Why table t (at idx) is neither an array nor an object; always -1. */
static int enc_bad_table(enc_t *e, lua_State *L, int idx, int marked) {
  size_t nint = 0, nstr = 0, maxint = 0;
  char other[80] = "";
  const char *skey = NULL;
  size_t sklen = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    int kt = lua_type(L, -1);
    if (kt == LUA_TSTRING) {
      if (!skey) skey = lua_tolstring(L, -1, &sklen);   /* stays alive as a key of t */
      nstr++;
    } else if (kt == LUA_TNUMBER) {
      double k = lua_tonumber(L, -1);
      if (k >= 1 && k == floor(k) && k < 4503599627370496.0) {
        nint++;
        if ((size_t)k > maxint) maxint = (size_t)k;
      } else if (!other[0]) {
        snprintf(other, sizeof other, "the number %.17g", k);
      }
    } else if (!other[0]) {
      snprintf(other, sizeof other, "a %s", lua_typename(L, kt));
    }
  }
  if (other[0])
    return table_fail(e, "EVALUE", "table has a key that is %s: JSON objects have string keys, "
                    "arrays the keys 1..n", other);
  if (nint > 0 && (nstr > 0 || marked))
    return table_fail(e, "EVALUE", "table mixes array items ([1]...) with named keys (\"%.*s\"): "
                    "a JSON value is either an array or an object; nest one in the other",
                    (int)(sklen > 40 ? 40 : sklen), skey ? skey : "?");
  if (marked && nstr > 0)
    return table_fail(e, "EVALUE", "table is marked as an array (jobrt.json.array) but has named keys (\"%.*s\")",
                    (int)(sklen > 40 ? 40 : sklen), skey ? skey : "?");
  size_t hole = 1;
  for (; hole <= maxint; hole++) {
    lua_rawgeti(L, idx, (int)hole);
    int nil = lua_isnil(L, -1);
    lua_pop(L, 1);
    if (nil) break;
  }
  return table_fail(e, "EVALUE", "sparse array: [%zu] is set but [%zu] is nil; JSON arrays have no holes: "
                  "fill them with jobrt.null, or use string keys", maxint, hole);
}

typedef struct {
  const char *s;
  size_t n;
} key_ref;

static int key_cmp(const void *a, const void *b) {
  const key_ref *x = a, *y = b;
  size_t n = x->n < y->n ? x->n : y->n;
  int c = memcmp(x->s, y->s, n);
  if (c) return c;
  return x->n < y->n ? -1 : x->n > y->n;
}

/* One "key": value pair of an object; the value is on top of the stack. */
static int enc_member(enc_t *e, lua_State *L, const char *k, size_t kn, int first) {
  if (!first && enc_char(e, ',')) return -1;
  if (enc_newline(e, e->depth)) return -1;
  e->path[e->depth].key = k;
  e->path[e->depth].klen = kn;
  if (enc_string(e, k, kn)) return -1;
  if (enc_char(e, ':')) return -1;
  if (e->indent && enc_char(e, ' ')) return -1;
  return enc_value(e, L, lua_gettop(L));
}

/* An object whose keys are all strings; a non-string key ends in
 * enc_bad_table's message. */
static int enc_object(enc_t *e, lua_State *L, int idx) {
  if (enc_char(e, '{')) return -1;
  int first = 1;
  if (!e->sort) {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      if (lua_type(L, -2) != LUA_TSTRING) {
        lua_pop(L, 2);
        return enc_bad_table(e, L, idx, 0);
      }
      size_t kn;
      const char *k = lua_tolstring(L, -2, &kn);
      if (enc_member(e, L, k, kn, first)) {
        lua_pop(L, 2);
        return -1;
      }
      lua_pop(L, 1);
      first = 0;
    }
  } else {
    size_t n = 0, cap = 16;
    key_ref stackkeys[16];
    key_ref *keys = stackkeys;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      lua_pop(L, 1);
      if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        if (keys != stackkeys) free(keys);
        return enc_bad_table(e, L, idx, 0);
      }
      if (n == cap) {
        key_ref *nk = malloc(sizeof *nk * cap * 2);
        if (nk == NULL) {
          lua_pop(L, 1);
          if (keys != stackkeys) free(keys);
          e->code = "ENOMEM";
          snprintf(e->msg, sizeof e->msg, "out of memory while sorting object keys");
          return -1;
        }
        memcpy(nk, keys, sizeof *nk * n);
        if (keys != stackkeys) free(keys);
        keys = nk;
        cap *= 2;
      }
      keys[n].s = lua_tolstring(L, -1, &keys[n].n);   /* alive: a key of the table */
      n++;
    }
    qsort(keys, n, sizeof *keys, key_cmp);
    for (size_t i = 0; i < n; i++) {
      lua_pushlstring(L, keys[i].s, keys[i].n);       /* interned already: no new string */
      lua_rawget(L, idx);
      int rc = enc_member(e, L, keys[i].s, keys[i].n, i == 0);
      lua_pop(L, 1);
      if (rc) {
        if (keys != stackkeys) free(keys);
        return -1;
      }
    }
    first = n == 0;
    if (keys != stackkeys) free(keys);
  }
  if (!first && enc_newline(e, e->depth - 1)) return -1;
  return enc_char(e, '}');
}

/* The array 1..n of table idx. */
static int enc_array(enc_t *e, lua_State *L, int idx, size_t n) {
  if (enc_char(e, '[')) return -1;
  e->path[e->depth].key = NULL;
  for (size_t i = 1; i <= n; i++) {
    if (i > 1 && enc_char(e, ',')) return -1;
    if (enc_newline(e, e->depth)) return -1;
    e->path[e->depth].idx = i;
    lua_rawgeti(L, idx, (int)i);
    int rc = enc_value(e, L, lua_gettop(L));
    lua_pop(L, 1);
    if (rc) return -1;
  }
  if (n > 0 && enc_newline(e, e->depth - 1)) return -1;
  return enc_char(e, ']');
}

static int enc_table(enc_t *e, lua_State *L, int idx) {
  const void *self = lua_topointer(L, idx);
  for (int i = 1; i <= e->depth; i++)
    if (e->open[i] == self) return enc_fail(e, "EVALUE", "table contains itself (a cycle): JSON cannot hold cycles");
  if (e->depth >= JR_JSON_MAX_DEPTH)
    return enc_fail(e, "EDEPTH", "nested deeper than %d levels", JR_JSON_MAX_DEPTH);
  if (!lua_checkstack(L, 6)) {
    e->code = "ENOMEM";
    snprintf(e->msg, sizeof e->msg, "out of Lua stack space");
    return -1;
  }
  int marked = 0;
  if (lua_getmetatable(L, idx)) {
    marked = lua_topointer(L, -1) == array_mt;
    lua_pop(L, 1);
  }
  e->depth++;
  e->open[e->depth] = self;
  int rc;
  size_t n = lua_objlen(L, idx);
  if (n == 0) {
    if (marked) {
      lua_pushnil(L);
      int any = lua_next(L, idx);
      if (any) lua_pop(L, 2);
      rc = any ? enc_bad_table(e, L, idx, 1) : enc_put(e, "[]", 2);
    } else {
      rc = enc_object(e, L, idx);
    }
  } else {
    /* an array when its keys are exactly 1..n */
    size_t count = 0;
    int ok = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      lua_pop(L, 1);
      count++;
      if (lua_type(L, -1) != LUA_TNUMBER) { ok = 0; lua_pop(L, 1); break; }
      double k = lua_tonumber(L, -1);
      if (!(k >= 1 && k <= (double)n && k == floor(k))) { ok = 0; lua_pop(L, 1); break; }
    }
    rc = (ok && count == n) ? enc_array(e, L, idx, n) : enc_bad_table(e, L, idx, marked);
  }
  e->depth--;
  return rc;
}

/* Encodes the value at stack index idx. */
static int enc_value(enc_t *e, lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      return enc_put(e, "null", 4);
    case LUA_TBOOLEAN:
      return lua_toboolean(L, idx) ? enc_put(e, "true", 4) : enc_put(e, "false", 5);
    case LUA_TNUMBER:
      return enc_number(e, lua_tonumber(L, idx));
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      return enc_string(e, s, n);
    }
    case LUA_TTABLE:
      return enc_table(e, L, idx);
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return enc_put(e, "null", 4);
      /* fall through */
    default:
      return enc_fail(e, "EVALUE", "a %s cannot be written as JSON: use tables, strings, numbers, "
                      "booleans and jobrt.null", luaL_typename(L, idx));
  }
}

/* Pushes nil, message, code; returns 3. */
static int push_fail(lua_State *L, const char *msg, const char *code) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, code);
  return 3;
}

/* Reads the byte limit argument: a number >= 0, default 2^53. */
static size_t opt_limit(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return (size_t)1 << 53;
  lua_Number v = luaL_checknumber(L, idx);
  luaL_argcheck(L, v >= 0, idx, "byte limit must be >= 0");
  return v >= 9007199254740992.0 ? (size_t)1 << 53 : (size_t)v;
}

/* The encoder's state: a static one normally (it is 30 KiB: no malloc per
 * call). Encoding runs no Lua code, but growing the Lua stack allocates, and
 * an allocation may run a finalizer (__gc) that encodes JSON itself: such a
 * nested call gets a malloc'd state of its own. */
static enc_t the_enc;
static int the_enc_busy;
/* encode(value[, max_bytes[, sort[, indent[, root]]]]) -> text | nil, message, code
 * max_bytes: longest text allowed (default: no limit); sort: object keys in
 * byte order (stable text for equal values); indent: a string makes the
 * text pretty (one member per line, indented by it; keys sorted); root: the
 * value's name in messages (default "value"), e.g. "args" gives
 * "args.user.tags[2]: a function cannot be written as JSON: ...". */
static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  size_t max = opt_limit(L, 2);
  int sort = lua_toboolean(L, 3);
  size_t il = 0;
  const char *indent = lua_type(L, 4) == LUA_TSTRING ? lua_tolstring(L, 4, &il) : NULL;  /* stays at 4 */
  const char *root = lua_type(L, 5) == LUA_TSTRING ? lua_tostring(L, 5) : "value";        /* stays at 5 */
  lua_settop(L, 5);
  enc_t *e = &the_enc;
  if (the_enc_busy) {
    e = malloc(sizeof *e);
    if (e == NULL) return push_fail(L, "out of memory", "ENOMEM");
  } else {
    the_enc_busy = 1;
  }
  e->buf = NULL;
  e->len = e->cap = 0;
  e->max = max;
  e->sort = sort || indent != NULL;
  e->indent = indent;
  e->indent_len = il;
  e->depth = 0;
  e->root = root;
  e->code = NULL;
  int rc = enc_value(e, L, 1);
  char *buf = e->buf;
  size_t len = e->len;
  e->buf = NULL;
  if (rc) {
    free(buf);
    lua_settop(L, 5);
    lua_pushnil(L);
    lua_pushstring(L, e->msg);
    lua_pushstring(L, e->code);
  } else {
    lua_pushlstring(L, buf ? buf : "", len);
    free(buf);
  }
  if (e == &the_enc) the_enc_busy = 0; else free(e);
  return rc ? 3 : 1;
}

/* ---- decoder -------------------------------------------------------------- */

typedef struct {
  const char *start, *p, *end;   /* the text (NUL-terminated: it is a Lua string) */
  int mt;                        /* stack index of the array metatable */
  int depth;
  const char *code;
  char msg[300];
} dec_t;


/* Records a syntax error at the current position; returns -1. An invalid
 * UTF-8 sequence at or before that point is reported instead. */
static int dec_fail(dec_t *d, const char *what) {
  size_t at = (size_t)(d->p - d->start);
  size_t upto = at + 4 < (size_t)(d->end - d->start) ? at + 4 : (size_t)(d->end - d->start);
  size_t bad = utf8_bad(d->start, upto);
  if (bad < upto && bad <= at) {
    d->code = "EUTF8";
    snprintf(d->msg, sizeof d->msg, "not valid UTF-8 (byte offset %zu is 0x%02x; JSON must be UTF-8, RFC 8259: "
             "send binary data as base64)", bad, (unsigned char)d->start[bad]);
    return -1;
  }
  d->code = "EJSON";
  if (d->p >= d->end) {
    snprintf(d->msg, sizeof d->msg, "not valid JSON (byte offset %zu: %s at the end of the text)", at, what);
  } else {
    unsigned char c = (unsigned char)*d->p;
    if (c >= 0x20 && c < 0x7f)
      snprintf(d->msg, sizeof d->msg, "not valid JSON (byte offset %zu: %s, found '%c')", at, what, c);
    else
      snprintf(d->msg, sizeof d->msg, "not valid JSON (byte offset %zu: %s, found byte 0x%02x)", at, what, c);
  }
  return -1;
}

static void dec_space(dec_t *d) {
  while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t')) d->p++;
}

static int hex4(const char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

/* A string starting at d->p (on the opening quote): pushes it. */
static int dec_string(dec_t *d, lua_State *L) {
  const unsigned char *s = (const unsigned char *)++d->p;
  const unsigned char *end = (const unsigned char *)d->end;
  const unsigned char *q = s;
  /* the usual case: no escapes; validate UTF-8 and find the closing quote */
  for (;;) {
    while (q < end && *q >= 0x20 && *q < 0x80 && *q != '"' && *q != '\\') q++;
    if (q >= end) { d->p = (const char *)q; return dec_fail(d, "unterminated string"); }
    if (*q == '"') {
      lua_pushlstring(L, (const char *)s, (size_t)(q - s));
      d->p = (const char *)q + 1;
      return 0;
    }
    if (*q == '\\') break;
    if (*q < 0x20) { d->p = (const char *)q; return dec_fail(d, "control character in a string (escape it)"); }
    size_t k = utf8_seq(q, 0, (size_t)(end - q));
    if (k == 0) { d->p = (const char *)q; return dec_fail(d, "invalid UTF-8"); }
    q += k;
  }
  /* escapes: build it in a buffer */
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, (const char *)s, (size_t)(q - s));
  for (;;) {
    const unsigned char *run = q;
    while (q < end && *q >= 0x20 && *q < 0x80 && *q != '"' && *q != '\\') q++;
    if (q > run) luaL_addlstring(&b, (const char *)run, (size_t)(q - run));
    if (q >= end) { d->p = (const char *)q; luaL_pushresult(&b); lua_pop(L, 1); return dec_fail(d, "unterminated string"); }
    unsigned c = *q;
    if (c == '"') {
      luaL_pushresult(&b);
      d->p = (const char *)q + 1;
      return 0;
    }
    const char *why = NULL;
    if (c < 0x20) {
      why = "control character in a string (escape it)";
    } else if (c >= 0x80) {
      size_t k = utf8_seq(q, 0, (size_t)(end - q));
      if (k == 0) why = "invalid UTF-8";
      else { luaL_addlstring(&b, (const char *)q, k); q += k; continue; }
    } else {                                          /* backslash */
      char e = q + 1 < end ? (char)q[1] : 0;
      char out = 0;
      switch (e) {
        case '"': out = '"'; break;
        case '\\': out = '\\'; break;
        case '/': out = '/'; break;
        case 'b': out = '\b'; break;
        case 'f': out = '\f'; break;
        case 'n': out = '\n'; break;
        case 'r': out = '\r'; break;
        case 't': out = '\t'; break;
        case 'u': {
          unsigned cp, lo;
          if (end - q < 6 || hex4((const char *)q + 2, &cp)) { why = "\\u wants four hex digits"; break; }
          size_t used = 6;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end - q < 12 || q[6] != '\\' || q[7] != 'u' || hex4((const char *)q + 8, &lo) ||
                lo < 0xDC00 || lo > 0xDFFF) {
              why = "\\u escape of a lone surrogate (a high one must be followed by a low one)";
              break;
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            used = 12;
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            why = "\\u escape of a lone surrogate (a low one without a high one)";
            break;
          }
          char u[4];
          size_t n;
          if (cp < 0x80) { u[0] = (char)cp; n = 1; }
          else if (cp < 0x800) { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 63)); n = 2; }
          else if (cp < 0x10000) {
            u[0] = (char)(0xE0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 63)); u[2] = (char)(0x80 | (cp & 63)); n = 3;
          } else {
            u[0] = (char)(0xF0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 63));
            u[2] = (char)(0x80 | ((cp >> 6) & 63)); u[3] = (char)(0x80 | (cp & 63)); n = 4;
          }
          luaL_addlstring(&b, u, n);
          q += used;
          continue;
        }
        default:
          why = "unknown escape (use \\\" \\\\ \\/ \\b \\f \\n \\r \\t or \\uXXXX)";
      }
      if (!why) {
        luaL_addchar(&b, out);
        q += 2;
        continue;
      }
    }
    d->p = (const char *)q;
    luaL_pushresult(&b);
    lua_pop(L, 1);
    return dec_fail(d, why);
  }
}

/* A number (RFC 8259 grammar, checked here; strtod does the arithmetic). */
static int dec_number(dec_t *d, lua_State *L) {
  const char *p = d->p, *end = d->end;
  int neg = 0, simple = 1;
  if (*p == '-') { neg = 1; p++; }
  const char *digits = p;
  if (p < end && *p == '0') p++;
  else if (p < end && *p >= '1' && *p <= '9') while (p < end && *p >= '0' && *p <= '9') p++;
  else { d->p = p; return dec_fail(d, "expected a value"); }
  size_t nint = (size_t)(p - digits);
  if (p < end && *p == '.') {
    simple = 0;
    p++;
    if (!(p < end && *p >= '0' && *p <= '9')) { d->p = p; return dec_fail(d, "expected a digit after '.'"); }
    while (p < end && *p >= '0' && *p <= '9') p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    simple = 0;
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (!(p < end && *p >= '0' && *p <= '9')) { d->p = p; return dec_fail(d, "expected a digit in the exponent"); }
    while (p < end && *p >= '0' && *p <= '9') p++;
  }
  double v;
  if (simple && nint <= 15) {                 /* exact in a double: no strtod needed */
    int64_t m = 0;
    for (const char *c = digits; c < p; c++) m = m * 10 + (*c - '0');
    v = neg ? -(double)m : (double)m;
  } else {
    /* the text is a Lua string, so NUL-terminated: strtod stops at the token's end */
    v = strtod_l(d->p, NULL, c_locale);
    if (isinf(v)) return dec_fail(d, "number too large for a double");
  }
  lua_pushnumber(L, v);
  d->p = p;
  return 0;
}

static int dec_lit(dec_t *d, lua_State *L, const char *word, size_t n, int kind) {
  if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0) return dec_fail(d, "expected a value");
  d->p += n;
  if (kind < 0) lua_pushlightuserdata(L, NULL);
  else lua_pushboolean(L, kind);
  return 0;
}

/* A value at d->p (whitespace skipped): pushes it. */
static int dec_value(dec_t *d, lua_State *L) {
  dec_space(d);
  if (d->p >= d->end) return dec_fail(d, "expected a value");
  switch (*d->p) {
    case '"':
      return dec_string(d, L);
    case '{': {
      if (d->depth >= JR_JSON_MAX_DEPTH) {
        d->code = "EDEPTH";
        snprintf(d->msg, sizeof d->msg, "nested deeper than %d levels (byte offset %zu)",
                 JR_JSON_MAX_DEPTH, (size_t)(d->p - d->start));
        return -1;
      }
      luaL_checkstack(L, 4, "JSON nesting");
      d->depth++;
      d->p++;
      lua_createtable(L, 0, 4);
      dec_space(d);
      if (d->p < d->end && *d->p == '}') {
        d->p++;
        d->depth--;
        return 0;
      }
      for (;;) {
        dec_space(d);
        if (d->p >= d->end || *d->p != '"') return dec_fail(d, "expected a string key");
        if (dec_string(d, L)) return -1;
        dec_space(d);
        if (d->p >= d->end || *d->p != ':') return dec_fail(d, "expected ':' after the key");
        d->p++;
        if (dec_value(d, L)) return -1;
        lua_rawset(L, -3);                       /* a repeated key: the last one wins */
        dec_space(d);
        if (d->p < d->end && *d->p == ',') { d->p++; continue; }
        if (d->p < d->end && *d->p == '}') { d->p++; break; }
        return dec_fail(d, "expected ',' or '}'");
      }
      d->depth--;
      return 0;
    }
    case '[': {
      if (d->depth >= JR_JSON_MAX_DEPTH) {
        d->code = "EDEPTH";
        snprintf(d->msg, sizeof d->msg, "nested deeper than %d levels (byte offset %zu)",
                 JR_JSON_MAX_DEPTH, (size_t)(d->p - d->start));
        return -1;
      }
      luaL_checkstack(L, 4, "JSON nesting");
      d->depth++;
      d->p++;
      lua_createtable(L, 4, 0);
      lua_pushvalue(L, d->mt);
      lua_setmetatable(L, -2);
      dec_space(d);
      if (d->p < d->end && *d->p == ']') {
        d->p++;
        d->depth--;
        return 0;
      }
      for (int i = 1;; i++) {
        if (dec_value(d, L)) return -1;
        lua_rawseti(L, -2, i);
        dec_space(d);
        if (d->p < d->end && *d->p == ',') { d->p++; continue; }
        if (d->p < d->end && *d->p == ']') { d->p++; break; }
        return dec_fail(d, "expected ',' or ']'");
      }
      d->depth--;
      return 0;
    }
    case 't':
      return dec_lit(d, L, "true", 4, 1);
    case 'f':
      return dec_lit(d, L, "false", 5, 0);
    case 'n':
      return dec_lit(d, L, "null", 4, -1);
    default:
      return dec_number(d, L);
  }
}

/* decode(text[, max_bytes]) -> value | nil, message, code
 * The message says what the text is ("not valid JSON (byte offset 3: ...)",
 * "12 bytes, more than the limit of 10 bytes"), for the caller to put its
 * name in front ("args is ..."). Byte offsets count from 0. */
static int l_decode(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);   /* stays at index 1 */
  size_t max = opt_limit(L, 2);
  lua_settop(L, 2);
  if (len > max) {
    char msg[160];
    snprintf(msg, sizeof msg, "%zu bytes, more than the limit of %zu bytes", len, max);
    return push_fail(L, msg, "ETOOBIG");
  }
  lua_getfield(L, LUA_REGISTRYINDEX, ARRAY_MT);          /* index 3 */
  dec_t d;
  d.start = d.p = text;
  d.end = text + len;
  d.mt = 3;
  d.depth = 0;
  d.code = NULL;
  int rc = dec_value(&d, L);
  if (rc == 0) {
    dec_space(&d);
    if (d.p < d.end) rc = dec_fail(&d, "text after the JSON value");
  }
  if (rc) {
    lua_settop(L, 3);
    return push_fail(L, d.msg, d.code);
  }
  return 1;
}

/* check(text[, max_bytes]) -> true | nil, message, code: whether decode
 * would accept text. */
static int l_check(lua_State *L) {
  int n = l_decode(L);
  if (n == 3) return 3;
  lua_pushboolean(L, 1);
  return 1;
}

/* utf8(s) -> true | nil, byte offset (0-based) of the first invalid byte */
static int l_utf8(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  size_t bad = utf8_bad(s, len);
  if (bad == len) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushnumber(L, (lua_Number)bad);
  return 2;
}

/* sanitize(s) -> s itself when it is valid UTF-8, else a copy in which each
 * byte that starts no valid sequence is replaced by U+FFFD (for text that
 * is shown or stored as JSON but may come from anywhere, e.g. an error
 * message). */
static int l_sanitize(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  size_t bad = utf8_bad(s, len);
  if (bad == len) {
    lua_settop(L, 1);
    return 1;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, s, bad);
  const unsigned char *u = (const unsigned char *)s;
  size_t i = bad;
  while (i < len) {
    size_t k = utf8_seq(u, i, len);
    if (k == 0) {
      luaL_addlstring(&b, "\xEF\xBF\xBD", 3);
      i++;
    } else {
      luaL_addlstring(&b, s + i, k);
      i += k;
    }
  }
  luaL_pushresult(&b);
  return 1;
}

/* is_array(v) -> whether v is a table carrying the array metatable */
static int l_is_array(lua_State *L) {
  int marked = 0;
  if (lua_istable(L, 1) && lua_getmetatable(L, 1)) marked = lua_topointer(L, -1) == array_mt;
  lua_pushboolean(L, marked);
  return 1;
}

int jr_open_json(lua_State *L) {
  if (c_locale == (locale_t)0) c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
  if (c_locale == (locale_t)0) return luaL_error(L, "json: cannot make the C locale for numbers");
  static const luaL_Reg fns[] = {{"encode", l_encode}, {"decode", l_decode}, {"check", l_check},
                                 {"utf8", l_utf8},     {"is_array", l_is_array},
                                 {"sanitize", l_sanitize}, {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  luaL_newmetatable(L, ARRAY_MT);          /* marks arrays; no methods, so #t and ipairs work */
  array_mt = lua_topointer(L, -1);         /* the registry keeps it alive */
  lua_pushliteral(L, "array");
  lua_setfield(L, -2, "__jsontype");       /* the field dkjson reads, for code that uses it */
  lua_setfield(L, -2, "array_mt");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_pushinteger(L, JR_JSON_MAX_DEPTH);
  lua_setfield(L, -2, "MAX_DEPTH");
  return 1;
}
