/* The settings: PROXYSHIM_* environment variables and the configuration file, parsed and
 * validated into a struct shim_config (the rows are in settings_table.h). No hooks and no
 * global state: the library's config.c holds the frozen copy, the unit tests their own. */
#ifndef SHIM_CORE_SETTINGS_H
#define SHIM_CORE_SETTINGS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "settings_table.h"

/* The rows of settings_table.h, by enum shim_setting_id. */
extern const struct shim_setting shim_settings[SHIM_NSETTINGS];

enum shim_mode { SHIM_MODE_STRICT = 0, SHIM_MODE_OPTIONAL = 1 };
enum shim_log_level { SHIM_LOG_OFF = 0, SHIM_LOG_ERROR, SHIM_LOG_WARN, SHIM_LOG_INFO, SHIM_LOG_DEBUG };

struct shim_cidr {
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t prefix;
	uint8_t addr[16]; /* network order, host bits cleared */
};

struct shim_config {
	bool active;     /* a trusted set is configured and the process is not set-uid */
	bool trust_any;  /* PROXYSHIM_TRUSTED contains '*' */
	bool all_ports;  /* PROXYSHIM_PORTS unset */
	bool defer_accept;
	bool lazy;              /* PROXYSHIM_CONSUME=lazy: the header is read on the first read */
	bool local_from_header; /* PROXYSHIM_LOCAL_ADDR=header: getsockname() gives the header's dst */
	bool keep_tlvs;         /* PROXYSHIM_KEEP_TLVS=1: TLVs kept for proxyshim_tlv() */
	bool refuse_listen;     /* the config file is bad: listen() fails, saying why */
	bool untrusted_reject;  /* PROXYSHIM_UNTRUSTED=reject: untrusted peers may not send a header */
	uint8_t mode;      /* enum shim_mode */
	uint8_t log_level; /* enum shim_log_level */
	unsigned versions; /* PP_V1 | PP_V2 */
	unsigned timeout_ms;
	unsigned lazy_grace_ms; /* lazy mode: how long accept() parks a connection without its header */
	unsigned max_parked; /* connections parked at once in the process */
	unsigned tlv_max;    /* bytes of TLVs kept per connection */
	unsigned ncidrs;
	struct shim_cidr *cidrs;
	const char *inactive_reason; /* why active is false, said once on the first listen() */
	uint64_t ports[65536 / 64];  /* bit set of covered local ports */
	char stats_path[256];        /* PROXYSHIM_STATS, or "" */
	char file_error[512];        /* why the config file was refused, or "" */
};

/* Parsers, also used by the tests: 0 or -EINVAL. */
int shim_parse_trusted(const char *s, struct shim_cidr *out, unsigned cap, unsigned *n, bool *any);
int shim_parse_ports(const char *s, uint64_t *bits);

static inline bool shim_port_covered(const struct shim_config *c, uint16_t port)
{
	return c->all_ports || (c->ports[port >> 6] >> (port & 63)) & 1u;
}

#define SHIM_FILE_MAX 16384 /* bytes */
#define SHIM_FILE_KEYS 32   /* lines with a key */

/* Where a load's values came from, kept as long as the config: the config points into it. */
struct shim_settings_src {
	const char *env[SHIM_NSETTINGS]; /* each setting's value in the environment, or NULL */
	const char *env_unknown;         /* the first PROXYSHIM_* entry that names no setting */
	const char *file_path;
	char *file; /* the file's text (malloc()ed), which the keys point into */
	struct {
		const char *value;
		unsigned id, line;
	} keys[SHIM_FILE_KEYS];
	unsigned nkeys;
	struct shim_cidr small[16]; /* a short trusted list needs no malloc() */
	struct {                    /* the environment's bad value: "invalid NAME="value": why" */
		char name[64];
		const char *value;
		char why[160];
	} err;
};

/* What a load reads besides the environment. */
struct shim_settings_io {
	const char *default_file; /* read when PROXYSHIM_CONFIG is unset */
	bool secure;              /* AT_SECURE: stay inert, read nothing */
	ssize_t (*read)(int fd, void *buf, size_t n);
	int (*close)(int fd);
};

/* Loads the settings of envp (NULL-terminated) and the file into c and s, which must be zeroed
 * (static storage is: no page is touched that a setting does not need). Returns 0, or -EINVAL when
 * the environment holds a bad value or an unknown PROXYSHIM_* name (s->err says which: the
 * caller says it and exits). A bad file is not an error here: it sets c->file_error and
 * c->refuse_listen, with c->ports the scope of the refusal. */
int shim_settings_load(struct shim_config *c, struct shim_settings_src *s, char *const *envp,
		       const struct shim_settings_io *io);
/* Frees what a load allocated (the library never does: its settings live until exit). */
void shim_settings_release(struct shim_config *c, struct shim_settings_src *s);
/* The settings as "NAME=value" lines, after an "active=" line and before a "config_file="
 * line, as snprintf() (the length it needed). */
int shim_settings_format(const struct shim_config *c, const struct shim_settings_src *s, char *buf,
			 size_t cap);

#endif
