/* term.c - line input that keeps the loop running: readline on a terminal,
 * plain line reads on a pipe or file.
 *
 * On a tty, term.readline(prompt) installs readline's callback interface and
 * watches stdin with a uv_poll_t; the coroutine is resumed with the line
 * when the user presses Enter (nil on Ctrl-D). Meanwhile other coroutines
 * run, and term.print(s) writes above the prompt without garbling it.
 * Off a tty, term.read_line() reads stdin through a uv_pipe_t (a regular
 * file, which cannot be polled, is read directly).
 * Tab completion: term.set_completer(fn) has readline ask fn(line, start,
 * finish) for the candidates of the word under the cursor (see complete()).
 */
#include "private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <signal.h>
#include <readline/readline.h>
#include <readline/history.h>

static uv_poll_t *tty_poll;     /* malloc'd; data = itself */
static int line_ref = LUA_NOREF; /* coroutine waiting for a line */
static int rl_active;

/* ---- tty: readline ---------------------------------------------------- */

static void stop_poll(void) {
  if (tty_poll && !uv_is_closing((uv_handle_t *)tty_poll)) uv_poll_stop(tty_poll);
}

static void on_line(char *line) {
  rl_callback_handler_remove();
  rl_active = 0;
  stop_poll();
  if (line_ref == LUA_NOREF) {
    free(line);
    return;
  }
  lua_State *co = jr_unref_thread(line_ref);
  line_ref = LUA_NOREF;
  if (line) lua_pushstring(co, line); else lua_pushnil(co);
  free(line);
  jr_resume(co, 1);
}

static void on_tty(uv_poll_t *h, int status, int events) {
  (void)h; (void)events;
  if (status < 0) {
    on_line(NULL);
    return;
  }
  rl_callback_read_char();
}

static void poll_closed(uv_handle_t *h) { free(h->data); }

/* term.readline(prompt) -> line | nil at end of input (yields) */
static int l_readline(lua_State *L) {
  jr_check_park(L, "term.readline");
  const char *prompt = luaL_optstring(L, 1, "> ");
  if (line_ref != LUA_NOREF) return luaL_error(L, "term.readline: another coroutine is already reading");
  if (tty_poll == NULL) {
    tty_poll = malloc(sizeof *tty_poll);
    if (tty_poll == NULL) return luaL_error(L, "term.readline: out of memory");
    if (uv_poll_init(jr_H.loop, tty_poll, 0) != 0) {
      free(tty_poll);
      tty_poll = NULL;
      return luaL_error(L, "term.readline: cannot watch stdin");
    }
    tty_poll->data = tty_poll;
    rl_catch_signals = 0;
    rl_catch_sigwinch = 0;
  }
  rl_callback_handler_install(prompt, on_line);
  rl_active = 1;
  uv_poll_start(tty_poll, UV_READABLE, on_tty);
  line_ref = jr_ref_thread(L);
  return jr_park(L);
}

/* term.cancel_line([prompt]): Ctrl-C at the prompt: drop the typed text, new
 * prompt (`prompt` replaces the current one, e.g. to leave a continuation). */
static int l_cancel_line(lua_State *L) {
  if (!rl_active) return 0;
  if (lua_isstring(L, 1)) rl_set_prompt(lua_tostring(L, 1));
  /* A line recalled from history is only a copy being edited: drop the
   * edits (undo list) and leave history browsing, so the entry stays as it
   * was and the next line is a new one, not an edit of that entry. */
  rl_free_line_state();
  rl_callback_sigcleanup();
  rl_maybe_unsave_line();         /* frees the line saved when browsing began */
  using_history();
  rl_replace_line("", 1);
  rl_point = rl_end = 0;
  rl_crlf();
  rl_on_new_line();
  rl_redisplay();
  return 0;
}

/* term.print(s): writes s (plus newline) above the active prompt. */
static int l_print(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  if (!rl_active) {
    fwrite(s, 1, len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    return 0;
  }
  int point = rl_point;
  char *saved = rl_copy_text(0, rl_end);
  rl_save_prompt();
  rl_replace_line("", 0);
  rl_redisplay();
  fputc('\r', stdout);
  fwrite(s, 1, len, stdout);
  fputc('\n', stdout);
  rl_restore_prompt();
  rl_replace_line(saved, 0);
  rl_point = point;
  rl_forced_update_display();
  free(saved);
  return 0;
}

/* ---- tab completion ------------------------------------------------- */

static int completer_ref = LUA_NOREF;   /* the Lua function asked for candidates */

/* Longest common prefix of the n strings in v. Returns a malloc'd copy
 * (NULL when out of memory). */
static char *common_prefix(char **v, int n) {
  size_t len = strlen(v[0]);
  for (int i = 1; i < n; i++) {
    size_t k = 0;
    while (k < len && v[i][k] == v[0][k]) k++;
    len = k;
  }
  char *p = malloc(len + 1);
  if (p == NULL) return NULL;
  memcpy(p, v[0], len);
  p[len] = 0;
  return p;
}

/* readline's attempted-completion hook. Calls the Lua completer with the
 * whole line and the word's bounds (0-based start, end: the cursor) on the
 * main state, protected: it may not yield, and an error in it just means no
 * candidates. The candidates replace the word (text) as a whole; readline
 * gets them as a malloc'd NULL-terminated array whose first entry is their
 * common prefix (readline frees all of it). No filename fallback, and no
 * space appended (Lua names go on with '.', ':' or '('). */
static char **complete(const char *text, int start, int end) {
  (void)text;
  rl_attempted_completion_over = 1;
  rl_completion_append_character = '\0';
  if (completer_ref == LUA_NOREF || jr_H.L == NULL) return NULL;
  lua_State *L = jr_H.L;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, completer_ref);
  lua_pushstring(L, rl_line_buffer);
  lua_pushinteger(L, start);
  lua_pushinteger(L, end);
  if (lua_pcall(L, 3, 1, 0) != 0 || !lua_istable(L, -1)) {
    lua_settop(L, top);
    return NULL;
  }
  int n = (int)lua_objlen(L, -1);
  if (n <= 0) {
    lua_settop(L, top);
    return NULL;
  }
  char **m = calloc((size_t)n + 2, sizeof *m);
  if (m == NULL) {
    lua_settop(L, top);
    return NULL;
  }
  int k = 0;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    const char *c = lua_tostring(L, -1);
    if (c != NULL) {
      char *copy = strdup(c);
      if (copy != NULL) m[1 + k++] = copy;
    }
    lua_pop(L, 1);
  }
  lua_settop(L, top);
  if (k == 0) {
    free(m);
    return NULL;
  }
  if (k == 1) {          /* one candidate: it is the substitution itself */
    m[0] = m[1];
    m[1] = NULL;
    return m;
  }
  m[0] = common_prefix(m + 1, k);
  if (m[0] == NULL) {
    for (int i = 1; i <= k; i++) free(m[i]);
    free(m);
    return NULL;
  }
  return m;
}

/* term.set_completer(fn | nil): fn(line, start, finish) -> { candidate, ... }
 * is asked on Tab; nil turns completion off. Word breaks suit Lua: a.b.c
 * and q:method stay one word; quotes and brackets end one. A single
 * candidate inside a string gets the closing quote. */
static int l_set_completer(lua_State *L) {
  if (completer_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, completer_ref);
    completer_ref = LUA_NOREF;
  }
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_pushvalue(L, 1);
    completer_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    rl_attempted_completion_function = complete;
    rl_basic_word_break_characters = " \t\n\"'`=+-*/%^~#<>;,(){}[]|&";
    rl_completer_word_break_characters = rl_basic_word_break_characters;
    rl_completer_quote_characters = "\"'";   /* a queue name completed in "..." gets its closing quote */
  } else {
    rl_attempted_completion_function = NULL;
  }
  return 0;
}

static int l_add_history(lua_State *L) {
  add_history(luaL_checkstring(L, 1));
  return 0;
}

static int l_read_history(lua_State *L) {
  lua_pushboolean(L, read_history(luaL_checkstring(L, 1)) == 0);
  return 1;
}

static int l_write_history(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int n = (int)luaL_optinteger(L, 2, 1000);
  int rc = write_history(path);
  if (rc == 0) history_truncate_file(path, n);
  lua_pushboolean(L, rc == 0);
  return 1;
}

/* term.isatty(fd) */
static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 0)));
  return 1;
}

/* ---- Ctrl-C while an entry runs -------------------------------------- */

/* The REPL marks the coroutine of the entry it runs (term.set_busy(co)).
 * Our SIGINT handler is chained in front of libuv's: libuv's still runs
 * (so the loop sees the signal later), and when an entry is marked it also
 * sets a Lua count hook, the way luajit.c interrupts a running chunk. The
 * hook raises "interrupted" in that entry's coroutine only, so even a busy
 * loop that never yields gives the prompt back. */
static const char BUSY_KEY[] = "jobrt.term.busy";
static volatile sig_atomic_t busy_armed;
static struct sigaction prev_int;
static int chained;

static void busy_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_getfield(L, LUA_REGISTRYINDEX, BUSY_KEY);
  lua_pushthread(L);
  int mine = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  if (!mine) return;            /* other code runs: wait for the entry's own */
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted");
}

static void on_sigint(int sig, siginfo_t *si, void *uctx) {
  if (prev_int.sa_flags & SA_SIGINFO) {
    if (prev_int.sa_sigaction) prev_int.sa_sigaction(sig, si, uctx);
  } else if (prev_int.sa_handler != SIG_DFL && prev_int.sa_handler != SIG_IGN && prev_int.sa_handler) {
    prev_int.sa_handler(sig);
  }
  if (busy_armed && jr_H.L && !jr_H.shutting_down)
    lua_sethook(jr_H.L, busy_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* term.set_busy(co | nil): co is the entry Ctrl-C should interrupt. */
static int l_set_busy(lua_State *L) {
  if (lua_isthread(L, 1)) {
    if (!chained) {
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_sigaction = on_sigint;
      sa.sa_flags = SA_SIGINFO | SA_RESTART;
      sigemptyset(&sa.sa_mask);
      sigaction(SIGINT, &sa, &prev_int);
      chained = 1;
    }
    lua_pushvalue(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, BUSY_KEY);
    busy_armed = 1;
  } else {
    busy_armed = 0;
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, BUSY_KEY);
    lua_sethook(L, NULL, 0, 0);
  }
  return 0;
}

/* ---- pipes and files ------------------------------------------------- */

static uv_pipe_t *in_pipe;       /* malloc'd; data = itself */
static char *pend;               /* bytes read but not yet returned */
static size_t pend_len, pend_cap;
static int in_eof;

static void pend_add(const char *p, size_t n) {
  if (pend_len + n > pend_cap) {
    size_t cap = pend_cap ? pend_cap * 2 : 4096;
    while (cap < pend_len + n) cap *= 2;
    char *np = realloc(pend, cap);
    if (np == NULL) return;
    pend = np;
    pend_cap = cap;
  }
  memcpy(pend + pend_len, p, n);
  pend_len += n;
}

/* Pushes the next complete line (without its newline) from pend onto L and
 * returns 1, or returns 0 when none is complete (at EOF: the remainder, or
 * nil when empty). */
static int take_line(lua_State *L) {
  char *nl = pend ? memchr(pend, '\n', pend_len) : NULL;
  if (nl == NULL) {
    if (!in_eof) return 0;
    if (pend_len == 0) {
      lua_pushnil(L);
      return 1;
    }
    lua_pushlstring(L, pend, pend_len);
    pend_len = 0;
    return 1;
  }
  size_t n = (size_t)(nl - pend);
  lua_pushlstring(L, pend, n);
  memmove(pend, nl + 1, pend_len - n - 1);
  pend_len -= n + 1;
  return 1;
}

static void on_pipe_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h; (void)hint;
  static char slab[65536];
  buf->base = slab;
  buf->len = sizeof slab;
}

static void on_pipe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n > 0) pend_add(buf->base, (size_t)n);
  if (n < 0) {
    in_eof = 1;
    uv_read_stop(s);
  }
  if (line_ref == LUA_NOREF) {
    uv_read_stop(s);
    return;
  }
  lua_State *L = jr_H.L;
  if (take_line(L)) {
    uv_read_stop(s);
    lua_State *co = jr_unref_thread(line_ref);
    line_ref = LUA_NOREF;
    lua_xmove(L, co, 1);
    jr_resume(co, 1);
  }
}

/* term.read_line() -> line | nil at end of input (yields on a pipe) */
static int l_read_line(lua_State *L) {
  jr_check_park(L, "term.read_line");
  if (take_line(L)) return 1;
  if (line_ref != LUA_NOREF) return luaL_error(L, "term.read_line: another coroutine is already reading");
  /* Only pipes and sockets can be watched by the loop; a file, /dev/null or
   * another device is read directly (it never blocks for long). */
  uv_handle_type kind = uv_guess_handle(0);
  if (kind != UV_NAMED_PIPE && kind != UV_TCP && kind != UV_TTY) {
    char buf[65536];
    for (;;) {
      ssize_t n = read(0, buf, sizeof buf);
      if (n <= 0) in_eof = 1; else pend_add(buf, (size_t)n);
      if (take_line(L)) return 1;
    }
  }
  if (in_pipe == NULL) {
    in_pipe = malloc(sizeof *in_pipe);
    if (in_pipe == NULL) return luaL_error(L, "term.read_line: out of memory");
    uv_pipe_init(jr_H.loop, in_pipe, 0);
    in_pipe->data = in_pipe;
    if (uv_pipe_open(in_pipe, 0) != 0) {
      in_eof = 1;
      return take_line(L);
    }
  }
  if (in_eof) return take_line(L);
  uv_read_start((uv_stream_t *)in_pipe, on_pipe_alloc, on_pipe_read);
  line_ref = jr_ref_thread(L);
  return jr_park(L);
}

/* Stops reading stdin and closes the watchers (host shutdown). */
void jr_term_shutdown(void) {
  rl_attempted_completion_function = NULL;
  completer_ref = LUA_NOREF;        /* the registry goes with the state */
  if (rl_active) {
    rl_callback_handler_remove();
    rl_active = 0;
  }
  if (tty_poll && !uv_is_closing((uv_handle_t *)tty_poll)) uv_close((uv_handle_t *)tty_poll, poll_closed);
  if (in_pipe && !uv_is_closing((uv_handle_t *)in_pipe)) uv_close((uv_handle_t *)in_pipe, poll_closed);
  tty_poll = NULL;
  in_pipe = NULL;
  free(pend);
  pend = NULL;
  pend_len = pend_cap = 0;
}

int jr_open_term(lua_State *L) {
  static const luaL_Reg fns[] = {{"readline", l_readline},
                                 {"cancel_line", l_cancel_line},
                                 {"print", l_print},
                                 {"add_history", l_add_history},
                                 {"read_history", l_read_history},
                                 {"write_history", l_write_history},
                                 {"isatty", l_isatty},
                                 {"read_line", l_read_line},
                                 {"set_busy", l_set_busy},
                                 {"set_completer", l_set_completer},
                                 {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  return 1;
}
