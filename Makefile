# hotshard: one binary (build/hotshard), one test binary, BPF skeletons built
# the libbpf-tools way. Each room (top-level folder) builds into its own archive,
# linked top to bottom, so a call that points up the floor plan fails to link;
# tools/check-deps.sh checks the includes. Sources are globbed per room, so adding
# a source file needs no edit here.
#   make            build build/hotshard (installs missing packages first)
#   make test       check-deps and check-length, then unit + integration tests (root, /dev/fuse, BPF)
#   make check-deps fail on any include that points up or sideways in the floor plan
#   make check-length fail on any function over 80 lines outside tests
#   make deps-graph print the room graph found in the code (docs/architecture.md)
#   make run        start hotshard on a generated sample dataset
#   make bench      benchmarks; writes docs/benchmarks.md
#   make install    binary, systemd unit, example config, logrotate, man pages (PREFIX, DESTDIR)
#   make man        write tools/packaging/man/ again from the CLI (`hotshard man`)
#   make uninstall  remove what install put there
#   V=1             show full commands
.DELETE_ON_ERROR:
# Generated BPF objects and skeletons are kept, not removed as intermediates.
.SECONDARY:
.SUFFIXES:

BUILD     ?= build
NPROC     := $(shell nproc)
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
UNITDIR   ?= $(PREFIX)/lib/systemd/system
DOCDIR    ?= $(PREFIX)/share/doc/hotshard
MANDIR    ?= $(PREFIX)/share/man
SYSCONFDIR?= /etc
CONFDIR   ?= $(SYSCONFDIR)/hotshard
# mount(8) looks for mount.TYPE in /sbin only, whatever PREFIX is.
MOUNTHELPERDIR ?= /sbin
CXX       ?= g++
CLANG     ?= clang
BPFTOOL   ?= bpftool
ARCH      := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')

ifeq ($(V),1)
Q :=
msg :=
else
Q := @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

PKGS      := fuse3 libbpf liburing prometheus-cpp-pull spdlog fmt libxxhash tomlplusplus libsystemd \
             libcurl libcrypto libibverbs librdmacm
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CXXFLAGS  ?= -O2 -g
CXXFLAGS  += -std=c++20 -Wall -Wextra -Wno-missing-field-initializers -pthread \
             -I. -I$(BUILD) -MMD -MP $(PKG_CFLAGS)
# liblmdb ships no pkg-config file on Debian 12.
LDLIBS    += $(PKG_LIBS) -llmdb -lelf -lz -pthread
BPF_CFLAGS ?= -O2 -g -Wall

BIN       := $(BUILD)/hotshard
TEST_BIN  := $(BUILD)/hotshard-tests
BENCH_BIN := $(BUILD)/hotshard-readbench

# Rooms top to bottom: the link order (tools/check-deps.sh holds what each may include).
ROOMS     := tools daemon fuse bpf peer policy base
MAIN_SRC  := tools/main.cc
room_srcs  = $(filter-out $(MAIN_SRC),$(wildcard $(1)/*.cc))
room_lib   = $(BUILD)/lib/libhotshard_$(1).a
ROOM_LIBS := $(foreach r,$(ROOMS),$(call room_lib,$(r)))
TEST_SRCS := $(wildcard tests/*.cc tests/*/*.cc)
BENCH_SRCS:= $(wildcard tools/bench/*.cc)
BPF_SRCS  := $(wildcard bpf/*.bpf.c)
BPF_OBJS  := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/bpf/%.bpf.o)
BPF_SKELS := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/bpf/%.skel.h)
VMLINUX_H := $(BUILD)/bpf/vmlinux.h

obj = $(patsubst %.cc,$(BUILD)/obj/%.o,$(1))
TEST_OBJS := $(call obj,$(TEST_SRCS))

.PHONY: all deps build test test-unit test-integration soak bench run install uninstall man clean format check-deps check-length deps-graph
all: deps
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) build

build: $(BIN) $(TEST_BIN) $(BENCH_BIN)

deps:
	$(Q)tools/deps.sh

define room_rule
$(call room_lib,$(1)): $(call obj,$(call room_srcs,$(1)))
	$$(call msg,AR,$$@)
	$$(Q)mkdir -p $$(@D)
	$$(Q)rm -f $$@ && ar rcs $$@ $$^
endef
$(foreach r,$(ROOMS),$(eval $(call room_rule,$(r))))

$(BIN): $(call obj,$(MAIN_SRC)) $(ROOM_LIBS)
	$(call msg,LINK,$@)
	$(Q)$(CXX) $(CXXFLAGS) -o $@ $(call obj,$(MAIN_SRC)) $(ROOM_LIBS) $(LDLIBS)

$(TEST_BIN): $(TEST_OBJS) $(ROOM_LIBS)
	$(call msg,LINK,$@)
	$(Q)$(CXX) $(CXXFLAGS) -o $@ $(TEST_OBJS) $(ROOM_LIBS) -lgtest $(LDLIBS)

$(BENCH_BIN): $(call obj,$(BENCH_SRCS)) $(call room_lib,base)
	$(call msg,LINK,$@)
	$(Q)$(CXX) $(CXXFLAGS) -o $@ $^ -pthread

check-deps:
	$(Q)tools/check-deps.sh

check-length: deps
	$(Q)tools/check-length.sh

deps-graph:
	$(Q)tools/check-deps.sh --graph

$(BUILD)/obj/%.o: %.cc | $(BPF_SKELS)
	$(call msg,CXX,$<)
	$(Q)mkdir -p $(@D)
	$(Q)$(CXX) $(CXXFLAGS) -c -o $@ $<

$(VMLINUX_H):
	$(call msg,GEN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(VMLINUX_H) $(wildcard bpf/*.h)
	$(call msg,BPF,$@)
	$(Q)$(CLANG) $(BPF_CFLAGS) -target bpf -D__TARGET_ARCH_$(ARCH) -I$(BUILD)/bpf -Ibpf -c $< -o $@
	$(Q)llvm-strip -g $@ 2>/dev/null || true

$(BUILD)/bpf/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(call msg,SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< > $@

test: deps check-deps check-length
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) build
	$(Q)tools/run-tests.sh

test-unit: deps
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) build
	$(Q)tools/run-tests.sh --gtest_filter='-Integration*'

# The crash test of docs/restart.md at length: 1000 SIGKILLs of the worker
# under a reader and an opener (make test runs 50); about 30 minutes.
soak: deps
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) build
	$(Q)HOTSHARD_TAKEOVER_ITERATIONS=$${HOTSHARD_TAKEOVER_ITERATIONS:-1000} \
	    tools/run-tests.sh --gtest_filter='IntegrationTakeover.JobsSeeNoError*'

bench: deps
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) build
	$(Q)tools/bench/run.sh

run: deps
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) build
	$(Q)tools/run-demo.sh

# The man pages, generated from the CLI's own option tables by the hidden
# `hotshard man` and shipped in tools/packaging/man/ (a test checks they match).
MAN1 := $(notdir $(wildcard tools/packaging/man/*.1))
MAN5 := $(notdir $(wildcard tools/packaging/man/*.5))
man: $(BIN)
	rm -f tools/packaging/man/*.[15]
	for page in $$($(BIN) man); do $(BIN) man $$page > tools/packaging/man/$$page || exit 1; done

# make install: the binary only (no tests, no apt: run `make` first, as a user),
# the systemd unit with its ExecStart= naming $(PREFIX)/bin/hotshard, the example
# config (generated by `hotshard run --print-config`, shipped as
# tools/packaging/hotshard.toml.example), the logrotate snippet, the guide and
# the fstab mount helper /sbin/mount.hotshard (and mount.fuse.hotshard, a link to
# it, for type fuse.hotshard), and the man pages into $(MANDIR)/man1 and man5.
# The unit goes where systemd looks for $(PREFIX): /usr/local/lib/systemd/system
# by default, /usr/lib/systemd/system with PREFIX=/usr.
install: $(BIN)
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/hotshard
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed 's|/usr/local/bin/hotshard|$(BINDIR)/hotshard|g; s|/usr/local/share/doc/hotshard|$(DOCDIR)|g' \
	    tools/packaging/hotshard@.service > $(DESTDIR)$(UNITDIR)/hotshard@.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/hotshard@.service
	install -D -m 0644 tools/packaging/hotshard.toml.example $(DESTDIR)$(CONFDIR)/hotshard.toml.example
	install -D -m 0644 tools/packaging/hotshard.logrotate $(DESTDIR)$(SYSCONFDIR)/logrotate.d/hotshard
	install -D -m 0644 docs/user-guide.md $(DESTDIR)$(DOCDIR)/user-guide.md
	install -d -m 0755 $(DESTDIR)$(MOUNTHELPERDIR)
	sed 's|/usr/local/bin/hotshard|$(BINDIR)/hotshard|g' tools/packaging/mount.hotshard \
	    > $(DESTDIR)$(MOUNTHELPERDIR)/mount.hotshard
	chmod 0755 $(DESTDIR)$(MOUNTHELPERDIR)/mount.hotshard
	ln -sf mount.hotshard $(DESTDIR)$(MOUNTHELPERDIR)/mount.fuse.hotshard
	install -d -m 0755 $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5
	install -m 0644 $(addprefix tools/packaging/man/,$(MAN1)) $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(addprefix tools/packaging/man/,$(MAN5)) $(DESTDIR)$(MANDIR)/man5/

# Removes what install put there; configs of your own in $(CONFDIR) stay.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/hotshard $(DESTDIR)$(UNITDIR)/hotshard@.service \
	    $(DESTDIR)$(CONFDIR)/hotshard.toml.example $(DESTDIR)$(SYSCONFDIR)/logrotate.d/hotshard \
	    $(DESTDIR)$(DOCDIR)/user-guide.md $(DESTDIR)$(MOUNTHELPERDIR)/mount.hotshard \
	    $(DESTDIR)$(MOUNTHELPERDIR)/mount.fuse.hotshard \
	    $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(MAN1)) $(addprefix $(DESTDIR)$(MANDIR)/man5/,$(MAN5))
	-rmdir $(DESTDIR)$(CONFDIR) $(DESTDIR)$(DOCDIR) 2>/dev/null

clean:
	rm -rf $(BUILD)

format:
	clang-format -i $(foreach r,$(ROOMS),$(wildcard $(r)/*.cc $(r)/*.h)) $(wildcard tests/*/*.cc tests/*/*.h tests/*.h tests/*.cc)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
