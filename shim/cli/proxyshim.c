/* proxyshim: runs a command under the shim (LD_PRELOAD plus the PROXYSHIM_* variables), or with
 * --check validates a configuration with the library's own validator and prints its settings. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#define PROG "proxyshim"
#define LIBNAME "libproxyshim.so"
#define SUPERVISOR "proxyshim-supervise"
#define EXIT_USAGE 2
#define EXIT_CANNOT_RUN 126 /* found, but cannot run under the shim (as env(1), nice(1)) */
#define EXIT_NOT_FOUND 127
/* Debian's private directory for preload libraries: /usr/lib/<triplet>/proxyshim, the
 * triplet the compiler's (-print-multiarch, from the Makefile), else the one this build
 * targets, as Debian names it. */
#ifndef PROXYSHIM_MULTIARCH
#define PROXYSHIM_MULTIARCH ""
#endif
#if defined(__x86_64__) && defined(__ILP32__)
#define MULTIARCH_GUESS "x86_64-linux-gnux32"
#elif defined(__x86_64__)
#define MULTIARCH_GUESS "x86_64-linux-gnu"
#elif defined(__i386__)
#define MULTIARCH_GUESS "i386-linux-gnu"
#elif defined(__aarch64__)
#define MULTIARCH_GUESS "aarch64-linux-gnu"
#elif defined(__arm__) && defined(__ARM_PCS_VFP)
#define MULTIARCH_GUESS "arm-linux-gnueabihf"
#elif defined(__arm__)
#define MULTIARCH_GUESS "arm-linux-gnueabi"
#elif defined(__riscv) && __riscv_xlen == 64
#define MULTIARCH_GUESS "riscv64-linux-gnu"
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define MULTIARCH_GUESS "powerpc64le-linux-gnu"
#elif defined(__s390x__)
#define MULTIARCH_GUESS "s390x-linux-gnu"
#elif defined(__loongarch64)
#define MULTIARCH_GUESS "loongarch64-linux-gnu"
#else
#define MULTIARCH_GUESS ""
#endif

#include "cli.h"
#include "../core/settings_table.h"

/* --help: this, the options that set a variable (from the settings table), then help_tail. */
static const char help_head[] =
	"NAME\n"
	"    proxyshim - run a server so that it sees the client address of PROXY protocol headers\n"
	"\n"
	"SYNOPSIS\n"
	"    proxyshim [OPTIONS] [--] COMMAND [ARGS...]\n"
	"    proxyshim [OPTIONS] --check [-- COMMAND]\n"
	"    proxyshim --help | --version\n"
	"\n"
	"DESCRIPTION\n"
	"    Runs COMMAND (searched in PATH) with libproxyshim.so preloaded: LD_PRELOAD gets the\n"
	"    library in front of what it already holds, and each option given sets its\n"
	"    PROXYSHIM_* variable. Variables already in the environment and not given as options\n"
	"    pass through unchanged. The shim reads the PROXY header of every connection from a\n"
	"    trusted peer and gives the program the client address in accept(), accept4() and\n"
	"    getpeername(); see libproxyshim(7).\n"
	"\n"
	"    The library is the file PROXYSHIM_LIBRARY names when that is set (that one or\n"
	"    none: proxyshim fails when it is not there). Otherwise it is looked up next to\n"
	"    this program (a build tree), then in ../lib and ../lib/proxyshim relative to it\n"
	"    (an installed PREFIX/bin/proxyshim), then in /usr/lib/TRIPLET/proxyshim (Debian's\n"
	"    multiarch directory, TRIPLET this build's, e.g. x86_64-linux-gnu).\n"
	"\n"
	"    A program LD_PRELOAD never reaches runs supervised instead: one without an ELF\n"
	"    interpreter (statically linked, as Go programs usually are), or a Go program (its\n"
	"    build-info section or Go note: Go makes its own system calls). A supervisor process\n"
	"    (proxyshim-supervise) then serves the program's accept(), accept4() and\n"
	"    getpeername() through seccomp user notification, with the same settings; it needs\n"
	"    Linux 5.14 and pidfd_getfd() (refused by some container seccomp profiles), probes\n"
	"    them first and exits 126 naming what is refused.\n"
	"\n"
	"    A set-uid, set-gid or file-capability program runs in the kernel's\n"
	"    secure-execution mode, where the shim stays inert; proxyshim warns and runs it.\n"
	"    Scripts (#!) are run; their interpreter inherits the environment.\n"
	"\n"
	"OPTIONS\n";

static const char help_tail[] =
	"    --check             Validate the configuration with the library's own validator and\n"
	"                        print the effective settings, one NAME=value a line, after a\n"
	"                        library= line naming the library found and a version= line\n"
	"                        with its version. Fails (exit 1, the reason on stderr) when\n"
	"                        the shim would be inactive. With -- COMMAND, also check that\n"
	"                        COMMAND can run under the shim; it is not run.\n"
	"    --supervise         Run COMMAND supervised (seccomp user notification) even when\n"
	"                        LD_PRELOAD would reach it.\n"
	"    --no-supervise      Never supervise: a statically linked COMMAND is refused, a Go\n"
	"                        program gets LD_PRELOAD as any other.\n"
	"    --no-io-uring       Supervised: io_uring_setup() fails with ENOSYS, so that a program\n"
	"                        that can fall back to accept() does (its accepts through io_uring\n"
	"                        would pass the supervisor by: the header reaching it as data).\n"
	"    -h, --help          Print this page and exit.\n"
	"    --version           Print the version and exit. It takes no value and runs no\n"
	"                        COMMAND: given one (the old spelling of --protocol V), it is a\n"
	"                        usage error.\n"
	"\n"
	"    An option's value may also be given as --opt=VALUE. The first argument that is not\n"
	"    an option starts COMMAND; -- ends the options explicitly.\n"
	"\n"
	"EXIT STATUS\n"
	"    COMMAND's own status once it runs. Before that:\n"
	"    0    --help or --version; --check: the shim would be active.\n"
	"    1    an invalid setting (the library's one-line message names the variable and the\n"
	"         value; with COMMAND the same line comes from COMMAND's start-up), a bad\n"
	"         configuration file, or the library cannot be found or loaded; --check: also\n"
	"         when the shim would be inactive (no trusted peers set), the reason on stderr.\n"
	"    2    bad arguments.\n"
	"    126  COMMAND cannot run under the shim: statically linked (with --no-supervise),\n"
	"         built for another architecture than the library, or not executable; or the\n"
	"         supervised mode is refused by the kernel or a seccomp profile.\n"
	"    127  COMMAND not found.\n"
	"\n"
	"EXAMPLES\n"
	"    Behind an AWS NLB in a 10.0.0.0/16 VPC, PROXY v2 only:\n"
	"        proxyshim --trusted 10.0.0.0/16 --protocol v2 -- nginx -g 'daemon off;'\n"
	"\n"
	"    SSH behind a balancer that sends the header with the client's first bytes:\n"
	"        proxyshim --trusted 10.0.0.0/16 --consume lazy -- /usr/sbin/sshd -D\n"
	"\n"
	"    See what a configuration amounts to:\n"
	"        proxyshim --trusted '10.0.0.0/8 ::1' --ports 443,8000-8099 --check\n"
	"\n"
	"SEE ALSO\n"
	"    libproxyshim(7), proxyshim-send(1)\n";

/* The settings, from the library's table: the options that set a variable are its rows with
 * a flag. */
static const struct shim_setting shim_settings[SHIM_NSETTINGS] = SHIM_SETTINGS_ROWS;
#define NVARS SHIM_NSETTINGS

struct opts {
	const char *values[NVARS]; /* by setting; NULL: not given */
	int check;
	int version; /* --version */
	int supervise; /* 1: --supervise, -1: --no-supervise, 0: chosen by COMMAND */
	int no_io_uring; /* --no-io-uring: the supervised program's io_uring_setup() fails ENOSYS */
	char **cmd; /* NULL-terminated, NULL when none */
};

/* The options that set a variable, each with its lines from the table: "--flag META", then
 * "NAME: " and the help text, its further lines under its first. */
static void print_help(void)
{
	fputs(help_head, stdout);
	for (int rank = 0; rank < NVARS; rank++)
		for (size_t k = 0; k < NVARS; k++) {
			const struct shim_setting *t = &shim_settings[k];
			char opt[32];
			const char *h;

			if (t->flag == NULL || t->help_rank != rank)
				continue;
			snprintf(opt, sizeof(opt), "%s %s", t->flag, t->meta);
			printf("    %-20s%s: ", opt, t->name);
			for (h = t->help; *h; h++) {
				putchar(*h);
				if (*h == '\n')
					fputs("                        ", stdout);
			}
			putchar('\n');
		}
	fputs(help_tail, stdout);
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	int i;

	memset(o, 0, sizeof(*o));
	for (i = 1; i < argc; i++) {
		char *arg = argv[i], *v = NULL;
		size_t k;

		if (strcmp(arg, "--") == 0) {
			i++;
			break;
		}
		if (arg[0] != '-' || arg[1] == '\0')
			break;
		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			print_help();
			exit(fflush(stdout) == 0 ? 0 : 1);
		}
		if (strcmp(arg, "--check") == 0) {
			o->check = 1;
			continue;
		}
		/* --version was the PROXY version's option before --protocol: old command lines
		 * give it a value, which must not go unnoticed (as the COMMAND, or ignored). */
		if (strcmp(arg, "--version") == 0) {
			o->version = 1;
			continue;
		}
		if (strncmp(arg, "--version=", 10) == 0)
			usage_error("--version takes no value (the PROXY protocol version is --protocol %s)",
				    arg + 10);
		if (strcmp(arg, "--supervise") == 0 || strcmp(arg, "--no-supervise") == 0) {
			int want = arg[2] == 's' ? 1 : -1;
			if (o->supervise != 0)
				usage_error("--supervise and --no-supervise given together or twice");
			o->supervise = want;
			continue;
		}
		if (strcmp(arg, "--no-io-uring") == 0) {
			if (o->no_io_uring)
				usage_error("--no-io-uring given twice");
			o->no_io_uring = 1;
			continue;
		}
		for (k = 0; k < NVARS; k++)
			if (shim_settings[k].flag != NULL &&
			    (v = opt_value(argv, argc, &i, shim_settings[k].flag)) != NULL)
				break;
		if (k == NVARS)
			usage_error("unknown option '%s' (see --help)", arg);
		if (o->values[k] != NULL)
			usage_error("%s given twice", shim_settings[k].flag);
		o->values[k] = v;
	}
	if (o->version) {
		if (i < argc)
			usage_error("--version takes no value and runs no COMMAND, but '%s' follows it "
				    "(the PROXY protocol version is --protocol V)", argv[i]);
		print_version();
	}
	if (o->no_io_uring && o->supervise < 0)
		usage_error("--no-io-uring is for the supervised mode: not with --no-supervise");
	if (i < argc)
		o->cmd = argv + i;
	if (o->cmd == NULL && !o->check)
		usage_error("missing COMMAND (see --help)");
}

/* The directory this program runs from, from /proc/self/exe. */
static void self_dir(char *out, size_t cap)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (n <= 0)
		die(1, "cannot read /proc/self/exe: %s", n < 0 ? strerror(errno) : "empty");
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	if (slash == NULL)
		die(1, "cannot tell the directory of '%s'", exe);
	*slash = '\0';
	if ((size_t)snprintf(out, cap, "%s", exe[0] ? exe : "/") >= cap)
		die(1, "path too long: %s", exe);
}

/* Finds the library: the file PROXYSHIM_LIBRARY names, or else the first of: next to this
 * program (build tree), ../lib, ../lib/proxyshim (PREFIX/bin/proxyshim), Debian's multiarch
 * private directory. The result is absolute and canonical, as LD_PRELOAD needs. */
static void find_library(char *out)
{
	static const char *const rel[] = {"/" LIBNAME, "/../lib/" LIBNAME, "/../lib/proxyshim/" LIBNAME};
	const char *multiarch = PROXYSHIM_MULTIARCH[0] ? PROXYSHIM_MULTIARCH : MULTIARCH_GUESS;
	const char *env = getenv("PROXYSHIM_LIBRARY");
	char dir[PATH_MAX], path[PATH_MAX + 64], where[64] = "";
	struct stat st;
	size_t i;

	if (env != NULL && env[0] != '\0') {
		if (stat(env, &st) != 0)
			die(1, "PROXYSHIM_LIBRARY=%s: %s", env, strerror(errno));
		if (!S_ISREG(st.st_mode))
			die(1, "PROXYSHIM_LIBRARY=%s: not a regular file", env);
		if (realpath(env, out) == NULL)
			die(1, "PROXYSHIM_LIBRARY=%s: %s", env, strerror(errno));
		return;
	}
	self_dir(dir, sizeof(dir));
	for (i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
		snprintf(path, sizeof(path), "%s%s", dir, rel[i]);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && realpath(path, out) != NULL)
			return;
	}
	if (multiarch[0] != '\0') {
		snprintf(where, sizeof(where), "/usr/lib/%s/proxyshim", multiarch);
		snprintf(path, sizeof(path), "%s/" LIBNAME, where);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && realpath(path, out) != NULL)
			return;
	}
	die(1, "cannot find " LIBNAME ": PROXYSHIM_LIBRARY is not set and it is not in %s, "
	    "%s/../lib, %s/../lib/proxyshim%s%s", dir, dir, dir, where[0] ? " or " : "", where);
}

/* COMMAND as execvp() would find it: as given when it holds a slash, else the first
 * executable regular file of that name in PATH. */
static int find_command(const char *cmd, char *out, size_t cap)
{
	const char *path, *p;
	struct stat st;

	if (cmd[0] == '\0')
		return -ENOENT;
	if (strchr(cmd, '/') != NULL) {
		if ((size_t)snprintf(out, cap, "%s", cmd) >= cap)
			return -ENAMETOOLONG;
		return stat(out, &st) == 0 ? 0 : -errno;
	}
	path = getenv("PATH");
	if (path == NULL)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path;; p++) {
		const char *end = strchr(p, ':');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		int w = n ? snprintf(out, cap, "%.*s/%s", (int)n, p, cmd) : snprintf(out, cap, "%s", cmd);

		if (w > 0 && (size_t)w < cap && stat(out, &st) == 0 && S_ISREG(st.st_mode) &&
		    access(out, X_OK) == 0)
			return 0;
		if (end == NULL)
			return -ENOENT;
		p = end;
	}
}

/* What an ELF file's headers say, as far as preloading is concerned. */
struct elf_info {
	int is_elf;
	int is_script;
	unsigned char cls;  /* ELFCLASS32/64 */
	unsigned char data; /* ELFDATA2LSB/MSB */
	uint16_t machine;
	int has_interp;
	int is_go; /* a Go note (PT_NOTE "Go") or a .go.buildinfo section */
	uint64_t entry; /* e_entry: a library has one from 1.0.0 (--check runs it) */
};

static uint16_t get16(const unsigned char *p, unsigned char data)
{
	return data == ELFDATA2MSB ? (uint16_t)(p[0] << 8 | p[1]) : (uint16_t)(p[1] << 8 | p[0]);
}

static uint32_t get32(const unsigned char *p, unsigned char data)
{
	return data == ELFDATA2MSB ? (uint32_t)get16(p, data) << 16 | get16(p + 2, data)
				   : (uint32_t)get16(p + 2, data) << 16 | get16(p, data);
}

static uint64_t get64(const unsigned char *p, unsigned char data)
{
	return data == ELFDATA2MSB ? (uint64_t)get32(p, data) << 32 | get32(p + 4, data)
				   : (uint64_t)get32(p + 4, data) << 32 | get32(p, data);
}

/* Whether the PT_NOTE segment of program header ph holds a note of owner "Go" (the Go
 * linker's build ID, type 4), as Go's own tools tell a Go binary. */
static int go_note(int fd, const unsigned char *ph, const struct elf_info *info)
{
	unsigned char buf[4096];
	uint64_t off, size;
	size_t at = 0;
	ssize_t n;

	if (info->cls == ELFCLASS64) {
		off = get64(ph + offsetof(Elf64_Phdr, p_offset), info->data);
		size = get64(ph + offsetof(Elf64_Phdr, p_filesz), info->data);
	} else {
		off = get32(ph + offsetof(Elf32_Phdr, p_offset), info->data);
		size = get32(ph + offsetof(Elf32_Phdr, p_filesz), info->data);
	}
	if (off > (uint64_t)LONG_MAX)
		return 0;
	n = pread(fd, buf, size < sizeof(buf) ? (size_t)size : sizeof(buf), (off_t)off);
	while (n > 0 && at + 12 <= (size_t)n) {
		uint32_t namesz = get32(buf + at, info->data), descsz = get32(buf + at + 4, info->data);
		if (namesz == 3 && at + 15 <= (size_t)n && memcmp(buf + at + 12, "Go", 3) == 0)
			return 1;
		at += 12 + ((namesz + 3u) & ~3u) + ((descsz + 3u) & ~3u);
	}
	return 0;
}

/* Whether the section headers name a .go.buildinfo section (a Go binary whose note was
 * stripped). 0 when unsure. */
static int go_section(int fd, const unsigned char *eh, const struct elf_info *info)
{
	static const char want[] = ".go.buildinfo";
	unsigned char sh[64], names[65536];
	uint64_t shoff, stroff, strsize;
	uint16_t shentsize, shnum, shstrndx;
	int is64 = info->cls == ELFCLASS64;
	size_t shsz = is64 ? sizeof(Elf64_Shdr) : sizeof(Elf32_Shdr);
	ssize_t got;

	shoff = is64 ? get64(eh + offsetof(Elf64_Ehdr, e_shoff), info->data)
		     : get32(eh + offsetof(Elf32_Ehdr, e_shoff), info->data);
	shentsize = get16(eh + (is64 ? offsetof(Elf64_Ehdr, e_shentsize) : offsetof(Elf32_Ehdr, e_shentsize)), info->data);
	shnum = get16(eh + (is64 ? offsetof(Elf64_Ehdr, e_shnum) : offsetof(Elf32_Ehdr, e_shnum)), info->data);
	shstrndx = get16(eh + (is64 ? offsetof(Elf64_Ehdr, e_shstrndx) : offsetof(Elf32_Ehdr, e_shstrndx)), info->data);
	if (shoff == 0 || shentsize < shsz || shstrndx >= shnum || shoff > (uint64_t)LONG_MAX / 2)
		return 0;
	if (pread(fd, sh, shsz, (off_t)(shoff + (uint64_t)shstrndx * shentsize)) != (ssize_t)shsz)
		return 0;
	stroff = is64 ? get64(sh + offsetof(Elf64_Shdr, sh_offset), info->data)
		      : get32(sh + offsetof(Elf32_Shdr, sh_offset), info->data);
	strsize = is64 ? get64(sh + offsetof(Elf64_Shdr, sh_size), info->data)
		       : get32(sh + offsetof(Elf32_Shdr, sh_size), info->data);
	if (stroff > (uint64_t)LONG_MAX)
		return 0;
	got = pread(fd, names, strsize < sizeof(names) ? (size_t)strsize : sizeof(names), (off_t)stroff);
	if (got <= 0)
		return 0;
	for (uint16_t i = 0; i < shnum; i++) {
		uint32_t name;
		if (pread(fd, sh, shsz, (off_t)(shoff + (uint64_t)i * shentsize)) != (ssize_t)shsz)
			return 0;
		name = get32(sh, info->data); /* sh_name: the first field of both layouts */
		if (name < (uint64_t)got && (size_t)got - name >= sizeof(want) &&
		    memcmp(names + name, want, sizeof(want)) == 0)
			return 1;
	}
	return 0;
}

/* Reads the ELF and program headers of path with pread(): 0, or a negative errno (-ENOEXEC
 * for a truncated or inconsistent ELF file). Not ELF: 0 with is_elf 0. */
static int elf_read(const char *path, struct elf_info *info)
{
	unsigned char eh[64], ph[64];
	uint64_t phoff;
	uint16_t phentsize, phnum, i;
	ssize_t n;
	int fd, rc = 0;

	memset(info, 0, sizeof(*info));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = pread(fd, eh, sizeof(eh), 0);
	if (n < 0) {
		rc = -errno;
		goto out;
	}
	if (n >= 2 && eh[0] == '#' && eh[1] == '!') {
		info->is_script = 1;
		goto out;
	}
	if (n < EI_NIDENT || memcmp(eh, ELFMAG, SELFMAG) != 0)
		goto out;
	info->is_elf = 1;
	info->cls = eh[EI_CLASS];
	info->data = eh[EI_DATA];
	if ((info->cls != ELFCLASS32 && info->cls != ELFCLASS64) ||
	    (info->data != ELFDATA2LSB && info->data != ELFDATA2MSB)) {
		rc = -ENOEXEC;
		goto out;
	}
	if (info->cls == ELFCLASS64) {
		if (n < (ssize_t)sizeof(Elf64_Ehdr)) {
			rc = -ENOEXEC;
			goto out;
		}
		info->machine = get16(eh + offsetof(Elf64_Ehdr, e_machine), info->data);
		info->entry = get64(eh + offsetof(Elf64_Ehdr, e_entry), info->data);
		phoff = get64(eh + offsetof(Elf64_Ehdr, e_phoff), info->data);
		phentsize = get16(eh + offsetof(Elf64_Ehdr, e_phentsize), info->data);
		phnum = get16(eh + offsetof(Elf64_Ehdr, e_phnum), info->data);
		if (phentsize < sizeof(Elf64_Phdr)) {
			rc = phnum ? -ENOEXEC : 0;
			goto out;
		}
	} else {
		if (n < (ssize_t)sizeof(Elf32_Ehdr)) {
			rc = -ENOEXEC;
			goto out;
		}
		info->machine = get16(eh + offsetof(Elf32_Ehdr, e_machine), info->data);
		info->entry = get32(eh + offsetof(Elf32_Ehdr, e_entry), info->data);
		phoff = get32(eh + offsetof(Elf32_Ehdr, e_phoff), info->data);
		phentsize = get16(eh + offsetof(Elf32_Ehdr, e_phentsize), info->data);
		phnum = get16(eh + offsetof(Elf32_Ehdr, e_phnum), info->data);
		if (phentsize < sizeof(Elf32_Phdr)) {
			rc = phnum ? -ENOEXEC : 0;
			goto out;
		}
	}
	for (i = 0; i < phnum; i++) {
		uint64_t off = phoff + (uint64_t)i * phentsize;
		size_t want = info->cls == ELFCLASS64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);
		if (off > (uint64_t)LONG_MAX || pread(fd, ph, want, (off_t)off) != (ssize_t)want) {
			rc = -ENOEXEC;
			goto out;
		}
		/* p_type is the first field of both layouts. */
		if (get32(ph, info->data) == PT_INTERP)
			info->has_interp = 1;
		else if (get32(ph, info->data) == PT_NOTE && !info->is_go)
			info->is_go = go_note(fd, ph, info);
	}
	if (!info->is_go)
		info->is_go = go_section(fd, eh, info);
out:
	close(fd);
	return rc;
}

static const char *machine_name(uint16_t m)
{
	switch (m) {
	case EM_386: return "i386";
	case EM_X86_64: return "x86-64";
	case EM_ARM: return "arm";
	case EM_AARCH64: return "aarch64";
	case EM_RISCV: return "riscv";
	case EM_PPC64: return "ppc64";
	case EM_S390: return "s390";
	default: return "another architecture";
	}
}

/* Refuses (exits) when the program at path cannot run under the shim; warns when it would run
 * with the shim inert. Returns 1 when it is to run supervised: LD_PRELOAD never reaches it
 * (no ELF interpreter, or Go, which makes its own system calls), or --supervise (want 1);
 * never with --no-supervise (want -1). */
static int check_command(const char *cmd, const char *path, const char *lib, int want)
{
	struct elf_info prog, shim;
	struct stat st;
	int rc;

	if (stat(path, &st) != 0)
		die(EXIT_NOT_FOUND, "%s: %s", cmd, strerror(errno));
	if (!S_ISREG(st.st_mode) || access(path, X_OK) != 0)
		die(EXIT_CANNOT_RUN, "%s: not an executable file", path);
	rc = elf_read(path, &prog);
	if (rc == -EACCES)
		return want > 0; /* execute-only: the kernel will judge it */
	if (rc < 0)
		die(EXIT_CANNOT_RUN, "%s: cannot read its ELF headers: %s", path, strerror(-rc));
	if (want >= 0 && (want > 0 || (prog.is_elf && (!prog.has_interp || prog.is_go))))
		return 1;
	if (prog.is_elf) {
		if (!prog.has_interp)
			die(EXIT_CANNOT_RUN,
			    "%s is statically linked (no ELF interpreter), so it never reads LD_PRELOAD "
			    "and the shim cannot work in it; Go programs are usually built this way: "
			    "run it supervised (without --no-supervise), rebuild with cgo and dynamic "
			    "linking, or put a PROXY-aware proxy in front",
			    path);
		if (elf_read(lib, &shim) == 0 && shim.is_elf &&
		    (shim.cls != prog.cls || shim.machine != prog.machine))
			die(EXIT_CANNOT_RUN, "%s is a %d-bit %s program but %s is %d-bit %s: the dynamic "
			    "linker would not load it", path, prog.cls == ELFCLASS64 ? 64 : 32,
			    machine_name(prog.machine), lib, shim.cls == ELFCLASS64 ? 64 : 32,
			    machine_name(shim.machine));
	}
	/* The kernel sets AT_SECURE when the exec changes the user or group, or grants file
	 * capabilities; the dynamic linker and the shim then ignore the environment. */
	if ((st.st_mode & S_ISUID) && st.st_uid != geteuid())
		say("warning: %s is set-uid: it runs in secure-execution mode, where the shim stays "
		    "inert", path);
	else if ((st.st_mode & S_ISGID) && st.st_gid != getegid())
		say("warning: %s is set-gid: it runs in secure-execution mode, where the shim stays "
		    "inert", path);
	else if (getxattr(path, "security.capability", NULL, 0) > 0)
		say("warning: %s has file capabilities: it runs in secure-execution mode, where the "
		    "shim stays inert", path);
	return 0;
}

/* The supervisor: next to this program (build tree, PREFIX/bin), or in ../lib/proxyshim. */
static void find_supervisor(char *out)
{
	static const char *const rel[] = {"/" SUPERVISOR, "/../lib/proxyshim/" SUPERVISOR};
	char dir[PATH_MAX], path[PATH_MAX + 64];
	size_t i;

	self_dir(dir, sizeof(dir));
	for (i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
		snprintf(path, sizeof(path), "%s%s", dir, rel[i]);
		if (access(path, X_OK) == 0 && realpath(path, out) != NULL)
			return;
	}
	die(EXIT_CANNOT_RUN, "cannot find " SUPERVISOR " in %s or %s/../lib/proxyshim: the supervised mode "
	    "is not installed", dir, dir);
}

/* Runs COMMAND (found at path) under the supervisor, which reads the PROXYSHIM_* variables:
 * proxyshim-supervise [--no-io-uring] PATH -- ARGV... */
static void exec_supervised(const char *path, char **cmd, int no_io_uring)
{
	char sup[PATH_MAX];
	size_t n = 0, a = 1;
	char **argv;

	find_supervisor(sup);
	while (cmd[n])
		n++;
	argv = calloc(n + 5, sizeof(*argv));
	if (argv == NULL)
		die(1, "out of memory");
	argv[0] = sup;
	if (no_io_uring)
		argv[a++] = (char *)"--no-io-uring";
	argv[a++] = (char *)path;
	argv[a++] = (char *)"--";
	memcpy(argv + a, cmd, n * sizeof(*argv));
	execv(sup, argv);
	die(EXIT_CANNOT_RUN, "%s: %s", sup, strerror(errno));
}

static void set_vars(const struct opts *o)
{
	size_t k;

	for (k = 0; k < NVARS; k++)
		if (o->values[k] != NULL && setenv(shim_settings[k].name, o->values[k], 1) != 0)
			die(1, "setenv %s: %s", shim_settings[k].name, strerror(errno));
}

/* LD_PRELOAD with the library first, and any earlier copy of that same path dropped. */
static void set_preload(const char *lib)
{
	const char *old = getenv("LD_PRELOAD");
	size_t cap = strlen(lib) + (old ? strlen(old) : 0) + 2, used;
	char *val = malloc(cap);
	const char *p;

	if (val == NULL)
		die(1, "out of memory");
	used = (size_t)snprintf(val, cap, "%s", lib);
	for (p = old; p && *p;) {
		size_t n = strcspn(p, ": \t");
		if (n > 0 && !(n == strlen(lib) && strncmp(p, lib, n) == 0)) {
			val[used++] = ' ';
			memcpy(val + used, p, n);
			used += n;
			val[used] = '\0';
		}
		p += n;
		p += strspn(p, ": \t");
	}
	if (setenv("LD_PRELOAD", val, 1) != 0)
		die(1, "setenv LD_PRELOAD: %s", strerror(errno));
	free(val);
}

/* The dynamic loaders a library of this machine type may be loaded by, in the order --check
 * tries them: glibc's, then musl's (Alpine). */
#if defined(__x86_64__)
static const char *const loaders[] = {"/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-x86-64.so.2",
				      "/lib/ld-musl-x86_64.so.1", NULL};
#elif defined(__aarch64__)
static const char *const loaders[] = {"/lib/ld-linux-aarch64.so.1", "/lib/ld-musl-aarch64.so.1", NULL};
#elif defined(__i386__)
static const char *const loaders[] = {"/lib/ld-linux.so.2", "/lib/ld-musl-i386.so.1", NULL};
#else
static const char *const loaders[] = {NULL};
#endif

/* The library's own report, as a program started here would load it: the wrapper is linked
 * statically (it runs in glibc, musl and distroless images alike, and no preloaded copy of the
 * library can be in it), so it cannot dlopen() the library; it runs it instead, through this
 * image's dynamic loader (`LOADER LIBRARY`: the library's entry point, shim/preload/
 * selfcheck.c, prints "version=V" and proxyshim_settings()'s lines with the settings this
 * environment gives, or ends with the library's one-line error and exit 1), read into buf
 * (NUL-terminated); dies when the library cannot be run. */
static void library_report(const char *lib, char *buf, size_t cap)
{
	const char *loader = NULL;
	struct elf_info info;
	size_t len = 0;
	int pfd[2], st, rc;
	pid_t pid;

	rc = elf_read(lib, &info);
	if (rc < 0)
		die(1, "cannot load %s: %s", lib, strerror(-rc));
	if (!info.is_elf)
		die(1, "cannot load %s: not an ELF file", lib);
	if (info.entry == 0)
		die(1, "cannot check %s: it has no entry point, so it is not a proxyshim library of 1.0.0 "
		    "or later (--check runs the library; this proxyshim is version " PROXYSHIM_VERSION ")", lib);

	for (int i = 0; loaders[i] != NULL && loader == NULL; i++)
		if (access(loaders[i], X_OK) == 0)
			loader = loaders[i];
	if (loader == NULL) {
		char tried[256] = "";
		for (int i = 0; loaders[i] != NULL; i++)
			snprintf(tried + strlen(tried), sizeof(tried) - strlen(tried), "%s%s", i ? ", " : "", loaders[i]);
		die(1, "cannot load %s: this system has no dynamic loader (%s), so no program here can load "
		    "the library; statically linked programs run supervised", lib, tried);
	}
	if (pipe2(pfd, O_CLOEXEC) != 0)
		die(1, "pipe: %s", strerror(errno));
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		die(1, "fork: %s", strerror(errno));
	if (pid == 0) {
		char *argv[] = {(char *)loader, (char *)lib, NULL};
		if (dup2(pfd[1], 1) < 0)
			_exit(126);
		execv(loader, argv);
		fprintf(stderr, "proxyshim: cannot run %s: %s\n", loader, strerror(errno));
		_exit(126);
	}
	close(pfd[1]);
	for (;;) {
		ssize_t n = read(pfd[0], buf + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || (len += (size_t)n) >= cap - 1)
			break;
	}
	buf[len] = '\0';
	close(pfd[0]);
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			die(1, "waitpid: %s", strerror(errno));
	if (WIFEXITED(st) && WEXITSTATUS(st) == 1 && len == 0)
		exit(1); /* a bad value or file: the library said which */
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || strncmp(buf, "version=", 8) != 0) {
		if (WIFSIGNALED(st))
			die(1, "cannot load %s: %s %s ended by signal %d: not a proxyshim library of this "
			    "version?", lib, loader, lib, WTERMSIG(st));
		die(1, "cannot load %s with %s (exit %d%s)", lib, loader, WIFEXITED(st) ? WEXITSTATUS(st) : -1,
		    WIFEXITED(st) && WEXITSTATUS(st) == 0 ? ": not a proxyshim library of this version?" : "");
	}
}

/* --check: the library validates the settings as it would in a program (printing one line
 * and exiting 1 on a bad value) and reports what it froze: "version=V", then "active=yes", or
 * "active=no reason=WHY", first. Returns the exit status: 0 only when the shim would be
 * active. A library of another version (another build's wrapper and library may not agree on
 * the settings) is warned about. */
static int run_check(const char *lib)
{
	char buf[16384], *body;
	const char *err;
	size_t vlen;

	library_report(lib, buf, sizeof(buf));
	vlen = strcspn(buf + 8, "\n");
	body = buf + 8 + vlen + (buf[8 + vlen] == '\n');
	printf("library=%s\n%.*s\n%s", lib, (int)(8 + vlen), buf, body);
	if (body[0] != '\0' && body[strlen(body) - 1] != '\n')
		printf("\n");
	if (fflush(stdout) != 0)
		return 1;
	if (vlen != strlen(PROXYSHIM_VERSION) || strncmp(buf + 8, PROXYSHIM_VERSION, vlen) != 0)
		say("warning: %s is version %.*s, this proxyshim is version " PROXYSHIM_VERSION, lib, (int)vlen,
		    buf + 8);
	/* A bad config file does not stop programs (every process reads it under
	 * /etc/ld.so.preload); the library reports it as "config_file=PATH error=WHY". */
	err = strstr(body, "\nconfig_file=");
	if (err != NULL && (err = strstr(err, " error=")) != NULL) {
		err += strlen(" error=");
		say("%.*s", (int)strcspn(err, "\n"), err);
		return 1;
	}
	if (strncmp(body, "active=yes\n", 11) != 0) {
		err = strncmp(body, "active=no reason=", 17) == 0 ? body + 17 : "(no reason given)";
		say("the shim would be inactive: %.*s", (int)strcspn(err, "\n"), err);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;
	char lib[PATH_MAX], path[PATH_MAX];
	int rc, supervised = 0;

	parse_args(argc, argv, &o);
	find_library(lib);
	if (o.cmd != NULL) {
		rc = find_command(o.cmd[0], path, sizeof(path));
		if (rc < 0)
			die(rc == -ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN, "%s: %s", o.cmd[0],
			    rc == -ENOENT && strchr(o.cmd[0], '/') == NULL ? "command not found in PATH"
									 : strerror(-rc));
		supervised = check_command(o.cmd[0], path, lib, o.supervise);
	}
	set_vars(&o);
	if (o.check)
		return run_check(lib);
	if (supervised)
		exec_supervised(path, o.cmd, o.no_io_uring);
	if (o.no_io_uring && o.cmd != NULL && !o.check)
		say("warning: --no-io-uring is for the supervised mode; %s runs with LD_PRELOAD", path);
	set_preload(lib);
	execv(path, o.cmd);
	die(errno == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN, "%s: %s", path, strerror(errno));
}
