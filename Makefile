# proxyshim: everything builds into build/. Targets: all (the product only) test unit e2e check
# fuzz bench stress demo install uninstall clean deps.
CC      ?= cc
CLANG   ?= clang
PYTHON  ?= /usr/bin/python3
BUILD   ?= build
FUZZ_SECONDS ?= 60

WARN    := -Wall -Wextra -Wshadow -Wconversion -Wmissing-prototypes
CFLAGS  ?= -O2 -g
override CFLAGS += -std=gnu11 $(WARN) -Iinclude -fPIC -D_GNU_SOURCE
LDHARD  := -Wl,-z,relro,-z,now,-z,noexecstack
# The version: VERSION is its one source (the library's proxyshim_version(), --version, --check,
# the logs, the counters' proxyshim_build_info, the package, the image's labels); the library's
# SONAME is libproxyshim.so.$(SOVERSION).
VERSION_NUM := $(shell cat VERSION)
SOVERSION   := 1
override CFLAGS += -DPROXYSHIM_VERSION='"$(VERSION_NUM)"'
# The wrapper and the supervisor are linked statically (static-pie) where the C library's
# static archive is there (Debian's libc6-dev has it; Fedora's is glibc-static): they then run
# in any image. Without it they are linked dynamically, and work on this machine all the same.
ifeq ($(origin STATIC_LD),undefined)
STATIC_LD := $(shell printf 'int main(void){return 0;}\n' | $(CC) -x c - -static-pie -o /dev/null 2>/dev/null && echo -static-pie)
endif

PROTO_SRC   := $(wildcard shim/proto/*.c)
# The core (no hooks): what both front-ends share. sys_direct.c gives it libc's functions where
# nothing is interposed (unit tests); the preload library brings its own (preload/real.c).
CORE_SRC    := $(filter-out shim/core/sys_direct.c,$(wildcard shim/core/*.c))
PRELOAD_SRC := $(wildcard shim/preload/*.c) $(CORE_SRC)
UNIT_SRC    := $(wildcard tests/unit/test_*.c)
HDRS        := $(wildcard include/*.h shim/*/*.h)

PROTO_OBJ   := $(PROTO_SRC:%.c=$(BUILD)/obj/%.o)
PRELOAD_OBJ := $(PRELOAD_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_BIN    := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

# The product (make, make install): needs a C compiler and the libc headers, nothing else.
PRODUCT := $(BUILD)/libproxyshim.so $(BUILD)/proxyshim $(BUILD)/proxyshim-send $(BUILD)/proxyshim-supervise
# What the tests run besides it, built by make e2e / make test (make unit builds the unit tests):
# the test server, and small programs the e2e tests run (tests/e2e/progs/*.c; speakfirst also
# _FORTIFY_SOURCE-built) and preload (tests/e2e/faults/*.c).
E2E_PROGS := $(BUILD)/testserver
E2E_PROGS += $(patsubst tests/e2e/progs/%.c,$(BUILD)/progs/%,$(wildcard tests/e2e/progs/*.c))
E2E_PROGS += $(BUILD)/progs/speakfirst-fortify
E2E_PROGS += $(patsubst tests/e2e/faults/%.c,$(BUILD)/faults/lib%.so,$(wildcard tests/e2e/faults/*.c))
PROGS := $(PRODUCT) $(E2E_PROGS)

.PHONY: all test unit e2e check fuzz bench demo clean deps
all: $(PRODUCT)

$(BUILD)/obj/%.o: %.c $(HDRS) Makefile VERSION
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -fvisibility=hidden -c $< -o $@

# The core and the protocol code under it, with libc's functions behind it: what the unit tests
# link instead of the preload library (no hook, no stub).
$(BUILD)/libcore.a: $(CORE_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/shim/core/sys_direct.o $(PROTO_OBJ)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/libproto.a: $(PROTO_OBJ)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

$(BUILD)/libproxyshim.so: $(PRELOAD_OBJ) $(PROTO_OBJ) shim/preload/libproxyshim.map
	$(CC) -shared -o $@ $(PRELOAD_OBJ) $(PROTO_OBJ) -Wl,--version-script=shim/preload/libproxyshim.map -Wl,-soname,libproxyshim.so.$(SOVERSION) -Wl,-e,shim_selfcheck_main -Wl,-Bsymbolic-functions -Wl,-z,defs $(LDHARD) -ldl -lpthread

$(BUILD)/proxyshim-send: shim/cli/proxyshim-send.c $(BUILD)/libproto.a $(HDRS) VERSION
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libproto.a $(LDHARD)

$(BUILD)/testserver: tests/e2e/testserver.c
	$(CC) $(CFLAGS) -o $@ $< -lpthread

# The wrapper: proxyshim [options] -- COMMAND.
# Linked statically (static-pie): it runs in glibc, musl (Alpine) and distroless images alike;
# --check runs the library through the image's dynamic loader instead of dlopen()ing it.
$(BUILD)/proxyshim: shim/cli/proxyshim.c $(HDRS) VERSION
	$(CC) $(CFLAGS) -DPROXYSHIM_MULTIARCH='"$(shell $(CC) -print-multiarch 2>/dev/null)"' $(STATIC_LD) -o $@ $< $(LDHARD)

# The supervisor (shim/supervise/): the core with libc's own functions behind it (what libcore.a
# holds, linked as objects so that make builds no archive it does not ship), exec()ed by the
# wrapper for proxyshim --supervise.
# Linked statically (glibc's libc.a, in libc6-dev): it runs in any image, distroless/static and
# scratch (Go's usual bases) too; its objects are built apart, with PROXYSHIM_STATIC.
SUPERVISE_SRC := $(wildcard shim/supervise/*.c) $(CORE_SRC) shim/core/sys_direct.c $(PROTO_SRC)
SUPERVISE_OBJ := $(SUPERVISE_SRC:%.c=$(BUILD)/obj-static/%.o)
$(BUILD)/obj-static/%.o: %.c $(HDRS) Makefile VERSION
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -DPROXYSHIM_STATIC -fvisibility=hidden -c $< -o $@
$(BUILD)/proxyshim-supervise: $(SUPERVISE_OBJ)
	$(CC) $(CFLAGS) $(STATIC_LD) -o $@ $(SUPERVISE_OBJ) $(LDHARD) -lpthread

$(BUILD)/progs/%: tests/e2e/progs/%.c tests/e2e/progs/common.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< -ldl

# Fault stand-ins the e2e tests preload after the shim (tests/e2e/faults/*.c).
$(BUILD)/faults/lib%.so: tests/e2e/faults/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -shared -o $@ $< -ldl
$(BUILD)/faults/libstartrace.so: tests/e2e/progs/startrace.c tests/e2e/progs/common.h

$(BUILD)/progs/speakfirst-fortify: tests/e2e/progs/speakfirst.c tests/e2e/progs/common.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -O2 -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2 -o $@ $<

# Statically linked servers for the supervised mode (tests/e2e/test_supervise.py): the test
# server with glibc and with musl, and a Go net/http server (Debian's golang-go) built with
# CGO_ENABLED=0 (static) and with cgo (dynamic; Go makes its own calls all the same).
SUPERVISE_PROGS := $(BUILD)/progs/testserver-static $(BUILD)/progs/testserver-static-musl \
	$(BUILD)/progs/go-httpserver $(BUILD)/progs/go-httpserver-cgo
E2E_PROGS += $(SUPERVISE_PROGS)
$(BUILD)/progs/testserver-static: tests/e2e/testserver.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -static -o $@ $< -lpthread
$(BUILD)/progs/testserver-static-musl: tests/e2e/testserver.c tests/e2e/musl-compat.h
	@mkdir -p $(@D)
	$(MUSL_CC) -O2 -g -std=gnu11 -D_GNU_SOURCE -static -include tests/e2e/musl-compat.h -o $@ $< -lpthread
# An i386 program (int 0x80, no libc): the filter refuses the ABI it cannot serve.
SUPERVISE_PROGS += $(BUILD)/progs/accept32
E2E_PROGS += $(BUILD)/progs/accept32
$(BUILD)/progs/accept32: tests/e2e/progs/i386/accept32.c
	@mkdir -p $(@D)
	$(CC) -m32 -nostdlib -static -fno-pie -no-pie -ffreestanding -O2 -o $@ $<
GO ?= go
$(BUILD)/progs/go-httpserver $(BUILD)/progs/go-httpserver-cgo: $(BUILD)/progs/go-%: tests/e2e/progs/go/httpserver/main.go
	@mkdir -p $(@D)
	cd tests/e2e/progs/go/httpserver && CGO_ENABLED=$(if $(findstring cgo,$*),1,0) $(GO) build -o $(abspath $@) main.go

# The test server built against musl (Debian musl-tools), to load the glibc-built library into
# a musl program. musl has no close_range(): tests/e2e/musl-compat.h supplies it.
MUSL_CC ?= musl-gcc
$(BUILD)/testserver-musl: tests/e2e/testserver.c tests/e2e/musl-compat.h
	$(MUSL_CC) -O2 -g -std=gnu11 -D_GNU_SOURCE -include tests/e2e/musl-compat.h -o $@ $< -lpthread
e2e: $(BUILD)/testserver-musl

# ---- install ----
# The library as libproxyshim.so.$(SOVERSION) (its SONAME) with libproxyshim.so beside it (the
# name users put in LD_PRELOAD), the supervisor in PKGLIBDIR (LIBDIR/proxyshim: the wrapper looks
# in ../lib/proxyshim), the application API header (include/proxyshim.h only: the pp_* protocol
# code is internal), man pages (their /usr/local/lib/libproxyshim.so becomes LIBDIR's), the wrapper's
# bash completion when the tree has it (shim/cli/proxyshim.bash).
PREFIX      ?= /usr/local
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
LIBDIR      ?= $(PREFIX)/lib
PKGLIBDIR   ?= $(LIBDIR)/proxyshim
INCLUDEDIR  ?= $(PREFIX)/include
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
# make uninstall refuses while this file names the library (tests point it elsewhere).
LD_SO_PRELOAD ?= /etc/ld.so.preload
INSTALL     ?= install
MAN1        := man/proxyshim.1 man/proxyshim-send.1
MAN5        := man/proxyshim.conf.5
MAN7        := man/libproxyshim.7
LIBFILE     := libproxyshim.so.$(SOVERSION)
COMPLETION  := $(wildcard shim/cli/proxyshim.bash)

.PHONY: install uninstall
install: $(BUILD)/libproxyshim.so $(BUILD)/proxyshim $(BUILD)/proxyshim-send $(BUILD)/proxyshim-supervise
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGLIBDIR) $(DESTDIR)$(INCLUDEDIR) \
	  $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7
	$(INSTALL) -m 755 $(BUILD)/proxyshim-supervise $(DESTDIR)$(PKGLIBDIR)/proxyshim-supervise
	$(INSTALL) -m 644 $(BUILD)/libproxyshim.so $(DESTDIR)$(LIBDIR)/$(LIBFILE)
	ln -sfn $(LIBFILE) $(DESTDIR)$(LIBDIR)/libproxyshim.so
	$(INSTALL) -m 755 $(BUILD)/proxyshim $(BUILD)/proxyshim-send $(DESTDIR)$(BINDIR)/
	$(INSTALL) -m 644 include/proxyshim.h $(DESTDIR)$(INCLUDEDIR)/proxyshim.h
	for m in $(MAN1) $(MAN5) $(MAN7); do \
	  d=$(DESTDIR)$(MANDIR)/man$${m##*.}/$${m##*/}; \
	  sed 's|/usr/local/lib/libproxyshim\.so|$(LIBDIR)/libproxyshim.so|g' $$m > $$d && chmod 644 $$d || exit 1; \
	done
ifneq ($(COMPLETION),)
	$(INSTALL) -d $(DESTDIR)$(BASHCOMPDIR)
	$(INSTALL) -m 644 $(COMPLETION) $(DESTDIR)$(BASHCOMPDIR)/proxyshim
endif

# Removing a library that /etc/ld.so.preload names would make every later command print an
# ld.so error: refused, with the reason, while any word of that file (ld.so reads words,
# separated by spaces, tabs, newlines or colons) is a path that resolves to the installed file
# or its symlink, or the bare name (which ld.so looks up in its search path).
uninstall:
	@lib=$(DESTDIR)$(LIBDIR)/$(LIBFILE); link=$(DESTDIR)$(LIBDIR)/libproxyshim.so; \
	real=$$(readlink -f "$$lib" 2>/dev/null); \
	if [ -r '$(LD_SO_PRELOAD)' ]; then \
	  set -f; \
	  for w in $$(tr ':' ' ' < '$(LD_SO_PRELOAD)'); do \
	    hit=; \
	    case "$$w" in libproxyshim.so|$(LIBFILE)) hit=1 ;; esac; \
	    if [ -z "$$hit" ] && [ -e "$$w" ] && [ -n "$$real" ] && \
	       [ "$$(readlink -f "$$w")" = "$$real" ]; then hit=1; fi; \
	    if [ -n "$$hit" ]; then \
	      echo "make uninstall: refused: $(LD_SO_PRELOAD) names $$w, the library this would remove ($$link -> $$lib):" >&2; \
	      echo "  every program would then print an ld.so error; remove that line from $(LD_SO_PRELOAD) first" >&2; \
	      exit 1; \
	    fi; \
	  done; \
	fi
	rm -f $(DESTDIR)$(PKGLIBDIR)/proxyshim-supervise
	-rmdir $(DESTDIR)$(PKGLIBDIR) 2>/dev/null
	rm -f $(DESTDIR)$(LIBDIR)/libproxyshim.so $(DESTDIR)$(LIBDIR)/$(LIBFILE) $(DESTDIR)$(BINDIR)/proxyshim \
	  $(DESTDIR)$(BINDIR)/proxyshim-send $(DESTDIR)$(INCLUDEDIR)/proxyshim.h \
	  $(DESTDIR)$(BASHCOMPDIR)/proxyshim \
	  $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(MAN1))) \
	  $(addprefix $(DESTDIR)$(MANDIR)/man5/,$(notdir $(MAN5))) \
	  $(addprefix $(DESTDIR)$(MANDIR)/man7/,$(notdir $(MAN7)))

# ---- the Debian package (debian/) ----
# make deb: dpkg-buildpackage -us -uc -b on a copy of the tree in build/deb/proxyshim-VERSION
# (the source tree stays clean; the .deb, .buildinfo and .changes land in build/deb/), then
# lintian, which must report no error and no warning (its output: build/deb/lintian.txt).
# make deb-test: that, then tests/package/ installs the package into a scratch root (never
# into this machine) and runs the demo with it.
DEB_DIR   := $(BUILD)/deb
DEB_SRC   := $(DEB_DIR)/proxyshim-$(VERSION_NUM)
DEB_JOBS  ?= 2

.PHONY: deb deb-test
deb:
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_SRC)
	tar -cf - --exclude=./build --exclude=./$(BUILD) --exclude=./.git --exclude=node_modules \
	  --exclude=__pycache__ --exclude=.pytest_cache --exclude=./tests/fuzz/corpus-run . | tar -xf - -C $(DEB_SRC)
	cd $(DEB_SRC) && dpkg-buildpackage -us -uc -b -j$(DEB_JOBS)
	lintian --fail-on error,warning --display-info --pedantic $(DEB_DIR)/proxyshim_$(VERSION_NUM)_*.changes \
	  > $(DEB_DIR)/lintian.txt 2>&1; rc=$$?; cat $(DEB_DIR)/lintian.txt; \
	  [ $$rc = 0 ] || { echo "make deb: lintian failed (exit $$rc)" >&2; exit 1; }

deb-test: deb
	DEB_DIR=$(abspath $(DEB_DIR)) $(PYTHON) -m pytest -q tests/package $(PYTEST_ARGS)

# Unit tests of the core (test_fdtable, test_trust, test_addr, test_handoff, test_settings,
# test_conn ...) link libcore.a: the core with libc's functions behind it, no hook and no stub.
# pollmerge is the preload library's: it links alone (what it asks of the parks is a function
# the test passes).
$(BUILD)/tests/test_pollmerge: tests/unit/test_pollmerge.c shim/preload/pollmerge.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Ishim -o $@ tests/unit/test_pollmerge.c shim/preload/pollmerge.c -lcmocka

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libcore.a $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Ishim -o $@ $< $(BUILD)/libcore.a -lcmocka -ldl -lpthread

# ---- tests ----
deps:
	@tests/deps.sh

unit: $(UNIT_BIN)
	@test -n "$(UNIT_BIN)" || { echo "no unit test found: failing" >&2; exit 1; }
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

e2e: $(PROGS)
	$(PYTHON) -m pytest -q tests/e2e $(PYTEST_ARGS)

test: deps
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory e2e

# Sanitizer build of the unit tests (ASan + UBSan), in a tree of its own.
check: deps
	$(MAKE) --no-print-directory BUILD=build/san CC=$(CLANG) \
	  CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
	  unit

# ---- fuzzing (libFuzzer) ----
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
$(BUILD)/fuzz/%: tests/fuzz/%.c $(PROTO_SRC) $(HDRS)
	@mkdir -p $(@D)
	$(CLANG) -O1 -g -std=gnu11 -D_GNU_SOURCE -Iinclude -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=all -o $@ $< $(PROTO_SRC)

fuzz: $(FUZZ_BIN)
	@tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_BIN)

# ---- hardening: tests/e2e/test_hardening.py (in make test) and make stress (tests/stress/) ----
# The library under ASan+UBSan and under TSan (gcc's runtimes), each in a tree of its own. A
# sanitized library is loaded after its runtime:
#   LD_PRELOAD="$$(gcc -print-file-name=libasan.so) build/asan/libproxyshim.so" (libtsan.so alike)
SAN_CC  ?= gcc
SAN_LIB  = $(SAN_CC) -std=gnu11 $(WARN) -DPROXYSHIM_VERSION='"$(VERSION_NUM)"' -Iinclude -fPIC -D_GNU_SOURCE -fvisibility=hidden -shared \
	   -o $@ $(PRELOAD_SRC) $(PROTO_SRC) -Wl,--version-script=shim/preload/libproxyshim.map \
	   -Wl,-Bsymbolic-functions -Wl,-z,defs $(LDHARD) -ldl -lpthread
$(BUILD)/asan/libproxyshim.so: $(PRELOAD_SRC) $(PROTO_SRC) $(HDRS) shim/preload/libproxyshim.map
	@mkdir -p $(@D)
	$(SAN_LIB) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

$(BUILD)/tsan/libproxyshim.so: $(PRELOAD_SRC) $(PROTO_SRC) $(HDRS) shim/preload/libproxyshim.map
	@mkdir -p $(@D)
	$(SAN_LIB) -O1 -g -fno-omit-frame-pointer -fsanitize=thread

# The protocol code as a plain shared object: the end-to-end fuzz's oracle (ctypes).
$(BUILD)/stress/libpp.so: $(PROTO_SRC) $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -shared -o $@ $(PROTO_SRC)

$(BUILD)/stress/faultserver: tests/stress/faultserver.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< -lpthread

$(BUILD)/stress/libinject.so: tests/stress/inject.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -shared -o $@ $< -ldl

HARDEN := $(BUILD)/asan/libproxyshim.so $(BUILD)/tsan/libproxyshim.so $(BUILD)/stress/libpp.so \
	  $(BUILD)/stress/faultserver $(BUILD)/stress/libinject.so
e2e: $(HARDEN)

.PHONY: stress
stress: deps $(PROGS) $(HARDEN)
	@tests/stress/run.sh

bench: $(PRODUCT) $(BUILD)/testserver $(BUILD)/progs/fdpass $(BUILD)/progs/testserver-static $(BUILD)/progs/go-httpserver
	@tests/bench/run.sh

demo: $(PRODUCT)
	@tests/demo.sh

# docker/Dockerfile and docker/examples/legacy-nginx built with buildah and run with podman and
# runc (tests/images/): root only. Local base images from debootstrap, the container storage in
# $(BUILD)/images/ (kept: the next run reuses them; several GB with vfs).
.PHONY: images
images: $(PRODUCT)
	@tests/deps.sh images
	PROXYSHIM_IMAGES_DIR=$(abspath $(BUILD))/images $(PYTHON) -m pytest -q tests/images $(PYTEST_ARGS)

clean:
	rm -rf $(BUILD)

# Parse bench (tests/bench/parse_instructions.sh): the protocol code compiled as in the shared
# library; parse_bench_table forces the portable CRC32C table path.
$(BUILD)/bench/parse_bench $(BUILD)/bench/parse_bench_table: $(BUILD)/bench/%: tests/bench/parse_bench.c $(PROTO_SRC) $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -fvisibility=hidden $(if $(findstring _table,$*),-DPP_CRC32C_FORCE_TABLE) -o $@ $< $(PROTO_SRC)

# Performance bench (tests/bench/perf.py): the load generator, the bulk receiver, the
# start-up timer, the EAGAIN leak check and the shim's per-connection state size.
$(BUILD)/bench/loadgen: tests/bench/loadgen.c tests/bench/bench.h $(BUILD)/libproto.a $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libproto.a

$(BUILD)/bench/bulksink $(BUILD)/bench/spawn $(BUILD)/bench/eagain $(BUILD)/bench/consume: $(BUILD)/bench/%: tests/bench/%.c tests/bench/bench.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $<

$(BUILD)/bench/shimsize: tests/bench/shimsize.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Ishim -o $@ $<

# Scenario H's floor: an empty library, linked as libproxyshim.so is (bar its version script
# and -Bsymbolic-functions, which have nothing to act on here).
$(BUILD)/bench/empty.so: tests/bench/empty.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -shared -fPIC -o $@ $< $(LDHARD)
