# shmshim — `make` builds build/libshmshim.so; `make test` runs every test.
# Variants build into their own directory: `make VARIANT=asan` -> build/asan/.

CC      ?= cc
VARIANT ?=
ifeq ($(VARIANT),)
BUILD   := build
SANFLAGS :=
else
BUILD   := build/$(VARIANT)
endif
ifeq ($(VARIANT),asan)
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
endif
ifeq ($(VARIANT),tsan)
SANFLAGS := -fsanitize=thread -fno-omit-frame-pointer -Wno-tsan # gcc: fences are not modelled (see docs/security.md)
endif

OPT     ?= -O2
CFLAGS  := -std=gnu11 $(OPT) -g -fPIC -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
           -D_GNU_SOURCE -fvisibility=hidden -Icore $(SANFLAGS) $(EXTRA_CFLAGS)
LDLIBS  := -ldl -lpthread

CORE_SRC    := $(wildcard core/*.c)
PRELOAD_SRC := $(wildcard preload/*.c)
CORE_OBJ    := $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
PRELOAD_OBJ := $(PRELOAD_SRC:%.c=$(BUILD)/obj/%.o)

UNIT_SRC  := $(wildcard tests/unit/*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
PROG_SRC  := $(wildcard tests/progs/*.c)
PROG_BIN  := $(PROG_SRC:tests/progs/%.c=$(BUILD)/tests/progs/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
TOOL_SRC  := $(wildcard tools/*.c)
TOOL_BIN  := $(TOOL_SRC:tools/%.c=$(BUILD)/tools/%)

.PHONY: all lib tests bench-bin test test-unit test-sanitize test-preload test-diff test-integration bench demo deps clean

all: lib tests bench-bin $(TOOL_BIN)
lib: $(BUILD)/libshmshim.so
tests: $(UNIT_BIN) $(PROG_BIN)
bench-bin: $(BENCH_BIN)

$(BUILD)/obj/%.o: %.c $(wildcard core/*.h preload/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libshmcore.a: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	@rm -f $@ && ar rcs $@ $^

$(BUILD)/libshmshim.so: $(CORE_OBJ) $(PRELOAD_OBJ)
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) -shared -Wl,-z,defs -Wl,-z,now -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libshmcore.a $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libshmcore.a -lcmocka $(LDLIBS)

$(BUILD)/tests/progs/%: tests/progs/%.c $(wildcard tests/progs/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/progs -o $@ $< $(LDLIBS)

# The io_uring echo server of tests/integration/uring.sh.
$(BUILD)/tests/progs/uring_echo: LDLIBS += -luring

# The offer forger makes its segment and offer with the library's own core.
$(BUILD)/tests/progs/forge: $(BUILD)/libshmcore.a
$(BUILD)/tests/progs/forge: LDLIBS := $(BUILD)/libshmcore.a $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libshmcore.a $(wildcard bench/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libshmcore.a $(LDLIBS)

$(BUILD)/tools/%: tools/%.c $(BUILD)/libshmcore.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libshmcore.a $(LDLIBS)

# Installs the build and test dependencies from Debian when they are missing.
deps:
	@tools/deps.sh

# The suites check that every connection they open is upgraded, and many open
# short connections one after another, which by default (SHMSHIM_SHORT_MS) soon
# stay plain: they run with it off. tests/preload/short.sh tests the default.
test test-unit test-preload test-diff test-cmd test-integration test-reliability test-reliability-asan test-sanitize test-tsan soak: export SHMSHIM_SHORT_MS := 0

test: deps
	$(MAKE) all
	$(MAKE) test-unit
	$(MAKE) test-preload
	$(MAKE) test-diff
	$(MAKE) test-cmd
	$(MAKE) test-integration
	$(MAKE) test-reliability
	$(MAKE) test-sanitize
	@echo "make test: all suites passed"

test-unit: $(UNIT_BIN) $(BUILD)/tools/config_table
	@tools/run-unit.sh $(BUILD)/tests
	@tools/check_readme.sh $(BUILD)/tools/config_table

# The matrix and real-program smoke tests run the library under LD_PRELOAD; under
# a sanitizer variant the sanitizer's runtime has to come first in the preload list.
ifeq ($(VARIANT),asan)
SHM_PRELOAD = $(shell $(CC) -print-file-name=libasan.so) $(CURDIR)/$(BUILD)/libshmshim.so
export ASAN_OPTIONS ?= detect_leaks=1:abort_on_error=0:exitcode=99
endif
SHM_PRELOAD ?= $(CURDIR)/$(BUILD)/libshmshim.so

test-preload: lib $(PROG_BIN) $(BENCH_BIN)
	@SHM_PRELOAD="$(SHM_PRELOAD)" BUILD=$(BUILD) tests/preload/run.sh $(MATRIX)
	@SHM_PRELOAD="$(SHM_PRELOAD)" BUILD=$(BUILD) ASAN_OPTIONS=detect_leaks=0 tests/preload/redis_smoke.sh
	@SHM_PRELOAD="$(SHM_PRELOAD)" BUILD=$(BUILD) tests/preload/forge.sh
	@SHM_PRELOAD="$(SHM_PRELOAD)" BUILD=$(BUILD) tests/preload/fdreuse.sh
	@SHM_PRELOAD="$(SHM_PRELOAD)" BUILD=$(BUILD) tests/preload/epsparse.sh
	@SHM_PRELOAD="$(SHM_PRELOAD)" BUILD=$(BUILD) ASAN_OPTIONS=detect_leaks=0 tests/preload/libuv.sh
	@SHM_PRELOAD="$(SHM_PRELOAD)" BUILD=$(BUILD) ASAN_OPTIONS=detect_leaks=0 tests/preload/short.sh
	@SHM_PRELOAD="$(SHM_PRELOAD)" BUILD=$(BUILD) ASAN_OPTIONS=detect_leaks=0 tests/preload/spawn.sh

# Kernel socket semantics, differentially (tests/diff/run.sh): each scenario of
# tests/progs/semprobe.c plain, then shimmed on both ends with SHMSHIM_SHORT_MS=0 and
# with the defaults; the outputs must be identical and the shimmed runs upgraded.
# DIFF=scenario... runs a subset.
test-diff: lib $(PROG_BIN)
	@SHM_PRELOAD="$(SHM_PRELOAD)" BUILD=$(BUILD) tests/diff/run.sh $(DIFF)

# Real servers with their own clients, unmodified, client and server each shimmed or
# not, over TCP and a unix socket (tests/integration/). The servers to run (also
# the groups "servers", "programs" and "all" of tests/integration/run.sh):
INTEGRATION ?= redis nginx memcached postgres socat inetd uring node python java sshd git php haproxy pysuite evsuite gevent mariadb mosquitto
test-integration: deps lib $(PROG_BIN)
	@SHM_PRELOAD="$(SHM_PRELOAD)" BUILD=$(BUILD) tests/integration/run.sh $(INTEGRATION)

test-sanitize:
	$(MAKE) VARIANT=asan all
	$(MAKE) VARIANT=asan test-unit
	$(MAKE) VARIANT=asan test-preload
	$(MAKE) VARIANT=asan test-reliability-asan
	$(MAKE) test-tsan

# The demo (the README's main command): the same unmodified redis-server,
# redis-benchmark and redis-cli, plain and shimmed, side by side, in under two
# minutes. The socket-level and ring benches are in `make bench`.
demo:
	@tools/deps.sh demo
	$(MAKE) lib
	@BUILD=$(BUILD) bash bench/redis_demo.sh

# Every plain-vs-shim comparison in one run (bench/run.sh): tables, targets and
# plots in bench/results/. bench-quick: the same with short cells.
# bench-regimes: only section 9, the regimes that must be no slower than plain.
.PHONY: bench-quick bench-regimes deps-bench
bench: deps-bench all
	BUILD=$(BUILD) bash bench/run.sh

bench-quick: deps-bench all
	BUILD=$(BUILD) bash bench/run.sh --quick

bench-regimes: deps-bench all
	BUILD=$(BUILD) bash bench/run.sh --only regimes

deps-bench:
	@tools/deps.sh bench

clean:
	rm -rf build

# ---- Reliability and security suite (issue 6; docs/security.md) ----
# Programs that speak the protocol themselves (hostile peer, squatter) link the core.
REL_SRC := $(wildcard tests/reliability/*.c)
REL_BIN := $(REL_SRC:tests/reliability/%.c=$(BUILD)/tests/rel/%)

$(BUILD)/tests/rel/%: tests/reliability/%.c $(BUILD)/libshmcore.a $(wildcard tests/reliability/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/reliability -o $@ $< $(BUILD)/libshmcore.a $(LDLIBS)

# Test preloads loaded before the library (conc's pollrace: tests/reliability/hook/).
REL_HOOK := $(BUILD)/tests/rel/drainhook.so
$(BUILD)/tests/rel/%.so: tests/reliability/hook/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -o $@ $< -ldl

rel-bin: lib $(REL_BIN) $(REL_HOOK) $(PROG_BIN)

# libFuzzer targets over the code that parses peer-controlled bytes (tests/fuzz/),
# built with clang against the core sources. `make fuzz` runs each for
# FUZZ_SECONDS (default 60); test-reliability runs each for FUZZ_TEST_SECONDS.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TEST_SECONDS ?= 30
FUZZ_FLAGS := -std=gnu11 -g -O1 -D_GNU_SOURCE -Icore -fsanitize=fuzzer,address,undefined \
              -fno-sanitize-recover=all -Wall -Wextra -Werror -Wno-unused-parameter
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)

build/fuzz/%: tests/fuzz/%.c $(CORE_SRC) $(wildcard core/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(CORE_SRC) -ldl -lpthread

.PHONY: rel-bin fuzz-bin fuzz test-reliability test-reliability-asan test-tsan soak
fuzz-bin: $(FUZZ_BIN)

fuzz: deps fuzz-bin
	FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh build/fuzz

# The shmshim command: tools/shmshim.c and its subcommands in tools/cmd/.
CMD_SRC := $(wildcard tools/cmd/*.c)
$(BUILD)/tools/shmshim: tools/shmshim.c $(CMD_SRC) $(wildcard tools/cmd/*.h) $(BUILD)/libshmcore.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itools/cmd -o $@ tools/shmshim.c $(CMD_SRC) $(BUILD)/libshmcore.a $(LDLIBS)

# Installation: command in bin/, library in lib/ (the command finds it there, as
# ../lib/libshmshim.so from its own location), manual in share/man/man1.
PREFIX ?= /usr/local
INSTALL_FILES := bin/shmshim lib/libshmshim.so share/man/man1/shmshim.1
.PHONY: install uninstall test-cmd
install: $(BUILD)/libshmshim.so $(BUILD)/tools/shmshim
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 $(BUILD)/tools/shmshim $(DESTDIR)$(PREFIX)/bin/shmshim
	install -m 755 $(BUILD)/libshmshim.so $(DESTDIR)$(PREFIX)/lib/libshmshim.so
	install -m 644 tools/shmshim.1 $(DESTDIR)$(PREFIX)/share/man/man1/shmshim.1

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/,$(INSTALL_FILES))

# The shmshim command against real programs: run, stat, doctor, errors, install.
test-cmd: lib $(BUILD)/tools/shmshim
	@set -e; n=0; for t in tests/cmd/*.sh; do BUILD=$(BUILD) bash $$t; n=$$((n + 1)); done; \
	  echo "command suites: $$n passed, 0 failed"

# The whole reliability suite, bounded (part of make test). Costs, measured on the
# 2-core VM: fuzz 4 x FUZZ_TEST_SECONDS, hostile ~1 min, hclient ~40 s, crash ~20 s, squat ~30 s,
# sandbox ~40 s, passcred ~1 s,
# forkecho ~20 s, leak ~25 s, load 60 s, valgrind ~1.5 min, rawsys ~5 s, statsafe ~5 s,
# logsafe ~3 s, inherit ~2 s, spawncloexec ~2 s, oobfirst ~1 s, silent ~1 s, forkpend ~3 s, forkshare ~8 s, fdlimit ~3 s, conc ~2 min.
REL_ENV = BUILD=$(BUILD) SHM_PRELOAD="$(SHM_PRELOAD)"
LOAD_TEST_SECONDS ?= 60
SOAK_SECONDS ?= 600
test-reliability: rel-bin fuzz-bin $(BUILD)/tools/shmshim
	@FUZZ_SECONDS=$(FUZZ_TEST_SECONDS) tests/fuzz/run.sh build/fuzz
	@$(REL_ENV) tests/reliability/hostile.sh
	@$(REL_ENV) tests/reliability/hclient.sh
	@$(REL_ENV) tests/reliability/crash.sh
	@$(REL_ENV) tests/reliability/squat.sh
	@$(REL_ENV) tests/reliability/sandbox.sh
	@$(REL_ENV) tests/reliability/pidns.sh
	@$(REL_ENV) tests/reliability/passcred.sh
	@$(REL_ENV) tests/reliability/forkecho.sh
	@$(REL_ENV) tests/reliability/leak.sh
	@$(REL_ENV) tests/reliability/idlemem.sh
	@$(REL_ENV) LOAD_SECONDS=$(LOAD_TEST_SECONDS) tests/reliability/load.sh
	@$(REL_ENV) tests/reliability/valgrind.sh
	@$(REL_ENV) tests/reliability/rawsys.sh
	@$(REL_ENV) tests/reliability/statsafe.sh
	@$(REL_ENV) tests/reliability/logsafe.sh
	@$(REL_ENV) tests/reliability/inherit.sh
	@$(REL_ENV) tests/reliability/spawncloexec.sh
	@$(REL_ENV) tests/reliability/oobfirst.sh
	@$(REL_ENV) tests/reliability/silent.sh
	@$(REL_ENV) tests/reliability/forkpend.sh
	@$(REL_ENV) tests/reliability/forkshare.sh
	@$(REL_ENV) tests/reliability/fdlimit.sh
	@$(REL_ENV) tests/reliability/pysub.sh
	@$(REL_ENV) tests/reliability/conc.sh
	@echo "make test-reliability: all suites passed"

# The same peer, crash and leak tests with the library and the programs built with
# ASan+UBSan (an access outside the hostile segment, or a bad copy, aborts them).
test-reliability-asan: rel-bin
	@$(REL_ENV) ASAN_OPTIONS=detect_leaks=0:exitcode=99 tests/reliability/hostile.sh
	@$(REL_ENV) ASAN_OPTIONS=detect_leaks=0:exitcode=99 tests/reliability/hclient.sh
	@$(REL_ENV) ASAN_OPTIONS=detect_leaks=0:exitcode=99 CRASH_ROUNDS=1 tests/reliability/crash.sh
	@$(REL_ENV) ASAN_OPTIONS=detect_leaks=0:exitcode=99 SANDBOX_CONNS=40 tests/reliability/sandbox.sh
	@$(REL_ENV) ASAN_OPTIONS=detect_leaks=0:exitcode=99 tests/reliability/passcred.sh
	@$(REL_ENV) ASAN_OPTIONS=detect_leaks=0:exitcode=99 FORKECHO_CONNS=50 tests/reliability/forkecho.sh
	@$(REL_ENV) ASAN_OPTIONS=detect_leaks=1:exitcode=99 LEAK_CONNS=2000 LEAK_RSS_SLACK_KIB=4096 tests/reliability/leak.sh
	@# (forkrace left out: children forked from a threaded ASan process can hang in exit(), with or without the library)
	@$(REL_ENV) ASAN_OPTIONS=detect_leaks=0:exitcode=99 CONC_SKIP=forkrace tests/reliability/conc.sh

# ThreadSanitizer: the unit tests, then the preloaded library in the threaded modes
# of the matrix (tests/reliability/tsan.sh; suppressions: tests/reliability/tsan.supp).
test-tsan:
	$(MAKE) VARIANT=tsan all
	$(MAKE) VARIANT=tsan test-unit
	@tests/reliability/tsan.sh

# Ten minutes of load rounds (1,000 connections each through echo and redis).
soak: deps all rel-bin
	@$(REL_ENV) LOAD_SECONDS=$(SOAK_SECONDS) tests/reliability/load.sh
