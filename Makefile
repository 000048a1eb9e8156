# Mandate Gateway: one non-recursive Makefile.
#   make            build/mandate-gateway, build/mandate-wallet, build/mandate-audit, build/libcore.a
#   make test       install missing Debian packages, build, run every test
#   make asan       the whole suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make demo       the whole story end to end
#   make cluster-demo  two gateways on one throwaway PostgreSQL (SPEC §6)
#   make format / format-check / clean

CC      ?= cc
BUILD   ?= build
PKGS    := libevent libevent_pthreads libevent_openssl openssl jansson sqlite3 libpq
TESTPKGS := cmocka libjwt

OPT     ?= -O2
SAN     ?=
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -Wall -Wextra -Wpedantic -Werror -D_GNU_SOURCE -D_FORTIFY_SOURCE=2 \
           -fstack-protector-strong -fno-strict-aliasing -I. $(SAN)
LDFLAGS += $(SAN)

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
TEST_CFLAGS = $(shell pkg-config --cflags $(TESTPKGS) 2>/dev/null)
TEST_LIBS   = $(shell pkg-config --libs $(TESTPKGS) 2>/dev/null)

CORE_SRC    := $(wildcard core/*.c)
AUDIT_SRC   := $(filter-out audit/main.c,$(wildcard audit/*.c))
GATEWAY_SRC := $(filter-out gateway/main.c,$(wildcard gateway/*.c))
WALLET_SRC  := $(filter-out wallet/main.c,$(wildcard wallet/*.c))
UNIT_SRC    := $(wildcard tests/unit/test_*.c)
EXAMPLE_SRC := $(wildcard examples/*/*.c)
BENCH_SRC   := $(wildcard bench/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIBCORE    := $(BUILD)/libcore.a
LIBAUDIT   := $(BUILD)/libaudit.a
LIBGATEWAY := $(BUILD)/libgateway.a
LIBWALLET  := $(BUILD)/libwallet.a
PROGRAMS   := $(BUILD)/mandate-gateway $(BUILD)/mandate-wallet $(BUILD)/mandate-audit
UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
EXAMPLES   := $(patsubst examples/%.c,$(BUILD)/examples/%,$(EXAMPLE_SRC))
BENCHES    := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
ALL_LIBS   := $(LIBGATEWAY) $(LIBWALLET) $(LIBAUDIT) $(LIBCORE)

.PHONY: all deps deps-test test asan demo cluster-demo fuzz format format-check clean
all: $(LIBCORE) $(PROGRAMS) $(EXAMPLES) $(BENCHES)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

$(LIBCORE): $(call obj,$(CORE_SRC))
$(LIBAUDIT): $(call obj,$(AUDIT_SRC))
$(LIBGATEWAY): $(call obj,$(GATEWAY_SRC))
$(LIBWALLET): $(call obj,$(WALLET_SRC))
$(ALL_LIBS):
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/mandate-gateway: $(call obj,gateway/main.c) $(LIBGATEWAY) $(LIBAUDIT) $(LIBCORE)
# The wallet fetches its merchants' remote key sets with the gateway's fetcher (jwks_remote, tls,
# http_parse): it links libgateway.a, of which only those objects are pulled in.
$(BUILD)/mandate-wallet: $(call obj,wallet/main.c) $(LIBWALLET) $(LIBGATEWAY) $(LIBCORE)
$(BUILD)/mandate-audit: $(call obj,audit/main.c) $(LIBAUDIT) $(LIBCORE)
$(PROGRAMS):
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)
$(EXAMPLES): $(BUILD)/examples/%: $(BUILD)/obj/examples/%.o $(LIBCORE)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)
$(BENCHES): $(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIBAUDIT) $(LIBCORE)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/obj/tests/unit/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) $(TEST_CFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(ALL_LIBS) $(PKG_LIBS) $(TEST_LIBS)

deps:
	@scripts/deps.sh
deps-test:
	@scripts/deps.sh test

test: deps-test
	@$(MAKE) --no-print-directory all $(UNIT_BINS)
	@BUILD=$(BUILD) tests/run.sh

ASAN_SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
# OPT and SAN also go to the tests' environment: test_ship's `make install` then rebuilds (if a
# source changed meanwhile) with the sanitizer, not into a build/asan that no longer links.
asan: deps-test
	@$(MAKE) --no-print-directory BUILD=build/asan OPT=-O1 SAN="$(ASAN_SAN)" \
	    all $(patsubst $(BUILD)/%,build/asan/%,$(UNIT_BINS))
	@BUILD=build/asan OPT=-O1 SAN="$(ASAN_SAN)" ASAN_OPTIONS=detect_leaks=1 \
	    UBSAN_OPTIONS=print_stacktrace=1 tests/run.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) examples/demo.sh

cluster-demo: deps-test
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) examples/cluster-demo.sh

FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_SECONDS ?= 60
FUZZ_BUILD   ?= build/fuzz
FUZZ_LIBS    := $(FUZZ_BUILD)/libgateway.a $(FUZZ_BUILD)/libaudit.a $(FUZZ_BUILD)/libcore.a
# fuzz-build: every tests/fuzz/fuzz_<name>.c against the three libraries, built with the fuzz
# flags. fuzz: then each runs for FUZZ_SECONDS with its dictionary, the first that exists of
# fuzz_<name>.dict, <name>.dict, <name up to its first _>.dict (http.dict for fuzz_http_request),
# mandate.dict; and with tests/fuzz/seeds/<name> as extra seeds when that directory exists.
.PHONY: fuzz-build
fuzz-build: deps
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=clang OPT=-O1 \
	    SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer" $(FUZZ_LIBS)
	@for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	    clang -std=c11 -D_GNU_SOURCE -I. -g -O1 -fsanitize=fuzzer,address,undefined $$f \
	        $(FUZZ_LIBS) $(PKG_LIBS) -o $(FUZZ_BUILD)/$$n || exit 1; done
fuzz: fuzz-build
	@for f in $(FUZZ_SRC); do n=$$(basename $$f .c); s=$${n#fuzz_}; \
	    d=tests/fuzz/$$n.dict; [ -f $$d ] || d=tests/fuzz/$$s.dict; \
	    [ -f $$d ] || d=tests/fuzz/$${s%%_*}.dict; [ -f $$d ] || d=tests/fuzz/mandate.dict; \
	    seeds=; [ -d tests/fuzz/seeds/$$s ] && seeds=tests/fuzz/seeds/$$s; \
	    mkdir -p $(FUZZ_BUILD)/corpus-$$n; \
	    $(FUZZ_BUILD)/$$n -max_total_time=$(FUZZ_SECONDS) -dict=$$d $(FUZZ_BUILD)/corpus-$$n $$seeds \
	        || exit 1; done

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FORMAT_FILES)
format-check:
	@clang-format --dry-run --Werror $(FORMAT_FILES) && echo "format: ok"

# install: the three programs, their man pages, the systemd units (with PREFIX's bindir put in)
# and the sysusers.d entry for their system user, under DESTDIR. man-lint: mandoc -T lint on
# every page (or man -l when mandoc is absent). docker-test: build the image and run the demo in
# containers (needs a Docker daemon; not part of `make test`).
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
DOCDIR  ?= $(PREFIX)/share/doc/mandate-gateway
MAN_PAGES := $(wildcard man/*.[158])
.PHONY: install man-lint docker-test
install: $(PROGRAMS)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
	    $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(DOCDIR)
	install -m 0755 $(PROGRAMS) $(DESTDIR)$(BINDIR)/
	for m in $(MAN_PAGES); do install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$${m##*.}/; done
	for u in dist/systemd/*.service; do \
	    sed 's|@BINDIR@|$(BINDIR)|g' $$u > $(DESTDIR)$(UNITDIR)/$$(basename $$u) && \
	    chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$u) || exit 1; done
	install -m 0644 dist/sysusers.d/mandate.conf $(DESTDIR)$(SYSUSERSDIR)/mandate.conf
	install -m 0644 LICENSE README.md docs/*.md config/*.json $(DESTDIR)$(DOCDIR)/
man-lint:
	@if command -v mandoc >/dev/null; then mandoc -T lint -W warning $(MAN_PAGES); \
	else for m in $(MAN_PAGES); do LC_ALL=C.UTF-8 MANWIDTH=80 man -l -Tutf8 $$m >/dev/null \
	    2>$(BUILD)/man-lint.err && ! test -s $(BUILD)/man-lint.err || { cat $(BUILD)/man-lint.err; exit 1; }; done; fi
	@echo "man-lint: $(words $(MAN_PAGES)) pages ok"
docker-test:
	@scripts/docker-test.sh

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
