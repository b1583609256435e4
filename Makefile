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
SANFLAGS := -fsanitize=thread -fno-omit-frame-pointer
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

.PHONY: all lib tests bench-bin test test-unit test-sanitize test-preload test-integration bench demo deps clean

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

$(BUILD)/bench/%: bench/%.c $(BUILD)/libshmcore.a $(wildcard bench/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libshmcore.a $(LDLIBS)

$(BUILD)/tools/%: tools/%.c $(BUILD)/libshmcore.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libshmcore.a $(LDLIBS)

# Installs the build and test dependencies from Debian when they are missing.
deps:
	@tools/deps.sh

test: deps
	$(MAKE) all
	$(MAKE) test-unit
	$(MAKE) test-preload
	$(MAKE) test-integration
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

test-preload: lib $(PROG_BIN)
	@SHM_PRELOAD="$(SHM_PRELOAD)" BUILD=$(BUILD) tests/preload/run.sh $(MATRIX)
	@SHM_PRELOAD="$(SHM_PRELOAD)" BUILD=$(BUILD) ASAN_OPTIONS=detect_leaks=0 tests/preload/redis_smoke.sh
	@SHM_PRELOAD="$(SHM_PRELOAD)" BUILD=$(BUILD) tests/preload/forge.sh

# Real servers with their own clients, unmodified, client and server each shimmed or
# not, over TCP and a unix socket (tests/integration/). The servers to run:
INTEGRATION ?= redis nginx memcached postgres
test-integration: deps lib $(PROG_BIN)
	@SHM_PRELOAD="$(SHM_PRELOAD)" BUILD=$(BUILD) tests/integration/run.sh $(INTEGRATION)

test-sanitize:
	$(MAKE) VARIANT=asan all
	$(MAKE) VARIANT=asan test-unit
	$(MAKE) VARIANT=asan test-preload

# The demo (the README's main command): the same unmodified redis-server,
# redis-benchmark and redis-cli, plain and shimmed, side by side, in under two
# minutes. The socket-level and ring benches are in `make bench`.
demo:
	@tools/deps.sh demo
	$(MAKE) lib
	@BUILD=$(BUILD) bash bench/redis_demo.sh

bench: deps all
	BUILD=$(BUILD) bash bench/sock_bench.sh
	$(BUILD)/bench/ring_bench
	BUILD=$(BUILD) bash bench/redis_demo.sh --reps 5 --budget 600

clean:
	rm -rf build
