# lamina: a union filesystem in user space, kernel overlayfs format.
#
#   make            build ./build/lamina
#   make check      build, then run the unit and integration tests
#   make check-asan the same tests against an ASan and UBSan build
#   make check-passthrough-off  the integration tests with passthrough=off
#   make check-uring  the integration tests with FUSE over io_uring on
#   make bench      side-by-side benchmark (see docs/benchmarks.md)
#   make bench-uring  the same with FUSE over io_uring on

VERSION := 0.1.0
CC ?= cc
BUILD ?= build
CFLAGS ?= -O2 -g
WARN := -Wall -Wextra -Werror -Wshadow -Wno-missing-field-initializers
CPPFLAGS += -D_GNU_SOURCE -DLAMINA_VERSION=\"$(VERSION)\" -Isrc
override CFLAGS += -std=gnu11 $(WARN) -pthread -MMD -MP
LDLIBS += -pthread -larchive
PREFIX ?= /usr/local

SRC_FUSE := $(wildcard src/fuse/*.c)
SRC_OVL := $(wildcard src/ovl/*.c)
SRC_CLI := $(wildcard src/cli/*.c)
SRC_COMMON := $(wildcard src/common/*.c)
SRC_LAYER := $(wildcard src/layer/*.c)
SRC := $(SRC_COMMON) $(SRC_FUSE) $(SRC_OVL) $(SRC_LAYER) $(SRC_CLI)
OBJ := $(SRC:src/%.c=$(BUILD)/obj/%.o)
LIB_OBJ := $(filter-out $(BUILD)/obj/cli/main.o,$(OBJ))

UNIT_SRC := $(wildcard tests/unit/*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/unit/%)

.PHONY: all check check-asan check-passthrough-off check-uring unit bench bench-uring install clean
.PHONY: format

all: $(BUILD)/lamina

$(BUILD)/lamina: $(OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/unit/%: tests/unit/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(LIB_OBJ) $(LDLIBS)

unit: $(UNIT_BIN)

check: all unit
	LAMINA=$(abspath $(BUILD)/lamina) UNIT_DIR=$(abspath $(BUILD)/unit) \
		tests/run.sh

# The integration tests again with passthrough off: the path that reads
# and writes through lamina.
check-passthrough-off: all
	LAMINA=$(abspath $(BUILD)/lamina) LAMINA_OPTIONS=passthrough=off \
		tests/run.sh tests/integration

# The integration tests again with FUSE over io_uring switched on in the
# kernel for the run (see scripts/fuse-uring.sh).
check-uring: all
	LAMINA=$(abspath $(BUILD)/lamina) scripts/fuse-uring.sh \
		tests/run.sh tests/integration

check-asan:
	$(MAKE) BUILD=build-asan \
		CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
		LDFLAGS="-fsanitize=address,undefined" check

bench: all
	LAMINA=$(abspath $(BUILD)/lamina) bench/run.sh

# The same with FUSE over io_uring switched on in the kernel for the run.
bench-uring: all
	LAMINA=$(abspath $(BUILD)/lamina) scripts/fuse-uring.sh bench/run.sh

# mount(8) looks for helpers in /sbin only, whatever PREFIX is.
SBINDIR ?= /sbin

install: all
	install -D -m 755 $(BUILD)/lamina $(DESTDIR)$(PREFIX)/bin/lamina
	install -d $(DESTDIR)$(SBINDIR)
	ln -sf $(PREFIX)/bin/lamina $(DESTDIR)$(SBINDIR)/mount.lamina
	install -D -m 644 man/lamina.8 $(DESTDIR)$(PREFIX)/share/man/man8/lamina.8

format:
	clang-format -i $(SRC) $(wildcard src/*/*.h) $(UNIT_SRC)

clean:
	rm -rf build build-asan

-include $(OBJ:.o=.d)
