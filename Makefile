# jobrt - a job runtime for Lua on Redis.
#   make            build ./jobrt
#   make run        build, start a local redis-server if none answers, serve jobs/
#   make test       build and run every test against a private redis-server
#   make sanitize   build with ASan+UBSan and run the whole suite on that build
#   make bench      benchmarks (ratios against redis-benchmark measured in the same run)
#   make deps       install the Debian packages that are missing
#   make valgrind   a full worker run under valgrind --leak-check=full
#   make fuzz       every libFuzzer target for FUZZ_SECONDS (default 60) each, under ASan+UBSan
#   make chaos      the fault-injecting soak (tests/chaos/run.lua): CHAOS_SEED, CHAOS_SECONDS
#                   (default 180), CHAOS_FSYNC (everysec or always); exits non-zero on a violation
#   make test-browser  the dashboard in headless chromium (installs chromium, chromium-driver)
#   make test-cluster  the worker, client, CLI, REPL, scheduling, web and flow specs against a
#                   Redis Cluster of 3 primaries and 3 replicas on loopback, and tests/09-cluster
#                   (routing, failovers and a reshard under load); about 3-4 minutes
#   make fuzz-http  libFuzzer on the HTTP request parser alone (FUZZ_SECONDS, default 60)
#   make install    the binary, the man page jobrt(1), bash completion and an example systemd
#                   unit under $(DESTDIR)$(PREFIX) (PREFIX=/usr/local); make uninstall

PKGS      := luajit libuv hiredis openssl
DEB_PKGS  := build-essential pkg-config luajit libluajit-5.1-dev libhiredis-dev libuv1-dev \
             lua-cjson-dev lua-busted redis-server redis-tools libreadline-dev libhttp-parser-dev \
             python3 python3-prometheus-client wrk man-db bsdextrautils python3-croniter tzdata \
             libssl-dev openssl
CC        ?= cc
CJSON_A    = $(firstword $(wildcard /usr/lib/*/liblua5.1-cjson.a /usr/lib/liblua5.1-cjson.a))
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN      := -Wall -Wextra -Werror -Wno-unused-function
CFLAGS    ?= -O2 -g
ALL_CFLAGS = -std=gnu11 $(WARN) $(CFLAGS) $(PKG_CFLAGS) -Iruntime -Ibuild
LIBS       = $(CJSON_A) $(PKG_LIBS) -lhttp_parser -lreadline -lm -ldl -lpthread

SRCS      := $(wildcard runtime/*.c)
STDLIB    := $(shell find stdlib -name '*.lua' | sort)
ASSETS    := $(shell find stdlib -path '*/static/*' -type f | sort)
# Server scripts: lua-server-scripts/src/<op>.lua with `--- @include "x"` of includes/x.lua are
# built into the committed standalone lua-server-scripts/<op>.lua (tools/scripts.lua).
SCRIPT_SRC := $(sort $(wildcard lua-server-scripts/src/*.lua))
SCRIPT_INC := $(sort $(wildcard lua-server-scripts/includes/*.lua))
SCRIPTS   := $(patsubst lua-server-scripts/src/%,lua-server-scripts/%,$(SCRIPT_SRC))

.PHONY: all deps test sanitize bench run clean valgrind check-deps scripts test-browser browser-deps fuzz-http \
        install uninstall docs chaos fuzz fuzz-deps test-cluster

all: jobrt

check-deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "missing Debian packages:$$missing (run: make deps)"; exit 1; fi

deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then echo "all dependencies are installed"; exit 0; fi; \
	echo "installing:$$missing"; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing

# Every build first makes sure the Debian packages are there (once; `make deps` re-checks).
build/deps.ok: Makefile
	@$(MAKE) --no-print-directory deps
	@mkdir -p build && touch $@

build/scripts.stamp: tools/scripts.lua $(SCRIPT_SRC) $(SCRIPT_INC) | build/deps.ok
	@mkdir -p build
	luajit tools/scripts.lua build lua-server-scripts
	@touch $@

scripts: build/scripts.stamp

build/embedded.c: tools/embed.lua $(STDLIB) build/scripts.stamp $(ASSETS) | build/deps.ok
	@mkdir -p build
	luajit tools/embed.lua $@ $(STDLIB) -- $(SCRIPTS) -- $(ASSETS)

build/%.o: runtime/%.c runtime/private.h runtime/http_request.h runtime/redis_private.h | build/deps.ok
	@mkdir -p build
	$(CC) $(ALL_CFLAGS) -c $< -o $@

build/embedded.o: build/embedded.c runtime/private.h
	$(CC) $(ALL_CFLAGS) -Wno-overlength-strings -c $< -o $@

OBJS = $(patsubst runtime/%.c,build/%.o,$(SRCS)) build/embedded.o

jobrt: $(OBJS)
	$(CC) $(CFLAGS) -o $@ $(OBJS) $(LIBS)

# The sanitizer build lives apart so it never mixes with normal objects.
SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
jobrt-asan: $(SRCS) build/embedded.c runtime/private.h runtime/http_request.h runtime/redis_private.h
	$(CC) -std=gnu11 $(WARN) $(SAN_FLAGS) $(PKG_CFLAGS) -Iruntime -Ibuild -o $@ $(SRCS) build/embedded.c $(LIBS)

test: jobrt
	@JOBRT_CHECK_HANDLES=1 ./jobrt run tests/run.lua

sanitize: jobrt-asan jobrt
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86 \
	 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	 JOBRT_CHECK_HANDLES=1 JOBRT_BIN=$(CURDIR)/jobrt-asan ./jobrt-asan run tests/run.lua

valgrind: jobrt
	@./jobrt run tests/valgrind.lua

# The browser and its driver are big: only test-browser installs them.
BROWSER_PKGS := chromium chromium-driver
browser-deps:
	@missing=""; for p in $(BROWSER_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; echo "installing:$$missing"; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing

# The suite's worker, client, CLI, REPL, scheduling, web and flow specs and tests/09-cluster
# against a Redis Cluster (tests/cluster.lua starts it: redis-server --cluster-enabled yes,
# redis-cli --cluster create).
CLUSTER_SPECS := tests/01-host/cli_spec.lua tests/04-worker tests/05-client tests/06-sched tests/07-web \
                 tests/08-flows tests/09-cluster
test-cluster: jobrt
	@JOBRT_CHECK_HANDLES=1 JOBRT_TEST_CLUSTER=1 ./jobrt run tests/run.lua $(CLUSTER_SPECS)

test-browser: jobrt browser-deps
	@JOBRT_CHECK_HANDLES=1 JOBRT_TEST_PATTERN=_browser ./jobrt run tests/run.lua tests/07-web

# libFuzzer on the request assembly (runtime/http_request.c over http-parser); the seed inputs
# are in tests/fuzz/corpus/http, new ones found go to build/fuzz-http-corpus.
FUZZ_SECONDS ?= 60
build/fuzz-http: tests/fuzz/http_request_fuzz.c runtime/http_request.c runtime/http_request.h | build/deps.ok
	@mkdir -p build
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Iruntime -o $@ tests/fuzz/http_request_fuzz.c runtime/http_request.c -lhttp_parser

fuzz-http: build/fuzz-http
	@mkdir -p build/fuzz-http-corpus
	./build/fuzz-http -max_total_time=$(FUZZ_SECONDS) -max_len=8192 build/fuzz-http-corpus tests/fuzz/corpus/http

bench: jobrt
	@./jobrt run bench/run.lua

chaos: jobrt
	@./jobrt run tests/chaos/run.lua

run: jobrt
	@./jobrt run tools/make_run.lua jobs/

# ---- fuzzing: tests/fuzz/README.md ----------------------------------------------------
# Targets: json url args jobfile scripts (Lua parsers, tests/fuzz/lua_fuzz.c runs
# tests/fuzz/targets/NAME.lua), resp (Redis replies into Lua values, tests/fuzz/resp_fuzz.c)
# and http (requests for jobrt web, tests/fuzz/http_request_fuzz.c, build/fuzz-http above).
# Each runs for FUZZ_SECONDS on its corpus tests/fuzz/corpus/NAME/ (what it finds new goes
# to build/fuzz/corpus/NAME/, crashes to build/fuzz/crashes/NAME/); tools/fuzz.lua prints
# executions per second and coverage per target.
FUZZ_TARGETS ?= json url args jobfile scripts resp http
FUZZ_DEB_PKGS := clang libfuzzer-14-dev
FUZZ_CC    ?= clang
FUZZ_FLAGS := -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
              -fno-omit-frame-pointer -Wall -Wextra -Wno-unused-function -Wno-unused-parameter
FUZZ_RT    := $(filter-out runtime/main.c,$(SRCS))

fuzz-deps:
	@missing=""; for p in $(FUZZ_DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; fi

build/fuzz/lua_fuzz: tests/fuzz/lua_fuzz.c $(FUZZ_RT) build/embedded.c runtime/private.h runtime/redis_private.h | fuzz-deps
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) $(PKG_CFLAGS) -Iruntime -Ibuild -o $@ tests/fuzz/lua_fuzz.c $(FUZZ_RT) build/embedded.c $(LIBS)

build/fuzz/resp_fuzz: tests/fuzz/resp_fuzz.c $(FUZZ_RT) build/embedded.c runtime/private.h runtime/redis_private.h | fuzz-deps
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) $(PKG_CFLAGS) -Iruntime -Ibuild -o $@ tests/fuzz/resp_fuzz.c $(FUZZ_RT) build/embedded.c $(LIBS)

fuzz: jobrt build/fuzz/lua_fuzz build/fuzz/resp_fuzz build/fuzz-http
	@./jobrt run tools/fuzz.lua $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The man page and the bash completion are built from the --help texts (tools/help_docs.lua).
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR      = $(PREFIX)/bin
MANDIR      = $(PREFIX)/share/man/man1
BASHCOMPDIR = $(PREFIX)/share/bash-completion/completions
EXAMPLEDIR  = $(PREFIX)/share/doc/jobrt/examples

build/jobrt.1: jobrt tools/help_docs.lua
	./jobrt run tools/help_docs.lua man > $@.tmp && mv $@.tmp $@

build/jobrt.bash: jobrt tools/help_docs.lua
	./jobrt run tools/help_docs.lua bash > $@.tmp && mv $@.tmp $@

docs: build/jobrt.1 build/jobrt.bash

install: jobrt build/jobrt.1 build/jobrt.bash
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR) $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(EXAMPLEDIR)
	install -m 755 jobrt $(DESTDIR)$(BINDIR)/jobrt
	install -m 644 build/jobrt.1 $(DESTDIR)$(MANDIR)/jobrt.1
	install -m 644 build/jobrt.bash $(DESTDIR)$(BASHCOMPDIR)/jobrt
	install -m 644 contrib/jobrt.service $(DESTDIR)$(EXAMPLEDIR)/jobrt.service

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/jobrt $(DESTDIR)$(MANDIR)/jobrt.1 $(DESTDIR)$(BASHCOMPDIR)/jobrt \
	      $(DESTDIR)$(EXAMPLEDIR)/jobrt.service

clean:
	rm -rf build jobrt jobrt-asan
