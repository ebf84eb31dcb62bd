# hotshard: one binary (build/hotshard), one test binary, BPF skeletons built
# the libbpf-tools way. Rooms are globbed, so adding a source file needs no edit here.
#   make            build build/hotshard (installs missing packages first)
#   make test       unit + integration tests (root, /dev/fuse, BPF)
#   make run        start hotshard on a generated sample dataset
#   make bench      benchmarks; writes docs/benchmarks.md
#   V=1             show full commands
.DELETE_ON_ERROR:
# Generated BPF objects and skeletons are kept, not removed as intermediates.
.SECONDARY:
.SUFFIXES:

BUILD     ?= build
NPROC     := $(shell nproc)
PREFIX    ?= /usr/local
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

PKGS      := fuse3 libbpf liburing prometheus-cpp-pull spdlog fmt libxxhash tomlplusplus
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CXXFLAGS  ?= -O2 -g
CXXFLAGS  += -std=c++20 -Wall -Wextra -Wno-missing-field-initializers -pthread \
             -I. -I$(BUILD) -MMD -MP $(PKG_CFLAGS)
LDLIBS    += $(PKG_LIBS) -lelf -lz -pthread
BPF_CFLAGS ?= -O2 -g -Wall

BIN       := $(BUILD)/hotshard
TEST_BIN  := $(BUILD)/hotshard-tests
BENCH_BIN := $(BUILD)/hotshard-readbench

MAIN_SRC  := daemon/main.cc
LIB_SRCS  := $(filter-out $(MAIN_SRC),$(wildcard daemon/*.cc fuse/*.cc policy/*.cc bpf/*.cc tools/*.cc))
TEST_SRCS := $(wildcard tests/*.cc tests/*/*.cc)
BENCH_SRCS:= $(wildcard tools/bench/*.cc)
BPF_SRCS  := $(wildcard bpf/*.bpf.c)
BPF_OBJS  := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/bpf/%.bpf.o)
BPF_SKELS := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/bpf/%.skel.h)
VMLINUX_H := $(BUILD)/bpf/vmlinux.h

obj = $(patsubst %.cc,$(BUILD)/obj/%.o,$(1))
LIB_OBJS  := $(call obj,$(LIB_SRCS))
TEST_OBJS := $(call obj,$(TEST_SRCS))

.PHONY: all deps build test test-unit test-integration bench run install clean format
all: deps
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) build

build: $(BIN) $(TEST_BIN) $(BENCH_BIN)

deps:
	$(Q)tools/deps.sh

$(BIN): $(call obj,$(MAIN_SRC)) $(LIB_OBJS)
	$(call msg,LINK,$@)
	$(Q)$(CXX) $(CXXFLAGS) -o $@ $^ $(LDLIBS)

$(TEST_BIN): $(TEST_OBJS) $(LIB_OBJS)
	$(call msg,LINK,$@)
	$(Q)$(CXX) $(CXXFLAGS) -o $@ $^ -lgtest $(LDLIBS)

$(BENCH_BIN): $(call obj,$(BENCH_SRCS))
	$(call msg,LINK,$@)
	$(Q)$(CXX) $(CXXFLAGS) -o $@ $^ -pthread

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

test: deps
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) build
	$(Q)tools/run-tests.sh

test-unit: deps
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) build
	$(Q)tools/run-tests.sh --gtest_filter='-Integration*'

bench: deps
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) build
	$(Q)tools/bench/run.sh

run: deps
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) build
	$(Q)tools/run-demo.sh

install: all
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/hotshard

clean:
	rm -rf $(BUILD)

format:
	clang-format -i $(wildcard daemon/*.cc daemon/*.h fuse/*.cc fuse/*.h policy/*.cc policy/*.h bpf/*.cc bpf/*.h tools/*.cc tools/*.h tests/*/*.cc tests/*.h tests/*.cc)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
